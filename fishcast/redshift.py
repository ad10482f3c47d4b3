"""Source redshift distributions for tomographic weak lensing.

One concept: how many source galaxies lie at which *true* redshift z, per tomographic bin.

* A **parent** distribution n(z) of the whole source sample (:class:`SmailNz`, analytic;
  :class:`TabulatedNz`, read from a two-column text file). Its normalization is arbitrary.
* A **photometric-redshift model** p(z_p | z) (:class:`PhotoZModel`): the Euclid IST:F sum of
  two Gaussians (a core and a population of outliers; Euclid Collaboration: Blanchard et al.
  2020, A&A 642, A191, eq. 115). The single-Gaussian model of the LSST DESC SRD (scatter
  0.05 (1+z), arXiv:1809.01669) is the special case ``f_out = 0``.
* **Tomographic bins** defined by edges in *photometric* redshift (equi-populated quantiles
  of the parent, or given edges). The true-redshift distribution of bin i is

      n_i(z) = n(z) Int_{z_p,i}^{z_p,i+1} dz_p p(z_p | z) / norm_i

  evaluated on a FIXED grid of true redshifts and normalized to unit integral on that grid
  (:class:`TomographicBins`). A photo-z shift n_i(z) -> n_i(z - dz_i) is evaluated from the
  same analytic form at the shifted redshift (interpolation of a table is a cubic), so that
  the result is a smooth function of dz_i, and renormalized.

Conventions: redshifts are dimensionless; n(z) and n_i(z) are densities per unit redshift.
The integrals on the fixed grid use Simpson weights (:func:`integration_weights`).
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass, field

import numpy as np
from scipy.integrate import simpson
from scipy.interpolate import PchipInterpolator
from scipy.optimize import brentq
from scipy.special import erf, gammainc, gammaincinv

from .errors import FileFormatError, InputError

__all__ = [
    "SmailNz",
    "TabulatedNz",
    "PhotoZModel",
    "TomographicBins",
    "equipopulated_edges",
    "integration_weights",
    "read_table",
]


def integration_weights(z: np.ndarray) -> np.ndarray:
    """Quadrature weights w such that Int f(z) dz ~= sum_a w_a f(z_a) on the nodes ``z``.

    Composite Simpson rule (scipy's, including its correction for an even number of nodes);
    the weights depend only on the nodes, so integrals on fixed nodes are smooth functions of
    the integrand.
    """
    z = np.asarray(z, dtype=float)
    if z.ndim != 1 or z.size < 3 or np.any(np.diff(z) <= 0):
        raise InputError("integration nodes must be a strictly increasing 1-d array of >= 3 points")
    return simpson(np.eye(z.size), x=z, axis=-1)


# ---------------------------------------------------------------------------------------
# Parent distributions
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmailNz:
    """Smail-type parent distribution n(z) = (z/z0)^alpha exp[-(z/z0)^beta] (unnormalized).

    Smail et al. (1994); Euclid IST:F uses alpha = 2, beta = 3/2, z0 = 0.9/sqrt(2); the LSST
    DESC SRD (Y10) alpha = 2, beta = 0.68, z0 = 0.11.

    z0 > 0, alpha > -1 (integrable at z = 0), beta > 0. The cumulative distribution has the
    closed form P((alpha+1)/beta, (z/z0)^beta), P the regularized lower incomplete gamma
    function, which makes equi-populated quantiles exact.
    """

    z0: float
    alpha: float
    beta: float

    def __post_init__(self):
        if not (self.z0 > 0 and self.alpha > -1 and self.beta > 0):
            raise InputError(
                f"Smail n(z) needs z0 > 0, alpha > -1, beta > 0 (got z0={self.z0}, alpha={self.alpha}, beta={self.beta})"
            )

    def __call__(self, z) -> np.ndarray:
        """n(z), per unit redshift, unnormalized (zero for z <= 0)."""
        z = np.asarray(z, dtype=float)
        x = np.clip(z, 0.0, None) / self.z0
        with np.errstate(divide="ignore", invalid="ignore"):
            out = x**self.alpha * np.exp(-(x**self.beta))
        return np.where(z > 0, out, 0.0)

    def cdf(self, z) -> np.ndarray:
        """Fraction of the parent sample below z (0 at z = 0, 1 at z = infinity)."""
        x = np.clip(np.asarray(z, dtype=float), 0.0, None) / self.z0
        return gammainc((self.alpha + 1.0) / self.beta, x**self.beta)

    def quantile(self, u) -> np.ndarray:
        """Inverse of :meth:`cdf`: the redshift below which a fraction u of the sample lies."""
        s = (self.alpha + 1.0) / self.beta
        return self.z0 * gammaincinv(s, np.asarray(u, dtype=float)) ** (1.0 / self.beta)


def read_table(path: str | pathlib.Path, what: str = "table") -> tuple[np.ndarray, np.ndarray]:
    """Read a two-column text file (x, y); '#' starts a comment.

    Raises :class:`~fishcast.errors.FileFormatError` naming the file when it is missing,
    unreadable, not two numeric columns, has fewer than 4 rows, non-finite values, or an x
    column that is not strictly increasing.
    """
    from .io.reading import read_text

    path = pathlib.Path(path)
    text = read_text(path, what)  # regular, capped, UTF-8 without control characters
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        parts = s.replace(",", " ").split()
        if len(parts) != 2:
            raise FileFormatError(f"{path}:{lineno}: the {what} must have two columns, found {len(parts)}")
        try:
            rows.append((float(parts[0]), float(parts[1])))
        except ValueError:
            raise FileFormatError(f"{path}:{lineno}: not a number in the {what}: {s!r}") from None
    if len(rows) < 4:
        raise FileFormatError(f"{path}: the {what} needs at least 4 rows of two numbers, found {len(rows)}")
    arr = np.array(rows)
    if not np.all(np.isfinite(arr)):
        raise FileFormatError(f"{path}: the {what} contains non-finite values")
    if np.any(np.diff(arr[:, 0]) <= 0):
        raise FileFormatError(f"{path}: the first column of the {what} must be strictly increasing")
    return arr[:, 0].copy(), arr[:, 1].copy()


@dataclass(frozen=True, eq=False)
class TabulatedNz:
    """Parent n(z) from a table (z_k, n_k): monotone cubic (PCHIP) interpolation, which stays
    non-negative and is continuously differentiable; zero outside [z_0, z_last].

    The normalization of the table is arbitrary. ``source`` names the file in messages.
    """

    z: np.ndarray
    n: np.ndarray
    source: str = "<array>"
    _interp: PchipInterpolator = field(init=False, repr=False)
    _cum: PchipInterpolator = field(init=False, repr=False)
    _total: float = field(init=False, repr=False)

    def __post_init__(self):
        z = np.asarray(self.z, dtype=float)
        n = np.asarray(self.n, dtype=float)
        if z.ndim != 1 or z.shape != n.shape or z.size < 4:
            raise FileFormatError(f"{self.source}: n(z) table needs two columns of equal length >= 4")
        if np.any(np.diff(z) <= 0):
            raise FileFormatError(f"{self.source}: the z column of the n(z) table must be strictly increasing")
        if z[0] < 0:
            raise FileFormatError(f"{self.source}: the n(z) table has negative redshifts")
        if np.any(n < 0) or not np.all(np.isfinite(n)):
            raise FileFormatError(f"{self.source}: n(z) must be finite and non-negative")
        interp = PchipInterpolator(z, n, extrapolate=False)
        cum = interp.antiderivative()
        total = float(cum(z[-1]))
        if not total > 0:
            raise FileFormatError(f"{self.source}: n(z) integrates to zero")
        object.__setattr__(self, "z", z)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "_interp", interp)
        object.__setattr__(self, "_cum", cum)
        object.__setattr__(self, "_total", total)

    @classmethod
    def from_file(cls, path: str | pathlib.Path) -> "TabulatedNz":
        """Read a two-column text file ``z n(z)`` (see :func:`read_table`)."""
        z, n = read_table(path, what="n(z) table")
        return cls(z, n, source=str(path))

    def __call__(self, z) -> np.ndarray:
        """n(z), per unit redshift, in the units of the table; zero outside the table."""
        out = self._interp(np.asarray(z, dtype=float))
        return np.nan_to_num(out, nan=0.0)

    def cdf(self, z) -> np.ndarray:
        """Fraction of the parent sample below z."""
        zc = np.clip(np.asarray(z, dtype=float), self.z[0], self.z[-1])
        return np.asarray(self._cum(zc)) / self._total

    def quantile(self, u) -> np.ndarray:
        """Inverse of :meth:`cdf` (root finding on the exact integral of the interpolant)."""
        u = np.atleast_1d(np.asarray(u, dtype=float))
        out = np.empty_like(u)
        for i, ui in enumerate(u.ravel()):  # a handful of bin edges
            if ui <= 0:
                out.flat[i] = self.z[0]
            elif ui >= 1:
                out.flat[i] = self.z[-1]
            else:
                out.flat[i] = brentq(lambda x: float(self.cdf(x)) - ui, self.z[0], self.z[-1], xtol=1e-13, rtol=1e-13)
        return out


# ---------------------------------------------------------------------------------------
# Photometric redshifts
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhotoZModel:
    """Per-galaxy photometric-redshift distribution p(z_p | z) (Euclid IST:F, eq. 115):

        p(z_p | z) = (1 - f_out) / (sqrt(2 pi) sigma_b (1+z)) exp{-1/2 [(z - c_b z_p - z_b) / (sigma_b (1+z))]^2}
                   +      f_out / (sqrt(2 pi) sigma_o (1+z)) exp{-1/2 [(z - c_o z_p - z_o) / (sigma_o (1+z))]^2}

    Core: multiplicative bias c_b, offset z_b, scatter sigma_b; outliers: c_o, z_o, sigma_o
    and their fraction f_out. IST:F: c_b = 1, z_b = 0, sigma_b = 0.05, c_o = 1, z_o = 0.1,
    sigma_o = 0.05, f_out = 0.1. With f_out = 0 it is a single Gaussian (LSST DESC SRD:
    sigma_b = 0.05). Note that, as written, Int dz_p p(z_p|z) = (1 - f_out)/c_b + f_out/c_o
    (1 for c = 1).
    """

    sigma_b: float
    c_b: float = 1.0
    z_b: float = 0.0
    f_out: float = 0.0
    c_o: float = 1.0
    z_o: float = 0.0
    sigma_o: float = 0.05

    def __post_init__(self):
        if not (self.sigma_b > 0 and self.c_b > 0 and self.sigma_o > 0 and self.c_o > 0 and 0 <= self.f_out < 1):
            raise InputError("photo-z model needs sigma_b, c_b, sigma_o, c_o > 0 and 0 <= f_out < 1")

    def pdf(self, z_p, z) -> np.ndarray:
        """p(z_p | z) [per unit z_p]; z_p and z broadcast together."""
        z_p = np.asarray(z_p, dtype=float)
        z = np.asarray(z, dtype=float)

        def gauss(c, z0, s):
            w = s * (1.0 + z)
            return np.exp(-0.5 * ((z - c * z_p - z0) / w) ** 2) / (math.sqrt(2 * math.pi) * w)

        return (1 - self.f_out) * gauss(self.c_b, self.z_b, self.sigma_b) + self.f_out * gauss(self.c_o, self.z_o, self.sigma_o)

    def bin_probability(self, z, lo, hi) -> np.ndarray:
        """Int_lo^hi dz_p p(z_p | z): the probability that a galaxy at true redshift z is put
        in the photometric bin [lo, hi). Analytic (error functions):

            Int_lo^hi dz_p G = 1/(2c) [erf((z - c lo - z0)/(sqrt2 s(1+z))) - erf((z - c hi - z0)/(sqrt2 s(1+z)))]

        z, lo, hi broadcast together.
        """
        z = np.asarray(z, dtype=float)
        lo = np.asarray(lo, dtype=float)
        hi = np.asarray(hi, dtype=float)

        def part(c, z0, s):
            w = math.sqrt(2.0) * s * (1.0 + z)
            return 0.5 / c * (erf((z - c * lo - z0) / w) - erf((z - c * hi - z0) / w))

        out = (1 - self.f_out) * part(self.c_b, self.z_b, self.sigma_b)
        if self.f_out > 0:
            out = out + self.f_out * part(self.c_o, self.z_o, self.sigma_o)
        return out


# ---------------------------------------------------------------------------------------
# Tomographic bins
# ---------------------------------------------------------------------------------------


def equipopulated_edges(parent, n_bins: int, z_min: float, z_max: float) -> np.ndarray:
    """Bin edges (n_bins + 1,) that split the parent sample between z_min and z_max into
    n_bins bins of equal counts: the quantiles of the parent n(z) restricted to
    [z_min, z_max]. The parent stands for the distribution of photometric redshifts here
    (the IST:F convention), so every bin holds exactly 1/n_bins of the sample.
    """
    if n_bins < 1 or not (0 <= z_min < z_max):
        raise InputError(f"equi-populated bins need n_bins >= 1 and 0 <= z_min < z_max (got {n_bins}, {z_min}, {z_max})")
    f_lo, f_hi = float(parent.cdf(z_min)), float(parent.cdf(z_max))
    if not f_hi > f_lo:
        raise InputError(f"the parent n(z) has no galaxies between z_min={z_min} and z_max={z_max}")
    u = f_lo + (f_hi - f_lo) * np.arange(n_bins + 1) / n_bins
    edges = np.asarray(parent.quantile(u), dtype=float).ravel()
    edges[0], edges[-1] = z_min, z_max
    return edges


@dataclass(frozen=True, eq=False)
class TomographicBins:
    """Source bins: parent n(z), photometric-bin edges, photo-z model and the FIXED grid of
    true redshifts on which n_i(z) is tabulated.

    parent: :class:`SmailNz` or :class:`TabulatedNz` (callable, with ``cdf``).
    edges: (n_bins + 1,) edges in photometric redshift, increasing.
    photoz: :class:`PhotoZModel`.
    z: (n_z,) true-redshift nodes, increasing, starting at 0 is fine. They never move.
    equipopulated: whether the edges are equi-populated quantiles (then every bin holds
        exactly 1/n_bins of the galaxies, :attr:`fractions`).
    """

    parent: object
    edges: np.ndarray
    photoz: PhotoZModel
    z: np.ndarray
    equipopulated: bool = False
    _w: np.ndarray = field(init=False, repr=False)
    _nz0: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        edges = np.asarray(self.edges, dtype=float)
        z = np.asarray(self.z, dtype=float)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0) or edges[0] < 0:
            raise InputError("bin edges must be >= 0 and strictly increasing (at least two)")
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "z", z)
        object.__setattr__(self, "_w", integration_weights(z))
        object.__setattr__(self, "_nz0", self._normalized(np.zeros(self.n_bins)))

    @property
    def n_bins(self) -> int:
        return self.edges.size - 1

    def unnormalized(self, z) -> np.ndarray:
        """n(z) Int_bin_i dz_p p(z_p|z) at true redshifts z (broadcast as (n_bins, *z.shape))."""
        z = np.asarray(z, dtype=float)
        lo = self.edges[:-1].reshape((-1,) + (1,) * z.ndim)
        hi = self.edges[1:].reshape((-1,) + (1,) * z.ndim)
        return self.parent(z)[None, ...] * self.photoz.bin_probability(z[None, ...], lo, hi)

    def _normalized(self, dz: np.ndarray) -> np.ndarray:
        shifted = self.z[None, :] - np.asarray(dz, dtype=float)[:, None]  # (n_bins, n_z)
        lo = self.edges[:-1, None]
        hi = self.edges[1:, None]
        n = self.parent(shifted) * self.photoz.bin_probability(shifted, lo, hi)
        norm = n @ self._w
        if np.any(norm <= 0):
            bad = [i + 1 for i in np.nonzero(norm <= 0)[0]]
            raise InputError(f"tomographic bin(s) {bad} contain no galaxies on the redshift grid")
        return n / norm[:, None]

    def nz(self, dz=None) -> np.ndarray:
        """n_i(z - dz_i) on the fixed grid, each normalized to unit integral: (n_bins, n_z).

        dz: per-bin photo-z shifts (None or zeros: the unshifted distributions). A positive
        dz_i moves bin i to higher redshift. The shifted distribution is recomputed from its
        analytic form (parent interpolant times the erf bin probability) at z - dz_i, and
        renormalized on the grid.
        """
        if dz is None:
            return self._nz0.copy()
        dz = np.asarray(dz, dtype=float)
        if dz.shape != (self.n_bins,):
            raise InputError(f"photo-z shifts must have shape ({self.n_bins},), got {dz.shape}")
        if not np.any(dz):
            return self._nz0.copy()
        return self._normalized(dz)

    @property
    def weights(self) -> np.ndarray:
        """Quadrature weights on the grid (Simpson): Int f dz = weights @ f."""
        return self._w.copy()

    @property
    def fractions(self) -> np.ndarray:
        """Fraction of the tomographic sample in each bin (sums to 1).

        The parent n(z) stands for the distribution of photometric redshifts when counting
        galaxies per bin (IST:F convention): fraction_i = Int_{bin i} n dz_p /
        Int_{z_p,min}^{z_p,max} n dz_p. Equi-populated bins: exactly 1/n_bins.
        """
        if self.equipopulated:
            return np.full(self.n_bins, 1.0 / self.n_bins)
        c = np.asarray(self.parent.cdf(self.edges), dtype=float)
        counts = np.diff(c)
        if np.any(counts <= 0):
            bad = [i + 1 for i in np.nonzero(counts <= 0)[0]]
            raise InputError(f"tomographic bin(s) {bad} contain no galaxies of the parent n(z)")
        return counts / counts.sum()
