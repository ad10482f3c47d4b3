"""The observed galaxy power spectrum in redshift space: the ingredients of the Euclid IST:F
spectroscopic recipe (Euclid Collaboration: Blanchard et al. 2020, A&A 642, A191, sec. 3.2)
and the Alcock-Paczynski mapping, as pure numpy functions.

Units: each function states its own.  Wavenumbers and lengths only have to be consistent
(k in 1/Mpc with lengths in Mpc, or k in h/Mpc with lengths in Mpc/h).

The observed frame (Alcock & Paczynski 1979; Ballinger, Peacock & Heavens 1996; Seo &
Eisenstein 2003).  Positions are measured in the fiducial cosmology's coordinates.  At a
parameter point theta, with

    q_perp = D_A(z) / D_A,fid(z),        q_par = H_fid(z) / H(z)

(comoving distances in the same length unit on both sides), a mode observed at
(k_obs, mu_obs) has

    k_perp = k_obs sqrt(1 - mu_obs^2) / q_perp,     k_par = k_obs mu_obs / q_par,
    k = sqrt(k_perp^2 + k_par^2),                    mu = k_par / k,

and the observed power is ``P_obs(k_obs, mu_obs) = P(k, mu) / (q_perp^2 q_par)``.  Shot
noise, mode count and volume stay in the fiducial frame (physics.md section 2).

The IST:F recipe (eq. numbers of Blanchard et al. 2020, sec. 3.2.1-3.2.2), for one tracer:

    P_obs = 1/(q_perp^2 q_par) (b + f mu^2)^2 / (1 + f^2 k^2 mu^2 sigma_p^2)
            P_dw(k, mu) exp(-k^2 mu^2 sigma_r^2) + P_s
    P_dw  = P_lin(k) exp(-g_mu k^2) + P_nw(k) [1 - exp(-g_mu k^2)]
    g_mu  = sigma_v^2 [1 - mu^2 + mu^2 (1 + f)^2]
    sigma_v^2 = sigma_p^2 = 1/(6 pi^2) Int dk P_lin(k, z)     (at the fiducial, held fixed)
    sigma_r = c sigma_z (1 + z) / H(z)

(the paper writes the Kaiser factor as (b sigma8 + f sigma8 mu^2)^2 P_dw / sigma8^2: the
same thing).  The no-wiggle spectrum P_nw is our choice (the paper leaves it open): the
Eisenstein & Hu (1998, ApJ 496, 605, eqs. 29-31) zero-baryon-oscillation shape times the
ratio P_lin / P_EH smoothed with a Gaussian of width 0.25 in ln k (Vlah et al. 2016, JCAP 03,
057, appendix), computed on fixed ln k nodes so that it is a smooth function of the
parameters.
"""

from __future__ import annotations

import math

import numpy as np

from ..constants import C_KMS

#: CMB temperature [K] used by the Eisenstein-Hu shape (CAMB's default)
T_CMB = 2.7255
#: width of the Gaussian smoothing of ln(P_lin / P_EH) in ln k (Vlah et al. 2016)
NOWIGGLE_SMOOTHING = 0.25


# ---------------------------------------------------------------------------------------------
# Alcock-Paczynski
# ---------------------------------------------------------------------------------------------


def ap_true_wavevector(k_obs, mu_obs, q_perp, q_par):
    """True (k, mu) of the mode observed at (k_obs, mu_obs) in the fiducial frame.

    k_obs in any unit (k comes out in the same unit), mu_obs in [-1, 1]; q_perp, q_par
    dimensionless (scalars or arrays broadcasting with k_obs, mu_obs).
    """
    k_obs = np.asarray(k_obs, dtype=float)
    mu_obs = np.asarray(mu_obs, dtype=float)
    kperp = k_obs * np.sqrt(np.clip(1.0 - mu_obs**2, 0.0, None)) / q_perp
    kpar = k_obs * mu_obs / q_par
    k = np.sqrt(kperp**2 + kpar**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.where(k > 0, kpar / np.where(k > 0, k, 1.0), mu_obs)
    return k, mu


def ap_volume_factor(q_perp, q_par):
    """The amplitude factor ``1 / (q_perp^2 q_par)`` of the observed power."""
    return 1.0 / (np.asarray(q_perp, dtype=float) ** 2 * np.asarray(q_par, dtype=float))


def observed_power(power, k_obs, mu_obs, q_perp, q_par):
    """``P_obs(k_obs, mu_obs) = P(k, mu) / (q_perp^2 q_par)`` with (k, mu) from
    :func:`ap_true_wavevector`; ``power(k, mu)`` is the true (redshift-space) spectrum."""
    k, mu = ap_true_wavevector(k_obs, mu_obs, q_perp, q_par)
    return power(k, mu) * ap_volume_factor(q_perp, q_par)


def ap_log_derivatives(mu_obs):
    """Derivatives at q_perp = q_par = 1 of the mode mapping, for the band-power route:

    returns ``(dlnk/dlnq_perp, dlnk/dlnq_par, dmu2/dlnq_perp, dmu2/dlnq_par)`` =
    ``(-(1 - mu^2), -mu^2, 2 mu^2 (1 - mu^2), -2 mu^2 (1 - mu^2))`` (mu2 = mu^2)."""
    m2 = np.asarray(mu_obs, dtype=float) ** 2
    return -(1.0 - m2), -m2, 2.0 * m2 * (1.0 - m2), -2.0 * m2 * (1.0 - m2)


# ---------------------------------------------------------------------------------------------
# no-wiggle spectrum, de-wiggling, Fingers of God, redshift errors
# ---------------------------------------------------------------------------------------------


def eisenstein_hu_nowiggle_transfer(k_mpc, omega_m: float, omega_b: float, h: float,
                                    t_cmb: float = T_CMB) -> np.ndarray:
    """Eisenstein & Hu (1998) zero-baryon-oscillation transfer function T_0 (their eqs.
    26, 28-31), k in 1/Mpc; Omega_m, Omega_b today, h = H0/100.  Dimensionless."""
    k = np.asarray(k_mpc, dtype=float)
    om_h2 = omega_m * h * h
    ob_h2 = omega_b * h * h
    fb = omega_b / omega_m
    theta = t_cmb / 2.7
    # sound horizon fit [Mpc] (eq. 26)
    s = 44.5 * math.log(9.83 / om_h2) / math.sqrt(1.0 + 10.0 * ob_h2 ** 0.75)
    alpha = 1.0 - 0.328 * math.log(431.0 * om_h2) * fb + 0.38 * math.log(22.3 * om_h2) * fb * fb
    gamma_eff = omega_m * h * (alpha + (1.0 - alpha) / (1.0 + (0.43 * k * s) ** 4))
    q = k / h * theta**2 / gamma_eff
    L0 = np.log(2.0 * math.e + 1.8 * q)
    C0 = 14.2 + 731.0 / (1.0 + 62.5 * q)
    return L0 / (L0 + C0 * q * q)


def nowiggle_power(k_mpc, pk_lin, omega_m: float, omega_b: float, h: float, n_s: float,
                   width: float = NOWIGGLE_SMOOTHING) -> np.ndarray:
    """The no-wiggle spectrum on the nodes ``k_mpc`` [1/Mpc] (log-spaced, increasing) of
    ``pk_lin`` [any unit; shape (..., n_k)]: ``P_EH,nw(k) * G[P_lin / P_EH,nw]``, G a
    Gaussian smoothing of width ``width`` in ln k (edges held at their value).  Same units
    as pk_lin."""
    k = np.asarray(k_mpc, dtype=float)
    lnk = np.log(k)
    dlnk = np.diff(lnk)
    if not np.allclose(dlnk, dlnk[0], rtol=1e-8):
        raise ValueError("nowiggle_power needs log-spaced k nodes")
    shape = k**n_s * eisenstein_hu_nowiggle_transfer(k, omega_m, omega_b, h) ** 2
    ratio = np.log(np.asarray(pk_lin, dtype=float) / shape)
    from scipy.ndimage import gaussian_filter1d  # here: scipy.ndimage costs 40 ms to import

    smooth = gaussian_filter1d(ratio, width / dlnk[0], axis=-1, mode="nearest", truncate=6.0)
    return shape * np.exp(smooth)


def velocity_dispersion(k, pk) -> np.ndarray:
    """``sigma_v = sqrt(1/(6 pi^2) Int dk P(k))`` from the linear spectrum on log-spaced
    nodes k (..., n_k) [h/Mpc or 1/Mpc]; P in the matching cube of length.  Returns a length
    in the matching unit (Mpc/h or Mpc).  Trapezoid in ln k of k P(k)."""
    k = np.asarray(k, dtype=float)
    integrand = k * np.asarray(pk, dtype=float)
    return np.sqrt(np.trapezoid(integrand, np.log(k), axis=-1) / (6.0 * np.pi**2))


def bao_damping_exponent(k, mu, f, sigma_v):
    """``g_mu k^2`` with ``g_mu = sigma_v^2 [1 - mu^2 + mu^2 (1 + f)^2]`` (dimensionless; k
    and sigma_v in inverse units)."""
    mu2 = np.asarray(mu, dtype=float) ** 2
    return np.asarray(sigma_v) ** 2 * (1.0 - mu2 + mu2 * (1.0 + np.asarray(f)) ** 2) * np.asarray(k) ** 2


def dewiggled_power(p_lin, p_nw, k, mu, f, sigma_v):
    """``P_dw = P_lin exp(-g_mu k^2) + P_nw [1 - exp(-g_mu k^2)]`` (units of p_lin)."""
    e = np.exp(-bao_damping_exponent(k, mu, f, sigma_v))
    return p_lin * e + p_nw * (1.0 - e)


def lorentzian_fog(k, mu, f, sigma_p):
    """Fingers of God on the power, ``1 / (1 + f^2 k^2 mu^2 sigma_p^2)`` (dimensionless)."""
    return 1.0 / (1.0 + (np.asarray(f) * np.asarray(k) * np.asarray(mu) * np.asarray(sigma_p)) ** 2)


def redshift_error_length(z, hubble_kms_mpc, sigma_z0):
    """``sigma_r = c sigma_z0 (1 + z) / H(z)`` [Mpc] for H in km/s/Mpc (the power is damped
    by ``exp(-k^2 mu^2 sigma_r^2)``)."""
    return C_KMS * np.asarray(sigma_z0) * (1.0 + np.asarray(z)) / np.asarray(hubble_kms_mpc)


# ---------------------------------------------------------------------------------------------
# what the model needs of the linear P(k): its reach in k (the probe's requirements)
# ---------------------------------------------------------------------------------------------

#: Wavenumber [h/Mpc] above which the linear ``Int dk P(k)`` of :func:`velocity_dispersion`
#: holds 0.2 % of sigma_v^2 (Eisenstein-Hu no-wiggle shape, n_s = 0.96, Omega_m = 0.32,
#: Omega_b = 0.05, h = 0.67; the share above 3, 10 h/Mpc: 0.5 %, 0.07 %). Beyond the
#: tabulated k_max P is extrapolated as a power law, so that share is approximated, not lost.
SIGMA_V_K_SUPPORT = 5.0


def k_reach(k_true_max, bao_damping: bool, dispersions: bool) -> float:
    """Largest wavenumber [h/Mpc] at which the model's linear P(k) matters, for true
    wavenumbers up to ``k_true_max`` [h/Mpc]: the de-wiggling's smoothing of ln(P_lin/P_EH)
    (:func:`nowiggle_power`, ``bao_damping``) reaches 3 widths (a factor exp(3 x 0.25) = 2.1)
    beyond it; sigma_v (``dispersions``) needs :data:`SIGMA_V_K_SUPPORT`."""
    k = float(k_true_max)
    if bao_damping:
        k = k * math.exp(3.0 * NOWIGGLE_SMOOTHING)
    if dispersions:
        k = max(k, SIGMA_V_K_SUPPORT)
    return k
