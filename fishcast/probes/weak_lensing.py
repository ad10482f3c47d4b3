"""Tomographic cosmic shear: Limber C_ell of N source bins, with intrinsic alignments,
multiplicative shear bias and photo-z shifts, and its Knox Gaussian Fisher metric.

Physics (flat universe, Limber with k = (ell + 1/2)/chi; see ../shared/notes/physics.md, and
Euclid Collaboration: Blanchard et al. 2020, A&A 642, A191 "IST:F", sec. 3.2):

    C_ij(ell) = L(ell) (1 + m_i)(1 + m_j) Int dz c/H(z) K_i(z) K_j(z) / chi(z)^2 P_nl((ell+1/2)/chi, z)

    K_i(z)   = q_i(z) - A_IA C_IA Omega_m F_IA(z) / D(z) * n_i(z) H(z)/c              [1/Mpc]
    q_i(z)   = 3/2 Omega_m (H0/c)^2 chi (1+z) Int_z^inf dz' n_i(z') (chi(z') - chi)/chi(z')
    F_IA(z)  = (1+z)^eta_IA (<L>(z)/L*(z))^beta_IA

The extended NLA model of IST:F (P_dI = -A_IA C_IA Omega_m F_IA/D P_dd,
P_II = (A_IA C_IA Omega_m F_IA/D)^2 P_dd) factorizes, so C = C_GG + C_GI + C_IG + C_II is one
integral over the combined kernel K_i. n_i(z) is the normalized distribution of bin i per
unit redshift (photo-z shifted: n_i(z - dz_i)); chi in Mpc, H in km/s/Mpc, c in km/s,
P in Mpc^3, so C_ell is dimensionless. D(0) = 1. L(ell) = 1 (``ell_factor: none``, IST:F) or
(ell+2)!/((ell-2)! (ell+1/2)^4) (``exact``, as in CCL).

All integrals run on a FIXED grid of redshift nodes with fixed quadrature weights (Simpson
for the outer integral, cumulative Simpson for q_i): the nodes never move with the
parameters, so the data vector is a smooth function of them (see derivatives.md). The node
z = 0 (chi = 0) contributes nothing (the integrand vanishes there as P(k -> inf) -> 0).

Covariance (Knox): Gaussian band powers of width Delta_ell around the band centre ell,
Cov[C_ij, C_kl] = (Cb_ik Cb_jl + Cb_il Cb_jk) / ((2 ell + 1) f_sky Delta_ell), Cb = C + N,
N_ij = delta_ij sigma_e^2 / n_i; Fisher metric

    F_ab = sum_ell (2 ell + 1) f_sky Delta_ell / 2 Tr[Cb^-1 dC_a Cb^-1 dC_b].
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Annotated, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy.integrate import cumulative_simpson

from ..constants import C_KMS
from ..errors import ComputationError, FileFormatError, InputError, at_key
from ..parameters import Domain, NuisanceParameter, NuisanceParameters, ParameterFamily, register
from ..redshift import (
    PhotoZModel,
    SmailNz,
    TabulatedNz,
    TomographicBins,
    equipopulated_edges,
    read_table,
)
from .base import Cosmology, CosmologyRequirements, Probe
# what the probe asks of the cosmology (the kernels' support): the estimates shared with the
# 3x2pt probe, re-exported here under their historical names
from .limber_support import (
    DZ_MARGIN,
    K_SHARE,
    P_SLOPE,
    REF_H,
    REF_OMEGA_M,
    Z_TAIL,
    limber_k_max_of_pairs,
    redshift_support,
    reference_grid,
)
from .sky import ARCMIN2_PER_SR, FULL_SKY_DEG2, SkyAreaConfig, per_arcmin2_to_per_sr

__all__ = [
    "WeakLensingConfig",
    "WeakLensingProbe",
    "build",
    "make_bins",
    "read_luminosity_ratio",
    "ell_bands",
    "ell_factor",
    "lensing_efficiency",
    "limber_cl",
    "knox_fisher",
    "C_KMS",
    "ARCMIN2_PER_SR",
    "FULL_SKY_DEG2",
]


#: default fiducial values of the nuisance parameters (Euclid IST:F, Blanchard et al. 2020)
IA_DEFAULTS = {"A_IA": 1.72, "eta_IA": -0.41, "beta_IA": 2.17}

# the nuisance parameters of this probe, in the terms of the parameter registry
A_IA = register(NuisanceParameter(
    "A_IA", IA_DEFAULTS["A_IA"], "", r"\mathcal{A}_{\rm IA}", cosmosis="intrinsic_alignment_parameters--a",
    aliases=("aIA", "AIA"), description="NLA intrinsic-alignment amplitude"))
ETA_IA = register(NuisanceParameter(
    "eta_IA", IA_DEFAULTS["eta_IA"], "", r"\eta_{\rm IA}", step_scale=1.0, offset=True,
    cosmosis="intrinsic_alignment_parameters--alpha", aliases=("etaIA", "eIA"),
    description="redshift slope of the IA amplitude, (1+z)^eta_IA"))
BETA_IA = register(NuisanceParameter(
    "beta_IA", IA_DEFAULTS["beta_IA"], "", r"\beta_{\rm IA}", cosmosis="intrinsic_alignment_parameters--beta",
    aliases=("betaIA", "bIA"), description="luminosity slope of the IA amplitude, (<L>/L*)^beta_IA"))
#: shear multiplicative bias of bin i (1 + m_i > 0): an offset around 0
SHEAR_BIAS = register(ParameterFamily(
    "m_{i}", "", "m_{{i}}", step_scale=0.01, domain=Domain(lower=-1.0), offset=True, fiducial=0.0,
    cosmosis="shear_calibration_parameters--m{i}", description="multiplicative shear bias of bin {i}"))
#: photo-z shift of bin i, n_i(z) -> n_i(z - dz_i): an offset around 0
PHOTOZ_SHIFT = register(ParameterFamily(
    "dz_{i}", "", r"\Delta z_{{i}}", step_scale=0.01, offset=True, fiducial=0.0,
    cosmosis="wl_photoz_errors--bias_{i}", description="photo-z shift of bin {i}"))


# =======================================================================================
# Configuration (the `probes.weak_lensing` section of a survey YAML)
# =======================================================================================


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


#: Largest multipole a Limber probe accepts (ell.max). Far beyond any survey's (Euclid 5000);
#: the probe's k_max need, (ell_max + 1/2)/chi_min, is checked against the largest k fishcast
#: tabulates afterwards. Without a bound a huge ell.max (1e308) overflowed the band and mode
#: arithmetic (numpy RuntimeWarnings on the terminal) before that check refused "k = inf".
ELL_MAX_LIMIT = 1.0e5


class EllBandsConfig(_Model):
    """Multipole bands: n_bands log-spaced bands between min and max. Band k has edges
    e_k = min (max/min)^(k/n_bands), centre sqrt(e_k e_{k+1}) (geometric mean) and width
    Delta_ell = e_{k+1} - e_k; the Knox covariance counts (2 ell + 1) f_sky Delta_ell modes."""

    min: float = Field(..., ge=2.0, description="lowest band edge ell_min (>= 2: shear is spin 2)")
    max: float = Field(..., le=ELL_MAX_LIMIT, description="highest band edge ell_max (> ell_min; at most 100000: "
                       "beyond, the Limber spectra need P(k) past the largest k fishcast tabulates)")
    n_bands: int = Field(..., ge=1, le=10_000, description="number of log-spaced bands")

    @model_validator(mode="after")
    def _order(self):
        if not self.max > self.min:
            raise ValueError(f"ell.max ({self.max}) must exceed ell.min ({self.min})")
        return self


SHAPE_NOISE_CONVENTIONS = ("per_component", "multiplies_inverse_density")


class ShapeNoiseConfig(_Model):
    """Shape noise. The convention is REQUIRED because surveys quote sigma_e differently.

    * ``per_component``: sigma_e is the rms of ONE component of the intrinsic ellipticity
      (sigma_e^2 = <e_1^2> = <e_2^2>); N_i = sigma_e^2 / n_i. LSST DESC SRD: sigma_e = 0.26.
    * ``multiplies_inverse_density``: sigma_e is the number whose square multiplies 1/n_i,
      whatever the paper calls it; N_i = sigma_e^2 / n_i. Euclid IST:F: sigma_e = 0.3
      (N_i = 0.09 / n_i), although IST:F calls 0.3 a "total" dispersion.

    Both give N_i = sigma_e^2/n_i with n_i in sr^-1; the convention says what the number
    means and is recorded in the output. A total (two-component) dispersion sigma_tot must
    be converted by the user: per_component sigma_e = sigma_tot / sqrt(2). The word "total"
    is refused as ambiguous.
    """

    sigma_e: float = Field(..., gt=0.0, lt=2.0, description="intrinsic ellipticity dispersion, in the stated convention")
    convention: Literal["per_component", "multiplies_inverse_density"] = Field(
        ...,
        description=(
            "what sigma_e means: 'per_component' (rms of one ellipticity component, LSST DESC SRD 0.26) "
            "or 'multiplies_inverse_density' (the number whose square multiplies 1/n_i, Euclid IST:F 0.3); "
            "in both cases N_i = sigma_e^2 / n_i"
        ),
    )

    @field_validator("convention", mode="before")
    @classmethod
    def _refuse_ambiguous(cls, v):
        if isinstance(v, str) and v.strip().lower() in ("total", "tot", "both", "two_component"):
            raise ValueError(
                "'total' is ambiguous: use 'multiplies_inverse_density' if sigma_e^2/n_i is the noise "
                "(Euclid IST:F, sigma_e = 0.3), or 'per_component' with sigma_tot/sqrt(2)"
            )
        return v


class SmailNzConfig(_Model):
    """Parent n(z) proportional to (z/z0)^alpha exp[-(z/z0)^beta] (Smail et al. 1994).
    IST:F: z0 = 0.9/sqrt(2) = 0.6364, alpha = 2, beta = 1.5. LSST SRD Y10: 0.11, 2, 0.68."""

    type: Literal["smail"] = Field(..., description="'smail'")
    z0: float = Field(..., gt=0.0, description="redshift scale z0")
    alpha: float = Field(2.0, gt=-1.0, description="power-law index alpha (default 2)")
    beta: float = Field(..., gt=0.0, description="exponential index beta")


class TableNzConfig(_Model):
    """Parent n(z) from a two-column text file (z, n(z); any normalization; '#' comments).
    Monotone cubic interpolation, zero outside the table."""

    type: Literal["table"] = Field(..., description="'table'")
    file: pathlib.Path = Field(..., description="path of the table, relative to the survey file's folder")


NzConfig = Annotated[Union[SmailNzConfig, TableNzConfig], Field(discriminator="type")]


class EquipopulatedBinsConfig(_Model):
    """n_bins bins in photometric redshift with equal numbers of galaxies between z_min and
    z_max (quantiles of the parent n(z); every bin holds exactly 1/n_bins of n_gal)."""

    type: Literal["equipopulated"] = Field(..., description="'equipopulated'")
    n_bins: int = Field(..., ge=1, le=100, description="number of tomographic bins")
    z_min: float = Field(..., ge=0.0, description="lower photometric-redshift edge of the first bin")
    z_max: float = Field(..., gt=0.0, description="upper photometric-redshift edge of the last bin")

    @model_validator(mode="after")
    def _order(self):
        if not self.z_max > self.z_min:
            raise ValueError(f"z_max ({self.z_max}) must exceed z_min ({self.z_min})")
        return self


class EdgesBinsConfig(_Model):
    """Bins with given photometric-redshift edges; a bin's share of n_gal is its share of
    the parent n(z) between the outer edges."""

    type: Literal["edges"] = Field(..., description="'edges'")
    edges: list[float] = Field(..., min_length=2, max_length=101, description="increasing photometric-redshift edges (n_bins + 1 values)")

    @field_validator("edges")
    @classmethod
    def _increasing(cls, v):
        if v[0] < 0 or any(b <= a for a, b in zip(v[:-1], v[1:])):
            raise ValueError("edges must be >= 0 and strictly increasing")
        return v


BinsConfig = Annotated[Union[EquipopulatedBinsConfig, EdgesBinsConfig], Field(discriminator="type")]


class PhotozConfig(_Model):
    """Photometric redshifts, Euclid IST:F eq. 115: p(z_p|z) is a core Gaussian in
    (z - c_b z_p - z_b) of width sigma_b (1+z), plus a fraction f_out of outliers, a Gaussian
    in (z - c_o z_p - z_o) of width sigma_o (1+z). IST:F: c_b 1, z_b 0, sigma_b 0.05, c_o 1,
    z_o 0.1, sigma_o 0.05, f_out 0.1. LSST DESC SRD: sigma_b 0.05, f_out 0."""

    sigma_b: float = Field(..., gt=0.0, lt=1.0, description="core scatter sigma_b (width sigma_b (1+z))")
    c_b: float = Field(1.0, gt=0.0, description="core multiplicative bias c_b")
    z_b: float = Field(0.0, description="core offset z_b")
    f_out: float = Field(0.0, ge=0.0, lt=1.0, description="outlier fraction f_out (0: single Gaussian)")
    c_o: float = Field(1.0, gt=0.0, description="outlier multiplicative bias c_o")
    z_o: float | None = Field(None, description="outlier offset z_o (required when f_out > 0)")
    sigma_o: float | None = Field(None, gt=0.0, lt=1.0, description="outlier scatter sigma_o (required when f_out > 0)")

    @model_validator(mode="after")
    def _outliers(self):
        if self.f_out > 0 and (self.z_o is None or self.sigma_o is None):
            raise ValueError("f_out > 0 needs the outlier offset z_o and scatter sigma_o")
        return self

    def model(self) -> PhotoZModel:
        return PhotoZModel(
            sigma_b=self.sigma_b, c_b=self.c_b, z_b=self.z_b, f_out=self.f_out, c_o=self.c_o,
            z_o=self.z_o if self.z_o is not None else 0.0,
            sigma_o=self.sigma_o if self.sigma_o is not None else self.sigma_b,
        )


class IntrinsicAlignmentConfig(_Model):
    """Intrinsic alignments: extended NLA (IST:F), amplitude A_IA C_IA Omega_m F_IA(z)/D(z),
    F_IA = (1+z)^eta_IA (<L>/L*)^beta_IA. Nuisance parameters A_IA, eta_IA, and beta_IA only
    when a luminosity table is given (without it beta_IA would have no effect)."""

    model: Literal["nla", "none"] = Field(..., description="'nla' (extended NLA) or 'none' (no intrinsic alignments)")
    C_IA: float = Field(0.0134, gt=0.0, description="normalization C_IA (IST:F 0.0134; CCL's C1 rho_crit is 0.013877)")
    luminosity_ratio_file: pathlib.Path | None = Field(
        None, description="optional two-column table (z, <L>(z)/L*(z)), relative to the survey file; enables beta_IA"
    )


class IntegrationConfig(_Model):
    """The fixed redshift nodes of every integral (uniform in z from 0 to z_max)."""

    n_z: int = Field(301, ge=21, le=5001, description="number of redshift nodes (uniform from 0 to z_max; odd is best for Simpson)")
    z_max: float = Field(4.0, gt=0.0, le=20.0, description="highest true redshift of the n_i(z) grid; must exceed the last bin edge")
    k_max: float | None = Field(
        None, gt=0.0,
        description="largest k [1/Mpc] asked of the cosmology; beyond it P(k) is extrapolated as a power law "
        "(default: (ell_max + 1/2)/chi_min, chi_min where the lensing kernels leave at most k_share of any C_ell)",
    )
    k_share: float = Field(K_SHARE, gt=0.0, lt=0.5,
                           description="share of any C_ell allowed from k beyond the default k_max (power-law extrapolated)")
    z_tail: float = Field(Z_TAIL, ge=0.0, lt=0.1,
                          description="weight of any n_i(z) allowed above the last node integrated over "
                          "(and asked of the cosmology); 0: every node up to z_max")


class WeakLensingConfig(SkyAreaConfig):
    """Tomographic cosmic shear (the ``probes.weak_lensing`` section); the sky area (f_sky or
    area_deg2) as in :class:`~fishcast.probes.sky.SkyAreaConfig`."""

    ell: EllBandsConfig = Field(..., description="multipole bands")
    ell_factor: Literal["none", "exact"] = Field(
        "none",
        description=(
            "Limber prefactor L(ell): 'none' (L = 1, Euclid IST:F; the default) or 'exact' "
            "((ell+2)!/((ell-2)! (ell+1/2)^4), as in CCL; 2.3% lower at ell = 10)"
        ),
    )
    n_gal: float = Field(..., gt=0.0, description="surface density of source galaxies, all bins together [arcmin^-2]")
    shape_noise: ShapeNoiseConfig = Field(..., description="shape noise sigma_e and its convention")
    nz: NzConfig = Field(..., description="parent redshift distribution")
    bins: BinsConfig = Field(..., description="tomographic bins in photometric redshift")
    photoz: PhotozConfig = Field(..., description="photometric-redshift model")
    intrinsic_alignment: IntrinsicAlignmentConfig = Field(..., description="intrinsic alignment model")
    shear_bias: bool = Field(False, description="multiplicative shear biases m_1..m_N (fiducial 0): C_ij -> (1+m_i)(1+m_j) C_ij")
    photoz_shift: bool = Field(False, description="photo-z shifts dz_1..dz_N (fiducial 0): n_i(z) -> n_i(z - dz_i)")
    integration: IntegrationConfig = Field(default_factory=IntegrationConfig, description="fixed integration nodes")

    @model_validator(mode="after")
    def _checks(self):
        top = self.bins.z_max if isinstance(self.bins, EquipopulatedBinsConfig) else self.bins.edges[-1]
        if not self.integration.z_max > top:
            raise ValueError(
                f"integration.z_max ({self.integration.z_max}) must exceed the last bin edge ({top}) "
                "so that the photo-z tails of the last bin fit on the grid"
            )
        return self

    @property
    def n_bins(self) -> int:
        return self.bins.n_bins if isinstance(self.bins, EquipopulatedBinsConfig) else len(self.bins.edges) - 1

    def nuisance_parameters(self) -> NuisanceParameters:
        """The nuisance parameters (name -> default fiducial, with their descriptions; no
        file is read). beta_IA only with a luminosity table; m_i / dz_i only when switched on."""
        return _nuisance(self.intrinsic_alignment.model == "nla",
                         self.intrinsic_alignment.luminosity_ratio_file is not None,
                         self.n_bins if self.shear_bias else 0, self.n_bins if self.photoz_shift else 0)


def _nuisance(ia: bool, luminosity: bool, n_m: int, n_dz: int) -> NuisanceParameters:
    """IA (A_IA, eta_IA, and beta_IA with a luminosity table), then m_1..m_{n_m}, dz_1..dz_{n_dz}."""
    out = [A_IA, ETA_IA] + ([BETA_IA] if luminosity else []) if ia else []
    out += [SHEAR_BIAS.member(i=i + 1) for i in range(n_m)]
    out += [PHOTOZ_SHIFT.member(i=i + 1) for i in range(n_dz)]
    return NuisanceParameters(out)


# =======================================================================================
# Physics: pure functions
# =======================================================================================


def ell_bands(ell_min: float, ell_max: float, n_bands: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-spaced multipole bands: (centres, edges, widths).

    edges (n_bands+1,) = geomspace(ell_min, ell_max); centre = sqrt(e_k e_{k+1});
    width Delta_ell = e_{k+1} - e_k.
    """
    edges = np.geomspace(ell_min, ell_max, n_bands + 1)
    return np.sqrt(edges[:-1] * edges[1:]), edges, np.diff(edges)


def ell_factor(ell, kind: str) -> np.ndarray:
    """Limber prefactor L(ell): 1 for ``none`` (IST:F); (ell+2)!/((ell-2)! (ell+1/2)^4)
    = (ell+2)(ell+1) ell (ell-1)/(ell+1/2)^4 for ``exact`` (CCL)."""
    ell = np.asarray(ell, dtype=float)
    if kind == "none":
        return np.ones_like(ell)
    if kind == "exact":
        return (ell + 2) * (ell + 1) * ell * (ell - 1) / (ell + 0.5) ** 4
    raise InputError(f"ell_factor must be 'none' or 'exact', got {kind!r}")


def lensing_efficiency(z: np.ndarray, chi: np.ndarray, nz: np.ndarray, omega_m: float, H0: float) -> np.ndarray:
    """Lensing efficiency q_i at the nodes z [1/Mpc], shape (n_bins, n_z):

        q_i(z) = 3/2 Omega_m (H0/c)^2 chi (1+z) Int_z^zmax dz' n_i(z') (1 - chi/chi(z'))

    computed as chi (1+z) [A_i(z) - chi B_i(z)] with the tail integrals A_i = Int n_i dz',
    B_i = Int n_i/chi' dz' on the fixed nodes (cumulative Simpson).

    z (n_z,), chi (n_z,) [Mpc] (chi = 0 allowed at z = 0), nz (n_bins, n_z) normalized per
    unit z, H0 [km/s/Mpc].
    """
    z = np.asarray(z, dtype=float)
    chi = np.asarray(chi, dtype=float)
    nz = np.atleast_2d(np.asarray(nz, dtype=float))
    inv_chi = np.divide(1.0, chi, out=np.zeros_like(chi), where=chi > 0)
    both = np.concatenate([nz, nz * inv_chi], axis=0)
    cum = cumulative_simpson(both, x=z, axis=-1, initial=0.0)
    tail = cum[:, -1:] - cum
    n = nz.shape[0]
    a_tail, b_tail = tail[:n], tail[n:]
    pref = 1.5 * omega_m * (H0 / C_KMS) ** 2
    return pref * (chi * (1.0 + z)) * (a_tail - chi * b_tail)


def limber_cl(
    ell: np.ndarray,
    kernels: np.ndarray,
    weights: np.ndarray,
    chi: np.ndarray,
    hubble: np.ndarray,
    pk: np.ndarray,
) -> np.ndarray:
    """Limber integral on fixed nodes: C_ij(ell) = sum_a w_a c/H_a K_ia K_ja / chi_a^2 P_la.

    ell (n_ell,) (unused except for the shape: P is given at k = (ell+1/2)/chi_a),
    kernels (n_bins, n_z) [1/Mpc], weights (n_z,) quadrature weights in z, chi (n_z,) [Mpc],
    hubble (n_z,) [km/s/Mpc], pk (n_ell, n_z) [Mpc^3]. Nodes with chi = 0 contribute 0.
    Returns (n_ell, n_bins, n_bins), dimensionless.
    """
    chi = np.asarray(chi, dtype=float)
    inv_chi2 = np.divide(1.0, chi * chi, out=np.zeros_like(chi), where=chi > 0)
    m = pk * (weights * (C_KMS / hubble) * inv_chi2)[None, :]  # (n_ell, n_z)
    k = np.asarray(kernels, dtype=float)
    cl = np.matmul(k[None, :, :] * m[:, None, :], k.T)
    return 0.5 * (cl + np.swapaxes(cl, 1, 2))  # exactly symmetric


def knox_fisher(cl_total: np.ndarray, derivs: np.ndarray, modes: np.ndarray) -> np.ndarray:
    """Gaussian (Knox) Fisher matrix of tomographic band powers:

        F_ab = sum_ell modes_ell / 2 Tr[Cb^-1 dC_a Cb^-1 dC_b],  modes = (2 ell + 1) f_sky Delta_ell

    cl_total: Cb = C + N, (n_ell, n, n); derivs (n_par, n_ell, n, n); modes (n_ell,).
    """
    cl_total = np.asarray(cl_total, dtype=float)
    derivs = np.asarray(derivs, dtype=float)
    if derivs.ndim != 4 or derivs.shape[1:] != cl_total.shape:
        raise InputError(f"derivatives must have shape (n_par, {cl_total.shape}), got {derivs.shape}")
    n_par, n_ell, n = derivs.shape[0], derivs.shape[1], derivs.shape[2]
    # X_a = Cb^-1 dC_a for every a at once: one factorization of Cb per band, the n_par n
    # columns of the derivatives as its right-hand sides
    rhs = np.moveaxis(derivs, 0, 2).reshape(n_ell, n, n_par * n)
    try:
        x = np.linalg.solve(cl_total, rhs)
    except np.linalg.LinAlgError as exc:
        raise ComputationError(f"the C_ell + noise matrix is singular: {exc}") from exc
    x *= np.sqrt(0.5 * np.asarray(modes, dtype=float))[:, None, None]
    y = x.reshape(n_ell, n, n_par, n)  # y[l, i, a, j] = sqrt(modes_l / 2) X_a[l, i, j]
    a = y.transpose(2, 0, 1, 3).reshape(n_par, -1)  # [a, (l, i, j)]: X_a[l, i, j]
    b = y.transpose(2, 0, 3, 1).reshape(n_par, -1)  # [b, (l, i, j)]: X_b[l, j, i]
    # Tr[X_a X_b] = sum_ij X_a[i, j] X_b[j, i], summed over the bands. einsum, not a @ b.T:
    # BLAS spreads this long product over its threads, which cost more CPU than the product
    # itself while the cores are busy with CAMB workers (measured on 2 busy cores, 10
    # parameters, 100 bands, 10 bins: 8 ms per call with BLAS, 2 ms with einsum; equal to
    # 4e-15 relative)
    f = np.einsum("ap,bp->ab", a, b)
    return 0.5 * (f + f.T)


# =======================================================================================
# What the probe needs from the cosmology: the lensing kernels' support
# =======================================================================================

def limber_k_max(ell_max: float, z: np.ndarray, nz: np.ndarray, share: float = K_SHARE,
                 slope: float = P_SLOPE, omega_m: float = REF_OMEGA_M, h: float = REF_H) -> float:
    """Largest wavenumber [1/Mpc] a tomographic shear spectrum up to ``ell_max`` needs:
    k_max = (ell_max + 1/2) / chi_min, with chi_min [Mpc] the distance below which the
    kernel-weighted Limber integrand

        I_ij(z) = q_i(z) q_j(z) / chi^2 c/H(z) P((ell + 1/2)/chi),  P ~ k^slope,

    carries at most ``share`` of C_ij, for every bin pair (for a power law the share does not
    depend on ell). Lensing efficiencies q_i of the n_i(z) (``nz`` (n_bins, n_z) on the nodes
    ``z``) in a flat LCDM reference background (``omega_m``, ``h``), on a grid refined toward
    z = 0 where the large wavenumbers come from."""
    grid = reference_grid(z, omega_m, h)
    q = lensing_efficiency(grid.z, grid.chi, grid.interp(np.asarray(z, dtype=float), nz), omega_m, 100.0 * h)
    return limber_k_max_of_pairs(ell_max, grid, q, q, share, slope)


# =======================================================================================
# The probe
# =======================================================================================


class WeakLensingProbe(Probe):
    """Tomographic cosmic shear of one survey, built from its validated configuration
    (:func:`build` reads the files and makes the bins).

    config: the ``probes.weak_lensing`` section (:class:`WeakLensingConfig`): sky area, ell
        bands (see :func:`ell_bands`), the Limber prefactor (see :func:`ell_factor`), n_gal
        [arcmin^-2] (all bins), shape noise (N_i = sigma_e^2 / n_i), intrinsic alignments
        (model, C_IA), shear_bias / photoz_shift (switch on m_i, dz_i) and
        the integration section: k_max [1/Mpc] (default :func:`limber_k_max` at the largest
        ell, with k_share) and z_tail (the nodes integrated over stop where every n_i(z) --
        moved up by DZ_MARGIN when the photo-z shifts are free -- has at most that weight
        left, :func:`redshift_support`): what :meth:`requirements` asks of the cosmology.
    bins: the :class:`~fishcast.redshift.TomographicBins` (fixed true-z nodes bins.z) that
        :func:`make_bins` makes from the redshift sections of ``config`` (nz, bins, photoz,
        integration z_max and n_z); a caller with a parent n(z) the YAML cannot express (the
        tests) passes its own, which then stands for those sections.
    luminosity_ratio: None or the (z, <L>/L*) table (linear interpolation; constant below
        its first redshift), used with the NLA model only.
    """

    name = "weak_lensing"

    def __init__(self, config: WeakLensingConfig, bins: TomographicBins,
                 luminosity_ratio: tuple[np.ndarray, np.ndarray] | None = None):
        ia = config.intrinsic_alignment
        self.config = config
        self.bins = bins
        self.z = bins.z
        self.weights = bins.weights
        self.ell, self.ell_edges, self.delta_ell = ell_bands(config.ell.min, config.ell.max, config.ell.n_bands)
        self.ell_factor_kind = config.ell_factor
        self._lfac = ell_factor(self.ell, config.ell_factor)
        self.f_sky = config.sky_fraction
        self.n_gal = float(config.n_gal)
        self.sigma_e = float(config.shape_noise.sigma_e)
        self.noise_convention = config.shape_noise.convention
        self.ia_model = ia.model
        self.C_IA = float(ia.C_IA)
        self.shear_bias = bool(config.shear_bias)
        self.photoz_shift = bool(config.photoz_shift)
        integ = config.integration
        n = self.bins.n_bins
        support = self.bins.nz(np.full(n, DZ_MARGIN)) if self.photoz_shift else self.bins.nz()
        #: number of leading nodes integrated over (the n_i(z) are negligible above them)
        self.n_eval = redshift_support(self.z, np.maximum(support, self.bins.nz()), integ.z_tail)
        self.z_eval = self.z[: self.n_eval]
        self.k_max = (float(integ.k_max) if integ.k_max is not None
                      else limber_k_max(float(self.ell.max()), self.z, self.bins.nz(), integ.k_share))
        self._log_lum = None
        if luminosity_ratio is not None and ia.model == "nla":
            zt, rt = (np.asarray(a, dtype=float) for a in luminosity_ratio)
            if np.any(rt <= 0):
                raise InputError("the <L>/L* table must be positive")
            if zt[-1] < self.z[-1] - 1e-9:
                raise InputError(
                    f"the <L>/L* table ends at z = {zt[-1]:g}, below the top of the redshift grid ({self.z[-1]:g})"
                )
            self._log_lum = np.log(np.interp(self.z, zt, rt))
        self.modes = (2.0 * self.ell + 1.0) * self.f_sky * self.delta_ell
        n = self.bins.n_bins
        self._m_names = [f"m_{i + 1}" for i in range(n)]
        self._dz_names = [f"dz_{i + 1}" for i in range(n)]
        #: N_ij (see :meth:`noise`), fixed at construction: every Knox product adds it
        self._noise = np.diag(self.sigma_e**2 / self.density_per_sr())

    # --- interface ------------------------------------------------------------------------
    @property
    def n_bins(self) -> int:
        return self.bins.n_bins

    def nuisance_parameters(self) -> NuisanceParameters:
        return _nuisance(self.ia_model == "nla", self._log_lum is not None,
                         len(self._m_names) if self.shear_bias else 0, len(self._dz_names) if self.photoz_shift else 0)

    def requirements(self) -> CosmologyRequirements:
        """The nonlinear P(k, z) up to k_max [1/Mpc] and the background up to the last node
        integrated over (see the class docstring), with CAMB's dense transfer sampling: the
        Limber integral smooths the BAO wiggles, but without it CAMB's P(k) amplitude at
        k ~ 1-7/Mpc moves by ~1.4e-3, the C_ell by up to 7.9e-4 (Euclid WL pessimistic) and
        the marginalized errors by up to 6.9e-3 (Euclid WL optimistic, Omega_b) against the
        accuracy test's reference: more than half its thresholds (1e-3, 5e-3). Measured with
        CAMB 2.0.5; see fishcast.cosmology, *Transfer sampling*."""
        return CosmologyRequirements(z_max=float(self.z_eval[-1]), k_max=self.k_max, nonlinear=True,
                                     transfer_high_precision=True)

    def _params(self, params: Mapping[str, float]) -> dict[str, float]:
        p = self.nuisance_parameters()
        p.update({k: float(v) for k, v in params.items() if k in p})
        return p

    def nz(self, params: Mapping[str, float] | None = None) -> np.ndarray:
        """n_i(z) on the fixed grid (photo-z shifted when switched on), (n_bins, n_z)."""
        if self.photoz_shift and params is not None:
            p = self._params(params)
            return self.bins.nz(np.array([p[n] for n in self._dz_names]))
        return self.bins.nz()

    def _background(self, cosmo: Cosmology) -> tuple[np.ndarray, np.ndarray]:
        """chi [Mpc] (exactly 0 at z = 0) and H [km/s/Mpc] at the nodes integrated over."""
        self._check_grid(cosmo)
        z = self.z_eval
        chi = np.asarray(cosmo.chi_of(z), dtype=float).copy()
        chi[z == 0] = 0.0
        hub = np.asarray(cosmo.hubble_of(z), dtype=float)
        return chi, hub

    def kernels(self, cosmo: Cosmology, params: Mapping[str, float], _bg=None) -> np.ndarray:
        """Combined shear + intrinsic-alignment kernels K_i [1/Mpc] at the nodes integrated
        over (:attr:`z_eval`), (n_bins, n_eval): the n_i(z) are cut above them (a tail of
        weight at most integration.z_tail). A caller that gives the background ``_bg`` on
        the first n nodes (the 3x2pt probe: all of them) gets the kernels on those nodes."""
        p = self._params(params)
        chi, hub = _bg if _bg is not None else self._background(cosmo)
        om = float(cosmo.Omega_m)
        H0 = float(cosmo.H0)
        n = np.asarray(chi).size
        z = self.z[:n]
        nz = self.nz(params)[:, :n]
        q = lensing_efficiency(z, chi, nz, om, H0)
        if self.ia_model == "none":
            return q
        growth = np.asarray(cosmo.growth_of(z), dtype=float)
        log_f = p["eta_IA"] * np.log1p(z)
        if self._log_lum is not None:
            log_f = log_f + p["beta_IA"] * self._log_lum[:n]
        amp = p["A_IA"] * self.C_IA * om * np.exp(log_f) / growth  # (n_z,)
        return q - amp[None, :] * nz * (hub / C_KMS)[None, :]

    def signal(self, cosmo: Cosmology, params: Mapping[str, float]) -> np.ndarray:
        """C_ij(ell) at the band centres, intrinsic alignments and biases included:
        (n_ell, n_bins, n_bins), dimensionless. Uses the nonlinear P(k) when the cosmology
        has one (the survey's nonlinear_model 'none' gives a linear forecast): the probe
        requires it (:meth:`requirements`)."""
        p = self._params(params)
        chi, hub = self._background(cosmo)
        kern = self.kernels(cosmo, params, _bg=(chi, hub))
        pos = chi > 0
        z = self.z_eval
        pk = np.zeros((self.ell.size, z.size))
        k = (self.ell[:, None] + 0.5) / chi[None, pos]
        pk[:, pos] = cosmo.pk(z[None, pos], k, nonlinear=cosmo.has_nonlinear)
        # the fixed-grid weights of the nodes kept: the integrand is cut to 0 above them
        cl = limber_cl(self.ell, kern, self.weights[: self.n_eval], chi, hub, pk)
        cl *= self._lfac[:, None, None]
        if self.shear_bias:
            one_m = 1.0 + np.array([p[n] for n in self._m_names])
            cl *= np.outer(one_m, one_m)[None, :, :]
        return cl

    def noise(self) -> np.ndarray:
        """Shape noise N_ij = delta_ij sigma_e^2 / n_i, n_i = n_gal f_i [sr^-1] (f_i: share of
        bin i; 1 arcmin^-2 = (180*60/pi)^2 sr^-1 = 1.181810e7 sr^-1). (n_bins, n_bins); a copy of
        what the probe computed at construction."""
        return self._noise.copy()

    def density_per_sr(self) -> np.ndarray:
        """Source density of each bin [sr^-1]."""
        return per_arcmin2_to_per_sr(self.n_gal * self.bins.fractions)

    def trace_form(self, signal: np.ndarray, cosmo: Cosmology) -> tuple[np.ndarray, np.ndarray]:
        """(C_ell + N (n_ell, n_bins, n_bins), modes per band (n_ell,)): the Knox metric of
        :meth:`gram` in trace form (see :meth:`fishcast.probes.base.Probe.trace_form`)."""
        return np.asarray(signal) + self._noise[None, :, :], np.asarray(self.modes, dtype=float)

    def gram(self, fiducial_signal: np.ndarray, derivs: np.ndarray, context=None) -> np.ndarray:
        """Knox Fisher F_ab (see :func:`knox_fisher`) with Cb = fiducial C + N (no fiducial
        context: everything else is fixed at construction)."""
        return knox_fisher(np.asarray(fiducial_signal) + self._noise[None, :, :], derivs, self.modes)

    def products(self, cosmo: Cosmology, params: Mapping[str, float]) -> dict[str, tuple[np.ndarray, str]]:
        return {
            "ell": (self.ell, ""),
            "ell_edges": (self.ell_edges, ""),
            "delta_ell": (self.delta_ell, ""),
            "cl": (self.signal(cosmo, params), ""),
            "noise": (self.noise(), ""),
            "z": (self.z, ""),
            "nz": (self.nz(params), ""),
            "bin_edges": (self.bins.edges, ""),
            "n_gal_bin": (self.n_gal * self.bins.fractions, "arcmin^-2"),
            # the survey numbers themselves (not only inside the input YAML text)
            "f_sky": (np.float64(self.f_sky), ""),
            "n_gal": (np.float64(self.n_gal), "arcmin^-2"),
            "sigma_e": (np.float64(self.sigma_e), ""),
            "sigma_e_convention": (np.array(self.noise_convention), ""),
        }

    def _check_grid(self, cosmo: Cosmology) -> None:
        z_max = float(cosmo.z_max)
        if z_max < self.z_eval[-1] - 1e-9:
            raise ComputationError(
                f"the cosmology is tabulated up to z = {z_max:g}, weak lensing needs z = {self.z_eval[-1]:g}"
            )


# =======================================================================================
# Construction from the YAML section
# =======================================================================================


def _resolve(path: pathlib.Path, survey_dir: pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path).expanduser()
    return path if path.is_absolute() else pathlib.Path(survey_dir) / path


def memory_estimate(config: WeakLensingConfig, n_vectors: int) -> int:
    """Bytes a forecast with this section holds at its peak, estimated before anything is
    allocated: the Limber product (n_ell, n_bins, n_z) and P(k) table (n_ell, n_z) of one
    evaluation, and ``n_vectors`` data vectors C_ij(ell) (n_ell, n_bins, n_bins) -- the
    fiducial and stencil signals kept for the sweep, and the Knox products -- in float64."""
    n_ell, n_z = int(config.ell.n_bands), int(config.integration.n_z)
    n_bins = int(config.n_bins)
    return 8 * (n_ell * n_bins * n_z + 2 * n_ell * n_z + int(n_vectors) * n_ell * n_bins * n_bins)


def make_bins(config: WeakLensingConfig, survey_dir: pathlib.Path) -> TomographicBins:
    """The tomographic bins of the redshift sections (nz, bins, photoz, integration) on the
    fixed nodes z = linspace(0, integration.z_max, integration.n_z). Raises FileFormatError
    (an InputError) for an unreadable n(z) table."""
    return tomographic_bins(config.nz, config.bins, config.photoz,
                            np.linspace(0.0, config.integration.z_max, config.integration.n_z), survey_dir)


def tomographic_bins(nz, bins, photoz, z: np.ndarray, survey_dir: pathlib.Path) -> TomographicBins:
    """The tomographic bins of the redshift sections ``nz``, ``bins`` and ``photoz`` of a
    probe's YAML on the nodes ``z``. An InputError (an unreadable n(z) table, an empty bin)
    carries the key of the section it comes from (:func:`fishcast.errors.at_key`): the n(z)
    table's file at ``nz.file``."""
    if isinstance(nz, SmailNzConfig):
        with at_key("nz"):
            parent = SmailNz(nz.z0, nz.alpha, nz.beta)
    else:
        with at_key("nz", "file"):
            parent = TabulatedNz.from_file(_resolve(nz.file, survey_dir))
    with at_key("bins"):
        if isinstance(bins, EquipopulatedBinsConfig):
            edges = equipopulated_edges(parent, bins.n_bins, bins.z_min, bins.z_max)
            equi = True
        else:
            edges = np.array(bins.edges, dtype=float)
            equi = False
    with at_key("photoz"):
        model = photoz.model()
    with at_key("bins"):
        return TomographicBins(parent=parent, edges=edges, photoz=model, z=z, equipopulated=equi)


def read_luminosity_ratio(config: WeakLensingConfig, survey_dir: pathlib.Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The (z, <L>/L*) table of the NLA model, or None (no table, or no NLA). Raises
    FileFormatError when it cannot be read, is not positive or does not reach
    integration.z_max."""
    ia = config.intrinsic_alignment
    if ia.model != "nla" or ia.luminosity_ratio_file is None:
        return None
    path = _resolve(ia.luminosity_ratio_file, survey_dir)
    with at_key("intrinsic_alignment", "luminosity_ratio_file"):
        zt, rt = read_table(path, what="<L>/L* table")
        if np.any(rt <= 0):
            raise FileFormatError(f"{path}: <L>/L* must be positive")
        top = float(config.integration.z_max)
        if zt[-1] < top - 1e-9:
            raise FileFormatError(
                f"{path}: the <L>/L* table ends at z = {zt[-1]:g}; it must reach integration.z_max = {top:g}"
            )
    return zt, rt


def build(config: WeakLensingConfig, survey_dir: pathlib.Path) -> WeakLensingProbe:
    """Make the probe from its validated configuration; relative file paths are resolved
    against ``survey_dir``. Raises FileFormatError (an InputError) for unreadable tables."""
    bins = make_bins(config, survey_dir)
    return WeakLensingProbe(config, bins, read_luminosity_ratio(config, survey_dir))
