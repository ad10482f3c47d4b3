"""Photometric 3x2pt: cosmic shear (WL), the angular clustering of galaxy counts (GCph) and
their cross-correlation, galaxy-galaxy lensing (XC), in tomographic bins, with ONE joint
Gaussian covariance over every spectrum the survey asks for.

Tracers. The survey's tracers are, in this order (recorded in the output as ``tracers``):
the N_s shear bins ``shear_1..shear_Ns``, then, for each photometric counts sample s (e.g.
``red`` and ``blue``, several samples may share the same bins), its bins
``counts_<s>_1..counts_<s>_Nb``. Every tracer a has a Limber kernel W_a(z) [1/Mpc] on the
FIXED redshift nodes of the shear machinery (see :mod:`fishcast.probes.weak_lensing`):

    shear bin i:   K_i(z) = q_i(z) - A_IA C_IA Omega_m F_IA(z)/D(z) n_i(z) H(z)/c   (WL module)
    counts bin i:  G_i(z) = b(z) n_i(z) H(z)/c

and the angular power spectrum of any two tracers is one Limber integral (flat universe,
k = (ell + 1/2)/chi; Euclid Collaboration: Blanchard et al. 2020, A&A 642, A191, "IST:F",
sec. 3.2):

    C_ab(ell) = s_a(ell) s_b(ell) Int dz c/H(z) W_a(z) W_b(z) / chi(z)^2 P_nl((ell+1/2)/chi, z)

with s_a = sqrt(L(ell)) (1 + m_i) for a shear bin (L(ell) = 1 for IST:F, ``ell_factor:
none``; (ell+2)!/((ell-2)! (ell+1/2)^4) for ``exact``, as in CCL) and s_a = 1 for counts.
So C^{GG} = L (1+m_i)(1+m_j) C, C^{gG} = sqrt(L) (1+m_j) C: the multiplicative shear bias
acts on the shear side of galaxy-galaxy lensing, and intrinsic alignments enter it through
K_j. A photo-z shift dz_i moves n_i(z) -> n_i(z - dz_i) of the shear bins and, when the
counts use the same bins (the default), the counts bins too: one dz_i acts on both sides.
Magnification bias and redshift-space distortions are NOT included (both off; the IST:F
reference forecasts neglect them too).

Galaxy bias b(z), per counts sample, three models:

* ``per_bin``: b_<s>_i multiplies the kernel of bin i (constant within the bin);
* ``stepwise`` (IST:F, eq. 131): b(z) = b_<s>_i for true z in the i-th photometric-redshift
  interval [z_i^-, z_i^+) (b_1 below the first edge, b_N above the last) and applied to
  every bin's n_j(z);
* ``power_law``: b(z) = b_<s>_amp (1 + z)^b_<s>_index, two parameters per sample.

Fiducial per-bin biases default to sqrt(1 + zbar_i), zbar_i = (z_i^- + z_i^+)/2 (IST:F).

Noise [sr]: N^{GG}_ij = delta_ij sigma_e^2 / n_i (shape noise, as in the WL module);
N^{gg}_ab = delta_ab / n_a, the shot noise of counts bin a with n_a its surface density per
steradian (different samples are disjoint: no cross shot noise); N^{gG} = 0.

Covariance. Multipoles are log-spaced bands over [min of the spectra's ell_min, max of their
ell_max] (:func:`fishcast.probes.weak_lensing.ell_bands`). A spectrum type (WL, GCph, XC)
uses the bands whose centre lies in its own [ell_min, ell_max]: cut bands drop out of the
data vector (no zero padding). In band ell the data vector is the list of UNIQUE spectra
C_ab, a <= b, of every type used in that band, and their Gaussian covariance is

    Cov[C_ab, C_cd] = (Cb_ac Cb_bd + Cb_ad Cb_bc) / ((2 ell + 1) f_sky Delta_ell),  Cb = C + N

(Knox 1995; IST:F eq. 137). With ``cross_covariance: false`` the blocks between different
spectrum types are set to zero (the "added without cross-covariance" Fisher). The Fisher
matrix is F_ab = sum_ell dC_a^T Cov_ell^-1 dC_b: one Cholesky factorization per band
(bands are independent; the covariance is built for all bands at once, no loop over
spectrum pairs), never an inverse of the whole block-diagonal matrix.

What the probe asks of the cosmology (:meth:`PhotometricProbe.requirements`): the nonlinear
P(k, z) up to the k_max each spectrum type needs at its own ell_max from the support of its
kernels (:meth:`PhotometricProbe.limber_k_max`, the estimate of
:mod:`fishcast.probes.limber_support` shared with the weak-lensing probe), and redshifts up to
where every n_i(z) has at most ``integration.z_tail`` of its weight left; the probe integrates
over those nodes only.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import ComputationError, InputError, at_key
from ..parameters import Domain, NuisanceParameter, NuisanceParameters, ParameterFamily, register
from ..redshift import TomographicBins
from . import limber_support as _support
from . import weak_lensing as _wl
from .base import Cosmology, CosmologyRequirements, Probe
from .multitracer_clustering import BIAS_PER_SHELL
from .sky import ARCMIN2_PER_SR, SkyAreaConfig

__all__ = [
    "PhotometricConfig",
    "PhotometricProbe",
    "build",
    "SPECTRA",
    "unique_pairs",
    "gaussian_covariance",
    "band_fisher",
]

#: the spectrum types, in the order of the data vector within a band
SPECTRA = ("WL", "GCph", "XC")

C_KMS = _wl.C_KMS

# the nuisance parameters of this probe, in the terms of the parameter registry. The bias of
# a sample in bin i is the registry's b_{tracer}_{shell} (the multi-tracer probe's: a linear
# bias of one tracer in one redshift slice, here the i-th tomographic bin).
#: amplitude of a power-law bias b(z) = amp (1+z)^index
BIAS_AMPLITUDE = register(ParameterFamily(
    "b_{tracer}_amp", "", r"b^{\rm {tracer}}_0", domain=Domain(lower=0.0),
    description="amplitude of the power-law bias b(z) = amp (1+z)^index of counts sample {tracer}"))
#: index of a power-law bias (any sign; an offset around its fiducial, step scale 1)
BIAS_INDEX = register(ParameterFamily(
    "b_{tracer}_index", "", r"\alpha^{\rm {tracer}}_b", step_scale=1.0, offset=True,
    description="index of the power-law bias b(z) = amp (1+z)^index of counts sample {tracer}"))
#: photo-z shift of bin i of a counts sample with its own bins: an offset around 0
COUNTS_PHOTOZ_SHIFT = register(ParameterFamily(
    "dz_{tracer}_{i}", "", r"\Delta z^{\rm {tracer}}_{{i}}", step_scale=0.01, offset=True, fiducial=0.0,
    description="photo-z shift of bin {i} of counts sample {tracer}"))


# =======================================================================================
# Configuration (the `probes.photometric` section of a survey YAML)
# =======================================================================================


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EllRangeConfig(_Model):
    """The multipole range of one spectrum type: bands whose centre lies in [min, max]."""

    min: float = Field(..., ge=2.0, description="lowest multipole used")
    max: float = Field(..., le=_wl.ELL_MAX_LIMIT, description="highest multipole used (> min; at most 100000: "
                       "beyond, the Limber spectra need P(k) past the largest k fishcast tabulates)")

    @model_validator(mode="after")
    def _order(self):
        if not self.max > self.min:
            raise ValueError(f"max ({self.max}) must exceed min ({self.min})")
        return self


class PhotometricEllConfig(_Model):
    """One grid of n_bands log-spaced bands between the smallest min and the largest max of
    the spectra used; each spectrum type keeps the bands whose centre is in its range."""

    n_bands: int = Field(..., ge=1, le=10_000, description="number of log-spaced bands over the whole range")
    WL: EllRangeConfig | None = Field(None, description="multipole range of shear x shear (needed when WL is used)")
    GCph: EllRangeConfig | None = Field(None, description="multipole range of counts x counts (needed when GCph is used)")
    XC: EllRangeConfig | None = Field(None, description="multipole range of counts x shear (needed when XC is used)")


class SourcesConfig(_Model):
    """The shear sample: the same keys as ``probes.weak_lensing`` without the sky and the
    multipoles (those are the photometric section's)."""

    n_gal: float = Field(..., gt=0.0, description="surface density of source galaxies, all bins together [arcmin^-2]")
    shape_noise: _wl.ShapeNoiseConfig = Field(..., description="shape noise sigma_e and its convention")
    nz: _wl.NzConfig = Field(..., description="parent redshift distribution")
    bins: _wl.BinsConfig = Field(..., description="tomographic bins in photometric redshift")
    photoz: _wl.PhotozConfig = Field(..., description="photometric-redshift model")
    intrinsic_alignment: _wl.IntrinsicAlignmentConfig = Field(..., description="intrinsic alignment model")
    shear_bias: bool = Field(False, description="multiplicative shear biases m_1..m_N (fiducial 0), on WL and XC")
    photoz_shift: bool = Field(
        False, description="photo-z shifts dz_1..dz_N (fiducial 0) of the shear bins, and of counts samples that use them"
    )


class CountsBiasConfig(_Model):
    """Linear galaxy bias of a counts sample (see the module docstring for the models)."""

    model: Literal["per_bin", "stepwise", "power_law"] = Field(
        ..., description="'per_bin' (b_i per bin), 'stepwise' (IST:F: b(z) = b_i in the i-th photo-z interval), "
                         "'power_law' (b(z) = amp (1+z)^index)"
    )
    values: list[float] | None = Field(
        None, description="per_bin / stepwise: fiducial b_i, one per bin (default sqrt(1 + bin centre))"
    )
    amp: float = Field(1.0, gt=0.0, description="power_law: fiducial amplitude")
    index: float = Field(0.5, description="power_law: fiducial index")

    @field_validator("values")
    @classmethod
    def _positive(cls, v):
        if v is not None and any(not (x > 0 and math.isfinite(x)) for x in v):
            raise ValueError("biases must be positive and finite")
        return v


class CountsSampleConfig(_Model):
    """One photometric galaxy sample for angular clustering. Without nz / bins / photoz it
    uses the shear sources' distribution and bins (and their photo-z shifts dz_i)."""

    name: str = Field(..., pattern=r"^[A-Za-z][A-Za-z0-9]{0,19}$",
                      description="sample name (letters and digits, starting with a letter), used in parameter names")
    n_gal: float = Field(..., gt=0.0, description="surface density of the sample, all bins together [arcmin^-2]")
    bias: CountsBiasConfig = Field(..., description="linear galaxy bias")
    nz: _wl.NzConfig | None = Field(None, description="own parent n(z) (default: the sources')")
    bins: _wl.BinsConfig | None = Field(None, description="own tomographic bins (default: the sources')")
    photoz: _wl.PhotozConfig | None = Field(None, description="own photo-z model (default: the sources')")
    photoz_shift: bool = Field(False, description="own photo-z shifts dz_<name>_i (only with own bins)")

    @model_validator(mode="after")
    def _own(self):
        own = [self.nz is not None, self.bins is not None, self.photoz is not None]
        if any(own) and not all(own):
            raise ValueError("give all of nz, bins and photoz for a sample's own bins, or none (the sources' bins)")
        if self.photoz_shift and not any(own):
            raise ValueError("photoz_shift of a sample with the sources' bins: use sources.photoz_shift (dz_i acts on both)")
        return self


class PhotometricConfig(SkyAreaConfig):
    """Photometric 3x2pt (the ``probes.photometric`` section): shear (WL), counts (GCph) and
    counts x shear (XC) with one joint Gaussian covariance; the sky area as every probe's
    (``f_sky`` or ``area_deg2``)."""

    spectra: list[Literal["WL", "GCph", "XC"]] = Field(..., min_length=1, max_length=10,
                                                       description="spectrum types used: any of WL, GCph, XC")
    cross_covariance: bool = Field(True, description="include the covariance between different spectrum types "
                                                     "(false: their Fishers add)")
    ell: PhotometricEllConfig = Field(..., description="multipole bands and the range of each spectrum type")
    ell_factor: Literal["none", "exact"] = Field("none", description="Limber prefactor L(ell) of shear: 'none' "
                                                 "(IST:F, default) or 'exact' (CCL); sqrt(L) on XC")
    sources: SourcesConfig | None = Field(None, description="the shear sample (needed for WL and XC)")
    counts: list[CountsSampleConfig] = Field(default_factory=list, max_length=20,
                                             description="photometric counts samples (needed for GCph and XC)")
    integration: _wl.IntegrationConfig = Field(default_factory=_wl.IntegrationConfig, description="fixed integration nodes")

    @model_validator(mode="after")
    def _checks(self):
        if len(set(self.spectra)) != len(self.spectra):
            raise ValueError("spectra lists a type twice")
        for s in self.spectra:
            if getattr(self.ell, s) is None:
                raise ValueError(f"ell.{s} (its multipole range) is needed: {s} is in spectra")
        if ("WL" in self.spectra or "XC" in self.spectra) and self.sources is None:
            raise ValueError("sources (the shear sample) are needed for WL and XC")
        if ("GCph" in self.spectra or "XC" in self.spectra) and not self.counts:
            raise ValueError("at least one counts sample is needed for GCph and XC")
        names = [c.name for c in self.counts]
        if len(set(names)) != len(names):
            raise ValueError("counts sample names must be different")
        for c in self.counts:
            if c.bins is None and self.sources is None:
                raise ValueError(f"counts sample {c.name!r} has no bins of its own and there are no sources")
        tops = []
        for b in [self.sources.bins if self.sources else None] + [c.bins for c in self.counts]:
            if b is not None:
                tops.append(b.z_max if isinstance(b, _wl.EquipopulatedBinsConfig) else b.edges[-1])
        if tops and not self.integration.z_max > max(tops):
            raise ValueError(f"integration.z_max ({self.integration.z_max}) must exceed the last bin edge ({max(tops)})")
        return self


# =======================================================================================
# Numerics: unique spectra, the joint covariance and the Fisher, vectorized over ell
# =======================================================================================


def unique_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (a, b), a <= b, of the unique spectra of n tracers, row by row."""
    a, b = np.triu_indices(n)
    return a, b


def gaussian_covariance(cl_total: np.ndarray, a: np.ndarray, b: np.ndarray, modes: np.ndarray) -> np.ndarray:
    """Gaussian covariance of the spectra (a_p, b_p) in every band, all bands at once:

        Cov_l[p, q] = (Cb_l[a_p, a_q] Cb_l[b_p, b_q] + Cb_l[a_p, b_q] Cb_l[b_p, a_q]) / modes_l

    cl_total: Cb = C + N, (n_ell, n, n); a, b: (n_spec,) tracer indices; modes:
    (2 ell + 1) f_sky Delta_ell, (n_ell,). Returns (n_ell, n_spec, n_spec).
    """
    cb = np.asarray(cl_total, dtype=float)
    a = np.asarray(a)
    b = np.asarray(b)
    ac = cb[:, a[:, None], a[None, :]]
    bd = cb[:, b[:, None], b[None, :]]
    ad = cb[:, a[:, None], b[None, :]]
    bc = cb[:, b[:, None], a[None, :]]
    return (ac * bd + ad * bc) / np.asarray(modes, dtype=float)[:, None, None]


def band_fisher(cov: np.ndarray, derivs: np.ndarray) -> np.ndarray:
    """F_ab = sum_l d_a,l^T Cov_l^-1 d_b,l with one Cholesky solve per band.

    cov (n_ell, n_spec, n_spec), derivs (n_par, n_ell, n_spec)."""
    w = whitening(cov)
    return whitened_fisher(w, derivs)


def whitening(cov: np.ndarray) -> np.ndarray:
    """Per band the inverse Cholesky factor W_l = L_l^-1 (Cov_l = L_l L_l^T), so that
    d^T Cov^-1 d = |W d|^2. Raises ComputationError when a band's covariance is not
    positive definite."""
    from scipy.linalg import lapack

    try:
        chol = np.linalg.cholesky(cov)  # all bands at once
    except np.linalg.LinAlgError as exc:
        raise ComputationError(f"the 3x2pt covariance of a multipole band is not positive definite: {exc}") from exc
    w = np.empty_like(chol)
    for i in range(chol.shape[0]):  # one triangular inversion per band (LAPACK dtrtri)
        w[i], info = lapack.dtrtri(chol[i], lower=1)
        if info != 0:
            raise ComputationError(f"the 3x2pt covariance of multipole band {i} is singular")
    return w


def whitened_fisher(w: np.ndarray, derivs: np.ndarray) -> np.ndarray:
    d = np.moveaxis(np.asarray(derivs, dtype=float), 0, -1)  # (n_ell, n_spec, n_par)
    y = np.matmul(w, d)  # (n_ell, n_spec, n_par)
    n_par = d.shape[-1]
    y = np.moveaxis(y, -1, 0).reshape(n_par, -1)
    f = y @ y.T
    return 0.5 * (f + f.T)


# =======================================================================================
# The probe
# =======================================================================================


class FiducialMetric:
    """Per-band whitening factors W_l (Cov_l = L_l L_l^T, W_l = L_l^-1) of the covariance of
    the spectra ``types`` at one fiducial: ``blocks`` = ((band indices, spectrum indices,
    W (n_bands, n_spec, n_spec)), ...), one block per set of bands using the same spectra."""

    __slots__ = ("types", "cross_covariance", "blocks")

    def __init__(self, types: tuple[str, ...], cross_covariance: bool, blocks: tuple):
        for _, _, w in blocks:
            w.flags.writeable = False
        object.__setattr__(self, "types", tuple(types))
        object.__setattr__(self, "cross_covariance", bool(cross_covariance))
        object.__setattr__(self, "blocks", tuple(blocks))

    def __setattr__(self, name, value):
        raise AttributeError("a FiducialMetric is immutable")

    def __reduce__(self):
        return (FiducialMetric, (self.types, self.cross_covariance, self.blocks))


class CountsSample:
    """One counts sample: its bins, density and bias model (immutable after construction)."""

    def __init__(self, *, name: str, bins: TomographicBins, n_gal: float, bias_model: str,
                 bias_values: Sequence[float] | None = None, amp: float = 1.0, index: float = 0.5,
                 shares_source_bins: bool = False, photoz_shift: bool = False):
        if bias_model not in ("per_bin", "stepwise", "power_law"):
            raise InputError(f"bias model must be per_bin, stepwise or power_law, got {bias_model!r}")
        if not n_gal > 0:
            raise InputError("n_gal of a counts sample must be positive")
        self.name = name
        self.bins = bins
        self.n_gal = float(n_gal)
        self.bias_model = bias_model
        self.shares_source_bins = bool(shares_source_bins)
        self.photoz_shift = bool(photoz_shift)
        n = bins.n_bins
        centres = 0.5 * (bins.edges[:-1] + bins.edges[1:])
        if bias_values is None:
            bias_values = np.sqrt(1.0 + centres)
        bias_values = np.asarray(bias_values, dtype=float)
        if bias_model != "power_law" and bias_values.shape != (n,):
            raise InputError(f"counts sample {name!r}: {bias_values.size} bias values for {n} bins")
        self.fiducial_bias = bias_values
        if bias_model == "power_law":
            self.bias_names = [f"b_{name}_amp", f"b_{name}_index"]
            self.bias_fiducials = [float(amp), float(index)]
        else:
            self.bias_names = [f"b_{name}_{i + 1}" for i in range(n)]
            self.bias_fiducials = [float(v) for v in bias_values]
        self.dz_names = [f"dz_{name}_{i + 1}" for i in range(n)] if photoz_shift else []
        # stepwise: which photo-z interval each true-z node falls in (fixed, never moves)
        self._step = np.clip(np.searchsorted(bins.edges, bins.z, side="right") - 1, 0, n - 1)

    @property
    def n_bins(self) -> int:
        return self.bins.n_bins

    def nuisance_parameters(self) -> list[NuisanceParameter]:
        """Typed descriptions of the sample's biases and own photo-z shifts."""
        if self.bias_model == "power_law":
            out = [BIAS_AMPLITUDE.member(self.bias_fiducials[0], tracer=self.name),
                   BIAS_INDEX.member(self.bias_fiducials[1], tracer=self.name)]
        else:
            out = [BIAS_PER_SHELL.member(v, tracer=self.name, shell=i + 1) for i, v in enumerate(self.bias_fiducials)]
        out += [COUNTS_PHOTOZ_SHIFT.member(0.0, tracer=self.name, i=i + 1) for i in range(len(self.dz_names))]
        return out

    def bias(self, p: Mapping[str, float]) -> np.ndarray:
        """b at every (bin, node): (n_bins, n_z)."""
        z = self.bins.z
        vals = np.array([p[n] for n in self.bias_names])
        if self.bias_model == "per_bin":
            return np.broadcast_to(vals[:, None], (self.n_bins, z.size))
        if self.bias_model == "stepwise":
            return np.broadcast_to(vals[self._step][None, :], (self.n_bins, z.size))
        amp, index = vals
        return np.broadcast_to((amp * (1.0 + z) ** index)[None, :], (self.n_bins, z.size))

    def density_per_sr(self) -> np.ndarray:
        """Surface density of each bin [sr^-1]."""
        return self.n_gal * self.bins.fractions * ARCMIN2_PER_SR


class PhotometricProbe(Probe):
    """Photometric 3x2pt of one survey. Build it with :func:`build`.

    shear: a :class:`~fishcast.probes.weak_lensing.WeakLensingProbe` of the sources (its
    kernels, IA, m_i, dz_i and shape noise are used; its own multipoles are not) or None;
    samples: the counts samples (:class:`CountsSample`), on the same redshift nodes;
    spectra: the types used; ell_ranges: type -> (min, max); n_bands: log-spaced bands over
    the union of the ranges; f_sky; cross_covariance; ell_factor_kind;
    k_max [1/Mpc]: the largest wavenumber asked of the cosmology (None: derived from the
    kernels, :meth:`limber_k_max`, with ``k_share``); z_tail: the nodes integrated over stop
    where every n_i(z) has at most that weight left (:meth:`requirements`; 0, the default
    here: every node; :func:`build` passes ``integration.z_tail``, 1e-5 by default).
    """

    name = "photometric"

    def __init__(self, *, shear: _wl.WeakLensingProbe | None, samples: Sequence[CountsSample],
                 spectra: Sequence[str], ell_ranges: Mapping[str, tuple[float, float]], n_bands: int,
                 f_sky: float, cross_covariance: bool = True, ell_factor_kind: str = "none",
                 k_max: float | None = None, k_share: float = _support.K_SHARE, z_tail: float = 0.0):
        spectra = tuple(s for s in SPECTRA if s in spectra)
        if not spectra:
            raise InputError("at least one of WL, GCph, XC is needed")
        if ("WL" in spectra or "XC" in spectra) and shear is None:
            raise InputError("WL and XC need the shear sources")
        if ("GCph" in spectra or "XC" in spectra) and not samples:
            raise InputError("GCph and XC need a counts sample")
        if not (0 < f_sky <= 1):
            raise InputError(f"f_sky must lie in (0, 1], got {f_sky}")
        z = shear.z if shear is not None else samples[0].bins.z
        for s in samples:
            if s.bins.z.shape != z.shape or np.any(s.bins.z != z):
                raise InputError("every tracer must use the same redshift nodes")
        self.shear = shear
        self.samples = tuple(samples)
        self.spectra = spectra
        self.cross_covariance = bool(cross_covariance)
        self.f_sky = float(f_sky)
        self.ell_factor_kind = ell_factor_kind
        self.z = z
        self.weights = shear.weights if shear is not None else samples[0].bins.weights
        lo = min(ell_ranges[s][0] for s in spectra)
        hi = max(ell_ranges[s][1] for s in spectra)
        self.ell, self.ell_edges, self.delta_ell = _wl.ell_bands(lo, hi, n_bands)
        self.ell_ranges = {s: (float(ell_ranges[s][0]), float(ell_ranges[s][1])) for s in spectra}
        self.modes = (2.0 * self.ell + 1.0) * self.f_sky * self.delta_ell
        lfac = _wl.ell_factor(self.ell, ell_factor_kind)
        # tracers
        n_src = shear.n_bins if shear is not None and ("WL" in spectra or "XC" in spectra) else 0
        self.n_shear = n_src
        names = [f"shear_{i + 1}" for i in range(n_src)]
        kinds = ["shear"] * n_src
        if "GCph" in spectra or "XC" in spectra:
            for s in self.samples:
                names += [f"counts_{s.name}_{i + 1}" for i in range(s.n_bins)]
                kinds += ["counts"] * s.n_bins
        self.tracers = tuple(names)
        self._kinds = np.array(kinds)
        self._sqrt_l = np.ones((self.ell.size, len(names)))
        self._sqrt_l[:, :n_src] = np.sqrt(lfac)[:, None]
        # unique spectra and their type; which bands each type uses
        a, b = unique_pairs(len(names))
        ka, kb = self._kinds[a], self._kinds[b]
        ptype = np.where((ka == "shear") & (kb == "shear"), "WL", np.where((ka == "counts") & (kb == "counts"), "GCph", "XC"))
        keep = np.isin(ptype, spectra)
        order = np.concatenate([np.nonzero(keep & (ptype == s))[0] for s in SPECTRA])
        self._pa, self._pb, self._ptype = a[order], b[order], ptype[order]
        self._band_uses = {s: (self.ell >= self.ell_ranges[s][0] * (1 - 1e-12))
                           & (self.ell <= self.ell_ranges[s][1] * (1 + 1e-12)) for s in spectra}
        for s, use in self._band_uses.items():
            if not use.any():
                with at_key("ell", s):
                    raise InputError(f"no multipole band centre lies in the range of {s} "
                                     f"({self.ell_ranges[s][0]:g}-{self.ell_ranges[s][1]:g}): raise ell.n_bands")
        self._noise = self._noise_matrix()
        #: number of leading nodes integrated over (every n_i(z) is negligible above them)
        self.n_eval = _support.redshift_support(self.z, self._support_nz(), z_tail)
        self.z_eval = self.z[: self.n_eval]
        self.k_max = float(k_max) if k_max is not None else self.limber_k_max(k_share)

    # --- what the probe asks of the cosmology ------------------------------------------------
    def _support_nz(self) -> np.ndarray:
        """Every n_i(z) the kernels use, on the nodes (n, n_z), each at the fiducial and, when
        its photo-z shifts are free, also moved up by DZ_MARGIN (the tails the shifts can reach)."""
        parts = []

        def add(bins: TomographicBins, shifted: bool):
            nz = bins.nz()
            if shifted:
                nz = np.maximum(nz, bins.nz(np.full(bins.n_bins, _support.DZ_MARGIN)))
            parts.append(nz)

        if self.shear is not None and (self.n_shear or any(s.shares_source_bins for s in self.samples)):
            add(self.shear.bins, self.shear.photoz_shift)
        if len(self.tracers) > self.n_shear:
            for s in self.samples:
                if not s.shares_source_bins:
                    add(s.bins, s.photoz_shift)
        return np.concatenate(parts, axis=0)

    def limber_k_max(self, share: float = _support.K_SHARE) -> float:
        """Largest wavenumber [1/Mpc] the spectra need where they are used: for each type
        (WL, GCph, XC), (ell_max + 1/2) / chi_min with ell_max the largest band centre of the
        type and chi_min the distance below which the Limber integrand of every pair of its
        kernels holds at most ``share`` of the spectrum
        (:func:`fishcast.probes.limber_support.chi_min`, P ~ k^-1.5, flat LCDM reference). The
        kernels at the fiducial: lensing efficiencies q_i of the shear bins (as the weak-lensing
        probe's estimate), b(z) n_i(z) H(z)/c of the counts bins. The largest of the types.
        (A spectrum computed beyond the multipoles of its type -- :meth:`signal` computes every
        pair at every band -- is not used, and may rest on the extrapolated P.)"""
        grid = _support.reference_grid(self.z)
        kern = {}
        if self.n_shear:
            nzf = grid.interp(self.z, self.shear.bins.nz())
            kern["shear"] = _wl.lensing_efficiency(grid.z, grid.chi, nzf, grid.omega_m, 100.0 * grid.h)
        if len(self.tracers) > self.n_shear:
            hubble_over_c = grid.e_z / grid.d_h  # H(z)/c [1/Mpc]
            rows = []
            for s in self.samples:
                fid = dict(zip(s.bias_names, s.bias_fiducials))
                nz = s.bins.nz() if not s.shares_source_bins or self.shear is None else self.shear.bins.nz()
                rows.append(grid.interp(self.z, s.bias(fid) * nz) * hubble_over_c)
            kern["counts"] = np.concatenate(rows, axis=0)
        sides = {"WL": ("shear", "shear"), "GCph": ("counts", "counts"), "XC": ("counts", "shear")}
        k = []
        for t in self.spectra:
            a, b = sides[t]
            ell_max = float(self.ell[self._band_uses[t]].max())
            k.append(_support.limber_k_max_of_pairs(ell_max, grid, kern[a], kern[b], share))
        return max(k)

    # --- interface ------------------------------------------------------------------------
    def nuisance_parameters(self) -> NuisanceParameters:
        """The shear sources' (IA, m_i, dz_i: those of the weak-lensing probe), then each
        counts sample's biases and own photo-z shifts; dz_i also when only counts use the
        sources' bins."""
        out: dict[str, NuisanceParameter] = {}
        if self.shear is not None:
            wl = self.shear.nuisance_parameters()
            if self.n_shear:
                out.update((d.name, d) for d in wl.descriptions())
            if len(self.tracers) > self.n_shear and any(s.shares_source_bins for s in self.samples):
                out.update((n, wl.description(n)) for n in self.shear._dz_names if n in wl)
        if len(self.tracers) > self.n_shear:
            for s in self.samples:
                out.update((d.name, d) for d in s.nuisance_parameters())
        return NuisanceParameters(out.values())

    def requirements(self) -> CosmologyRequirements:
        """The nonlinear P(k, z) up to k_max [1/Mpc] (given, or :meth:`limber_k_max`) and the
        background up to the last node integrated over (:attr:`z_eval`: every n_i(z), moved up
        by DZ_MARGIN where its photo-z shifts are free, has at most ``z_tail`` of its weight
        above it). CAMB's dense transfer sampling for every spectrum type: without it the Euclid
        3x2pt pessimistic C_ell move by up to 2.1e-3 and its marginalized errors by 8.1e-3
        (Omega_b, h) against the accuracy test's reference (thresholds 1e-3, 5e-3), and shear
        alone already needs it (:meth:`WeakLensingProbe.requirements`). Measured with CAMB
        2.0.5; see fishcast.cosmology, *Transfer sampling*."""
        return CosmologyRequirements(z_max=float(self.z_eval[-1]), k_max=self.k_max, nonlinear=True,
                                     transfer_high_precision=True)

    def _params(self, params: Mapping[str, float]) -> dict[str, float]:
        p = self.nuisance_parameters()
        p.update({k: float(v) for k, v in params.items() if k in p})
        return p

    def _background(self, cosmo: Cosmology) -> tuple[np.ndarray, np.ndarray]:
        """chi [Mpc] (exactly 0 at z = 0) and H [km/s/Mpc] at the nodes integrated over."""
        z = self.z_eval
        if cosmo.z_max < z[-1] - 1e-9:
            raise ComputationError(
                f"the cosmology is tabulated up to z = {cosmo.z_max:g}, the photometric probe needs z = {z[-1]:g}")
        chi = np.asarray(cosmo.chi_of(z), dtype=float).copy()
        chi[z == 0] = 0.0
        return chi, np.asarray(cosmo.hubble_of(z), dtype=float)

    def counts_nz(self, sample: CountsSample, params: Mapping[str, float]) -> np.ndarray:
        """n_i(z) of a counts sample on the nodes (photo-z shifted), (n_bins, n_z)."""
        if sample.shares_source_bins and self.shear is not None:
            return self.shear.nz(params)
        if sample.photoz_shift:
            p = self._params(params)
            return sample.bins.nz(np.array([p[n] for n in sample.dz_names]))
        return sample.bins.nz()

    def kernels(self, cosmo, params: Mapping[str, float], _bg=None) -> np.ndarray:
        """Kernels of every tracer [1/Mpc] at the nodes integrated over (:attr:`z_eval`; the
        n_i(z) are cut above them), (n_tracers, n_eval)."""
        p = self._params(params)
        chi, hub = _bg if _bg is not None else self._background(cosmo)
        n = np.asarray(chi).size
        parts = []
        if self.n_shear:
            parts.append(self.shear.kernels(cosmo, params, _bg=(chi, hub)))
        if len(self.tracers) > self.n_shear:
            for s in self.samples:
                parts.append(s.bias(p)[:, :n] * self.counts_nz(s, params)[:, :n] * (hub / C_KMS)[None, :])
        return np.concatenate(parts, axis=0)

    def signal(self, cosmo, params: Mapping[str, float]) -> np.ndarray:
        """C_ab(ell) of every pair of tracers at every band centre (cut bands included; the
        Fisher metric drops them): (n_ell, n_tracers, n_tracers), dimensionless."""
        p = self._params(params)
        chi, hub = self._background(cosmo)
        kern = self.kernels(cosmo, params, _bg=(chi, hub))
        pos = chi > 0
        z = self.z_eval
        pk = np.zeros((self.ell.size, z.size))
        k = (self.ell[:, None] + 0.5) / chi[None, pos]
        pk[:, pos] = cosmo.pk(z[None, pos], k, nonlinear=cosmo.has_nonlinear)
        # the fixed-grid weights of the nodes kept: the integrand is cut to 0 above them
        cl = _wl.limber_cl(self.ell, kern, self.weights[: self.n_eval], chi, hub, pk)
        s = self._sqrt_l.copy()
        if self.n_shear and self.shear.shear_bias:
            s[:, :self.n_shear] *= 1.0 + np.array([p[n] for n in self.shear._m_names])[None, :]
        return cl * s[:, :, None] * s[:, None, :]

    def _noise_matrix(self) -> np.ndarray:
        n = np.zeros(len(self.tracers))
        if self.n_shear:
            n[:self.n_shear] = self.shear.sigma_e**2 / self.shear.density_per_sr()
        i = self.n_shear
        if len(self.tracers) > self.n_shear:
            for s in self.samples:
                n[i:i + s.n_bins] = 1.0 / s.density_per_sr()
                i += s.n_bins
        return np.diag(n)

    def noise(self) -> np.ndarray:
        """N_ab [sr]: shape noise sigma_e^2/n_i on shear bins, shot noise 1/n_a on counts bins
        (n per steradian), zero off the diagonal. (n_tracers, n_tracers)."""
        return self._noise.copy()

    # --- the data vector and its covariance ------------------------------------------------
    def spectra_in_band(self, types: Sequence[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Groups of bands with the same set of spectra: [(band indices, spectrum indices)]."""
        types = tuple(types) if types is not None else self.spectra
        none = np.zeros(self.ell.size, dtype=bool)
        sig = np.stack([self._band_uses.get(t, none) & (t in types) for t in SPECTRA])  # (3, n_ell)
        groups = []
        for key in np.unique(sig.T, axis=0):
            if not key.any():
                continue
            bands = np.nonzero((sig.T == key).all(axis=1))[0]
            active = [t for t, on in zip(SPECTRA, key) if on]
            spec = np.nonzero(np.isin(self._ptype, active))[0]
            groups.append((bands, spec))
        return groups

    def covariance(self, fiducial_signal: np.ndarray, bands: np.ndarray, spec: np.ndarray,
                   cross_covariance: bool | None = None) -> np.ndarray:
        """Joint Gaussian covariance of the spectra ``spec`` in the bands ``bands``,
        (n_bands, n_spec, n_spec); blocks between types are zero without cross-covariance."""
        cross = self.cross_covariance if cross_covariance is None else cross_covariance
        cb = np.asarray(fiducial_signal, dtype=float)[bands] + self._noise[None, :, :]
        cov = gaussian_covariance(cb, self._pa[spec], self._pb[spec], self.modes[bands])
        if not cross:
            t = self._ptype[spec]
            cov = cov * (t[:, None] == t[None, :])[None, :, :]
        return cov

    def data_vector(self, signal: np.ndarray, types: Sequence[str] | None = None) -> np.ndarray:
        """The flat data vector: band by band, the unique spectra used there (WL, GCph, XC)."""
        sig = np.asarray(signal)
        lead = sig.shape[:-3]
        parts = []
        for bands, spec in self.spectra_in_band(types):
            parts.append(sig[..., bands[:, None], self._pa[spec][None, :], self._pb[spec][None, :]].reshape(lead + (-1,)))
        return np.concatenate(parts, axis=-1)

    def fiducial_metric(self, fiducial_signal: np.ndarray, types: Sequence[str] | None = None,
                        cross_covariance: bool | None = None) -> "FiducialMetric":
        """The per-band whitening factors of the covariance at the fiducial (what every
        Fisher product with this fiducial needs; built once, immutable)."""
        types = tuple(t for t in SPECTRA if t in (types if types is not None else self.spectra))
        cross = self.cross_covariance if cross_covariance is None else bool(cross_covariance)
        fid = np.asarray(fiducial_signal, dtype=float)
        blocks = tuple((bands, spec, whitening(self.covariance(fid, bands, spec, cross)))
                       for bands, spec in self.spectra_in_band(types))
        return FiducialMetric(types=types, cross_covariance=cross, blocks=blocks)

    def fiducial_context(self, cosmo: Cosmology, params: Mapping[str, float]) -> "FiducialMetric":
        """The fiducial metric of the survey's spectra at ``cosmo``/``params``."""
        return self.fiducial_metric(self.signal(cosmo, params))

    def fisher(self, fiducial_signal: np.ndarray, derivs: np.ndarray, types: Sequence[str] | None = None,
               cross_covariance: bool | None = None, context: "FiducialMetric | None" = None) -> np.ndarray:
        """F_ab = sum_bands dC_a^T Cov^-1 dC_b over the spectra of ``types`` (default: the
        survey's), with or without the covariance between types (default: the survey's).
        ``context``: :meth:`fiducial_metric` of this fiducial for these types (else made here:
        one Cholesky factorization per band)."""
        derivs = np.asarray(derivs, dtype=float)
        if derivs.ndim != 4 or derivs.shape[1:] != (self.ell.size, len(self.tracers), len(self.tracers)):
            raise InputError(f"derivatives must have shape (n_par, {self.ell.size}, {len(self.tracers)}, "
                             f"{len(self.tracers)}), got {derivs.shape}")
        want = tuple(t for t in SPECTRA if t in (types if types is not None else self.spectra))
        cross = self.cross_covariance if cross_covariance is None else bool(cross_covariance)
        metric = context
        if metric is None or metric.types != want or metric.cross_covariance != cross:
            metric = self.fiducial_metric(fiducial_signal, want, cross)
        f = np.zeros((derivs.shape[0], derivs.shape[0]))
        for bands, spec, w in metric.blocks:
            d = derivs[:, bands[:, None], self._pa[spec][None, :], self._pb[spec][None, :]]
            f += whitened_fisher(w, d)
        return f

    def gram(self, fiducial_signal: np.ndarray, derivs: np.ndarray, context: "FiducialMetric | None" = None) -> np.ndarray:
        """The joint Fisher of the survey's spectra (see :meth:`fisher`)."""
        return self.fisher(fiducial_signal, derivs, context=context)

    def fisher_comparison(self, fiducial_signal: np.ndarray, derivs: np.ndarray,
                          context: "FiducialMetric | None" = None) -> dict[str, np.ndarray]:
        """Each spectrum type alone, their sum ("added without cross-covariance") and the
        joint Fisher: name -> (n_par, n_par)."""
        out = {t: self.fisher(fiducial_signal, derivs, types=(t,)) for t in self.spectra}
        out["added_without_cross_covariance"] = sum(out[t] for t in self.spectra)
        out["joint"] = self.fisher(fiducial_signal, derivs, context=context)
        return out

    def reports(self, cosmo: Cosmology, params: Mapping[str, float], fiducial_signal: np.ndarray,
                derivs: np.ndarray, parameter_names: Sequence[str],
                context: "FiducialMetric | None" = None) -> dict[str, tuple[np.ndarray, str]]:
        """Datasets under /fisher/probes/photometric/comparison/: <type>/matrix for each
        spectrum type alone, added_without_cross_covariance/matrix, joint/matrix, and the
        parameter names and spectra."""
        names = parameter_names
        rep: dict[str, tuple[np.ndarray, str]] = {
            "comparison/parameter_names": (np.array(list(names), dtype="S"), ""),
            "comparison/spectra": (np.array(list(self.spectra), dtype="S"), ""),
        }
        for label, mat in self.fisher_comparison(fiducial_signal, derivs, context).items():
            rep[f"comparison/{label}/matrix"] = (mat, "1/(unit_i*unit_j)")  # per parameter: units_rule
        return rep

    @property
    def covariance_note(self) -> str:
        inc = "included" if self.cross_covariance else "set to zero"
        return (f"photometric spectra {', '.join(self.spectra)}: one joint Gaussian covariance, "
                f"cross-covariance between spectrum types {inc}")

    def products(self, cosmo, params: Mapping[str, float]) -> dict[str, tuple[np.ndarray, str]]:
        out = {
            "ell": (self.ell, ""),
            "ell_edges": (self.ell_edges, ""),
            "delta_ell": (self.delta_ell, ""),
            "cl": (self.signal(cosmo, params), ""),
            "noise": (self.noise(), "sr"),
            "tracers": (np.array(self.tracers, dtype="S"), ""),
            "spectra": (np.array(self.spectra, dtype="S"), ""),
            "cross_covariance": (np.array(self.cross_covariance), ""),
            "spectrum_pairs": (np.stack([self._pa, self._pb], axis=1), ""),
            "spectrum_types": (np.array(self._ptype, dtype="S"), ""),
            "z": (self.z, ""),
        }
        for t in self.spectra:
            out[f"bands_used/{t}"] = (self._band_uses[t], "")
        if self.n_shear:
            out["nz_shear"] = (self.shear.nz(params), "")
        for s in self.samples if len(self.tracers) > self.n_shear else ():
            out[f"nz_counts_{s.name}"] = (self.counts_nz(s, params), "")
            out[f"n_gal_bin_{s.name}"] = (s.n_gal * s.bins.fractions, "arcmin^-2")
        return out


# =======================================================================================
# Construction from the YAML section
# =======================================================================================


def _make_bins(nz, bins, photoz, z: np.ndarray, survey_dir: pathlib.Path) -> TomographicBins:
    return _wl.tomographic_bins(nz, bins, photoz, z, survey_dir)


def build(config: PhotometricConfig, survey_dir: pathlib.Path) -> PhotometricProbe:
    """Make the probe from its validated configuration; relative file paths are resolved
    against ``survey_dir``. Raises InputError (FileFormatError for unreadable tables)."""
    shear = None
    integ = config.integration
    if config.sources is not None:
        src = config.sources
        wl_cfg = _wl.WeakLensingConfig(
            f_sky=config.sky_fraction, ell={"min": 10, "max": 20, "n_bands": 1}, ell_factor=config.ell_factor,
            n_gal=src.n_gal, shape_noise=src.shape_noise, nz=src.nz, bins=src.bins, photoz=src.photoz,
            intrinsic_alignment=src.intrinsic_alignment, shear_bias=src.shear_bias, photoz_shift=src.photoz_shift,
            # every node, as the 3x2pt probe itself integrates (no cut of the n_i(z) tails)
            integration=integ.model_copy(update={"z_tail": 0.0}),
        )
        with at_key("sources"):
            shear = _wl.build(wl_cfg, survey_dir)
    z = np.linspace(0.0, integ.z_max, integ.n_z)
    samples = []
    for c in config.counts:
        own = c.bins is not None
        if own:
            with at_key("counts", len(samples)):
                bins = _make_bins(c.nz, c.bins, c.photoz, z, survey_dir)
        else:
            bins = shear.bins
        b = c.bias
        with at_key("counts", len(samples), "bias"):
            samples.append(CountsSample(name=c.name, bins=bins, n_gal=c.n_gal, bias_model=b.model, bias_values=b.values,
                                        amp=b.amp, index=b.index, shares_source_bins=not own, photoz_shift=c.photoz_shift))
    ranges = {s: (getattr(config.ell, s).min, getattr(config.ell, s).max) for s in config.spectra}
    return PhotometricProbe(shear=shear, samples=samples, spectra=config.spectra, ell_ranges=ranges,
                            n_bands=config.ell.n_bands, f_sky=config.sky_fraction,
                            cross_covariance=config.cross_covariance, ell_factor_kind=config.ell_factor,
                            # what the probe asks of the cosmology: integration.k_max, or derived from
                            # the kernels (k_share); the nodes integrated over (z_tail)
                            k_max=integ.k_max, k_share=integ.k_share, z_tail=integ.z_tail)


# =======================================================================================
# What the cross-covariance is worth: the comparison `fishcast show` prints
# =======================================================================================


def spectra_comparison(names: Sequence[str], matrices: Mapping[str, np.ndarray], prior: np.ndarray | None = None,
                       params: Sequence[str] | None = None) -> dict[str, object]:
    """Marginalized 1-sigma errors on ``params`` and FoM(w0, wa) from each matrix of
    ``matrices`` (label -> (p, p): each spectrum type alone, their sum without
    cross-covariance, the joint one), the survey's prior matrix added to each.

    A parameter a matrix does not constrain at all (zero diagonal: a galaxy bias for WL
    alone) is dropped before inversion; where the rest is degenerate the errors are NaN.
    Returns ``{"params", "columns", "sigma" (n_params, n_columns), "fom" (n_columns,)}``.
    """
    from ..errors import DegenerateFisherError
    from ..fisher import FisherMatrix

    names = [str(n) for n in names]
    params = list(params) if params else names
    cols = list(matrices)
    sigma = np.full((len(params), len(cols)), np.nan)
    fom = np.full(len(cols), np.nan)
    for j, label in enumerate(cols):
        F = np.asarray(matrices[label], dtype=float)
        if prior is not None:
            F = F + np.asarray(prior, dtype=float)
        keep = [i for i in range(len(names)) if F[i, i] > 0]
        try:
            fm = FisherMatrix(F[np.ix_(keep, keep)], [names[i] for i in keep])
            s = fm.marginalized_sigma()
        except (DegenerateFisherError, InputError):
            continue
        for r, p in enumerate(params):
            if p in fm.names:
                sigma[r, j] = s[fm.index(p)]
        if "w0" in fm.names and "wa" in fm.names:
            try:
                fom[j] = fm.figure_of_merit()
            except (DegenerateFisherError, InputError):
                pass
    return {"params": params, "columns": cols, "sigma": sigma, "fom": fom}
