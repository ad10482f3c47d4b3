"""The cosmology backend: one CAMB evaluation per parameter point.

Everything a probe needs is returned as plain arrays in a :class:`CosmologyResult`, so that
results can be cached on disk, sent between processes and compared bit for bit. Internal
units are Mpc and 1/Mpc: ``k`` in 1/Mpc, ``P(k)`` in Mpc^3, ``chi`` in Mpc, ``H`` in
km/s/Mpc. :meth:`CosmologyResult.pk_h` converts to h/Mpc and (Mpc/h)^3 for clustering probes.

CAMB is asked for background, growth and the matter power spectrum only (no CMB, no lensing
of the CMB). The nonlinear model (halofit ``takahashi``, HMcode ``mead2020``, or ``none``)
and the accuracy settings are part of :class:`CosmologySettings` and are recorded in the
output. Dark energy uses CAMB's PPF model so that a derivative step may cross w = -1.

Points that differ only in primordial parameters (n_s, A_s, sigma8) share one transfer
function computation (:func:`compute_many`): only the first of them costs a Boltzmann run.
Within a :func:`transfer_store` (a forecast opens one), CAMB's transfer objects are kept
in this process for a while, so that a later call at a held transfer function (the
Gaussian-validity check's n_s / sigma8 directions at the fiducial) costs no Boltzmann run
either (:func:`transfer_reuses` counts those points).

Growth. Two tracers of the density field are distinguished where massive neutrinos make them
differ (by f_nu = Omega_nu / Omega_m ~ 0.5 % at m_nu = 0.06 eV):

* total matter (baryons + CDM + massive neutrinos): ``P(k, z)`` (``pk_lin``, ``pk_nl``), the
  growth factor ``growth`` D(z)/D(0) (sigma8(z)/sigma8(0) at R = 8 Mpc/h) and ``sigma8_z``
  = sigma8 D(z). Lensing sees all matter, and every probe's P(k) is this one, so D and
  sigma8(z) follow it: they describe the amplitude of the P(k, z) the probes use (the
  intrinsic-alignment amplitude, the ``inverse_growth`` bias b0/D(z)).
* baryons + CDM ("cb"): the growth rate ``growth_rate`` f(z) = d ln D_cb / d ln a, the
  velocity-density ratio f sigma8_cb / sigma8_cb (see :func:`cb_growth_rate`). Galaxies
  form in, and move with, the baryons + CDM (Castorina et al. 2015, JCAP 07, 043;
  MontePython's euclid_spectroscopic likelihood, whose ``use_tracer: clustering`` takes f_cb
  in the Kaiser term; CLASS's scale-independent growth, whose source is baryons + CDM only):
  the Kaiser factor (b + f mu^2) uses the cb velocity. Measured with CAMB 2.0.5 at the IST:F
  fiducial (m_nu = 0.06 eV), this f is 0.42-0.44 % below the previous definition (CAMB's
  f sigma8 over the total-matter sigma8) and within 1.5e-4 of the scale-independent growth
  equation sourced by baryons + CDM (tests/test_cosmology.py).

Transfer sampling. What CAMB's dense transfer sampling (``Transfer.high_precision``, which
``CAMBparams.set_matter_power`` switches on; :attr:`CosmologySettings.transfer_high_precision`)
costs and buys, measured with CAMB 2.0.5 on the IST:F fiducial at the Euclid WL pessimistic
settings (takahashi, k_max 7.78/Mpc, z_max 3, n_z 100, one thread):

* cost: 0.87 CPU s per Boltzmann run with it, 0.50 s without (-42 %); 193 transfer k nodes
  instead of 129 (125 instead of 84 at 0.01-0.4/Mpc);
* what it buys is not the k sampling alone: P(k) without it moves by 2.4e-3 at
  0.01-0.05/Mpc, 1.3e-3 at 0.05-0.5/Mpc and 1.4e-3 at 0.5-7/Mpc (linear, z = 0 and 1,
  after the sigma8 normalization; 8e-3 at 0.01-0.05/Mpc with m_nu = 0), and the same
  without it with CAMB's k sampling boosted as much (TransferkBoost 1.5: 0.75 s) or with a
  100x tighter ODE tolerance (IntTolBoost 5.6: 1.27 s). Against a converged run (with it,
  AccuracyBoost 2, lAccuracyBoost 2) P is within 9e-4 with it and 3.1e-3 without
  (4e-4 / 1.8e-3 above 0.5/Mpc); AccuracyBoost 1.5 without it (0.87 s, its cost) gives
  1.6e-3. A k_per_logint > 0 is no intermediate either: it replaces CAMB's optimized
  spacing by a uniform one in ln k, with fewer nodes on the BAO wiggles (k_per_logint 8:
  29 nodes at 0.01-0.4/Mpc, 0.79 s; 10: 37 nodes, 0.96 s);
* on the accuracy test (tests/test_requirements.py: against k_max 30/Mpc, z_max 4 with it;
  thresholds 1e-3 on every signal element, 5e-3 on every marginalized error; fixed
  3-point stencils), largest signal change / largest change of a marginalized error, with
  it -> without it: Euclid WL pessimistic 2.5e-4 / 9.4e-4 -> 7.9e-4 / 2.3e-3 (the C_ell of
  the lowest bin at ell 1463: the amplitude at k ~ 1-7/Mpc, not the BAO); Euclid WL
  optimistic 2.4e-5 / 9.3e-4 -> 7.0e-4 / 6.9e-3 (Omega_b); Euclid 3x2pt pessimistic
  2.5e-4 / 3.1e-4 -> 2.1e-3 / 8.1e-3 (Omega_b, h); DESI multi-tracer (n_z 40) 5e-7 / 9.3e-4
  -> 3.1e-4 / 2.9e-2 (Omega_b; h 2.1e-2, n_s 1.0e-2); the two-tracer toy 5e-7 / 4e-7 ->
  5.7e-4 / 4.5e-4. Without it no shipped weak-lensing, 3x2pt or cosmology-varying clustering
  recipe stays within half the thresholds (three exceed them), so every probe keeps it
  (their ``requirements()``);
* on the derivatives (the default adaptive sweep of the Euclid WL pessimistic recipe): the
  spread of the 2-rung starts grows without it (Omega_m 7.3e-5 -> 4.8e-4, w0 9.8e-5 ->
  2.2e-4, wa 8.7e-5 -> 6.6e-4 in the data's metric), h no longer passes at its start (spread
  8e-4 -> 2e-3: a 4-rung window), and the run makes 30 Boltzmann runs instead of 26; every
  verdict still PASS, FoM(w0, wa) 23.19 against 23.18.

It stays a setting: a user may switch it off (``cosmology.accuracy.transfer_high_precision:
false``) for a forecast that tolerates errors of this size at ~0.6 of the cost of a run.

ODE tolerance. CAMB integrates each k mode's Boltzmann hierarchy with an adaptive stepper whose
tolerance is its base tolerance / exp(AccuracyBoost x IntTolBoost - 1)
(:attr:`CosmologySettings.int_tol_boost`; at AccuracyBoost 1, IntTolBoost 0.3 is 2.0x looser
than CAMB's default 1, 3 is 7.4x tighter). Measured with CAMB 2.0.5 on the IST:F fiducial at
the Euclid WL pessimistic settings (takahashi, k_max 7.78/Mpc, z_max 3, n_z 100, dense transfer
sampling, one thread; CPU time, median of 3 interleaved runs):

* cost per Boltzmann run (``get_transfer_functions``): IntTolBoost 3: 1.30 s, 2: 1.06 s,
  1: 0.86 s, 0.7: 0.79 s, 0.5: 0.76 s, 0.3: 0.73 s (-15 %), 0.2: 0.72 s, 0.1: 0.71 s;
* P(k, z): the linear and nonlinear tables (every node, z 0-3) move by at most 1.1e-6 against
  IntTolBoost 1, and by as much against 3, at every value from 0.1 to 3, without a trend:
  P's floor at this level is not the ODE tolerance;
* the derivatives' noise is not either. The default run (adaptive sweeps and the
  Gaussian-validity check) makes 26 Boltzmann runs at IntTolBoost 2, 1, 0.7, 0.5 and 0.3,
  every parameter PASSes at its 2-rung start at each, with the same spreads in the data's
  metric (1 -> 0.7 / 0.5 / 0.3; 2): Omega_m 7.3e-5 -> 7.3e-5 / 7.4e-5 / 7.3e-5; 7.0e-5, w0
  9.8e-5 -> 9.3e-5 / 8.3e-5 / 8.8e-5; 9.1e-5, wa 8.7e-5 -> 9.0e-5 / 1.0e-4 / 4.8e-5; 1.1e-4,
  h 8.0e-4 at all; FoM(w0, wa) 23.18 at all (23.177-23.182); the run's CPU 25.2 s -> 23.7 /
  23.2 / 22.3 s (32.1 s at 2). In the full 8-rung sweep (the same verdicts, windows and
  chosen rungs for every parameter at 3, 1, 0.5 and 0.3) the change between the two smallest
  rungs, where noise shows, scatters without a trend in the tolerance, 7x tighter included
  (at 1 / 3 / 0.5 / 0.3: wa 6.3e-4 / 4.6e-4 / 4.7e-4 / 4.4e-4; Omega_b 5.1e-4 / 4.0e-4 /
  2.3e-4 / 8.4e-4; h 7.9e-4 / 7.7e-4 / 6.4e-4 / 8.1e-4);
* the verdicts at IntTolBoost 0.3 on other recipes (their own settings, AccuracyBoost 1, no
  Gaussian-validity check), the default adaptive sweep against the full 8-rung sweep: equal
  for every parameter of Euclid WL optimistic (10 parameters), DESI multi-tracer (11) and
  Euclid 3x2pt pessimistic (20), all PASS; the largest best-window change of the full sweeps
  1.5e-3 (3x2pt, h), wa's 1.3e-4 (WL optimistic), 5.1e-4 (DESI), 1.7e-4 (3x2pt), against
  tol_pass 2e-3;
* d ln P_nl/d wa (z 0-3, 3-point, steps 0.05/2^n, n = 0..5): its rung-to-rung changes,
  relative to its largest value, are 4.0e-4, 7.6e-4, 4.1e-4, 8.6e-4, 1.5e-3 at 1, the same
  within 20 % at 3 (7x tighter: 4.0e-4 ... 1.6e-3) and 0.3 (2x looser: 4.0e-4 ... 1.6e-3),
  at the BAO scale (0.01-0.4/Mpc) as well: the ODE tolerance is not the cause of the
  rung-to-rung noise of d ln P/d wa noted in tests/test_istf_gcsp.py (1e-3 to 4e-3 even at
  AccuracyBoost 2), and a tighter tolerance does not remove it;
* on the accuracy test (tests/test_requirements.py, against its reference at IntTolBoost 1;
  thresholds 1e-3 / 5e-3), largest signal change / largest change of a marginalized error at
  1 -> 0.5 -> 0.3: Euclid WL pessimistic 2.5e-4 / 9.4e-4 -> 8.8e-4 -> 8.9e-4; Euclid WL
  optimistic 2.4e-5 / 9.3e-4 -> 8.9e-4 -> 8.7e-4; LSST Y10 WL 1.65e-4 / 2.43e-3 -> 2.43e-3 ->
  2.38e-3 (n_s); Euclid 3x2pt pessimistic 2.5e-4 / 3.1e-4 -> 2.9e-4 -> 2.8e-4; LSST Y10
  3x2pt 1.65e-4 / 4.6e-4 -> 4.5e-4 -> 4.4e-4; DESI multi-tracer 5e-7 / 9.3e-4 -> 1.1e-3 ->
  9.9e-4; Euclid GCsp optimistic 1.3e-6 / 1.25e-3 -> 1.16e-3 -> 1.22e-3; the two-tracer toy
  5e-7 / 4e-7 at all (signals unchanged to 1e-7): every recipe within half the thresholds.

So fishcast's default is 0.3 (:data:`DEFAULT_INT_TOL_BOOST`): ~15 % off every Boltzmann run
for changes of ~1e-6 in P. One value for every probe (the tolerance moves P alike whatever
the probe reads of it), at AccuracyBoost 1 only, where it was measured: at any other
accuracy_boost the default is CAMB's own 1, as before. CAMB multiplies the two: at
AccuracyBoost 2 the default 0.3 would be looser than CAMB's 1 at AccuracyBoost 1 (the recipe
that ships AccuracyBoost 2, Euclid GCsp pessimistic, was converged at IntTolBoost 1); and at
AccuracyBoost 0.5 (the cheap settings of tests/test_adaptive_recipes.py: 12 z nodes, k to
2/Mpc) the looser tolerance does add to the noise: there the Euclid WL optimistic full
sweep's wa plateau changes by 2.5e-3 at IntTolBoost 0.3 (WARN, > tol_pass 2e-3) while its
adaptive start PASSes: the verdicts differ (they agree at 1). At the cheap AccuracyBoost the other
coarsenings already raise the noise to where the tolerance's share shows; at AccuracyBoost 1
it does not (above). Lower values save little more (0.1: -18 %, untested beyond the cost and
P). ``cosmology.accuracy.int_tol_boost`` sets it.

Other per-run levers measured the same way (not taken): CAMB's ``Accuracy.KmaxBoost`` does not
act on the transfer functions (0.5 to 1.2: the same 193 k nodes up to 8.58/Mpc, the same P bit
for bit, the same cost); the transfer k range is 1.05 x k_max (:func:`_camb_params`): with 1.0
a run costs 0.95 (one k node fewer, the last at 8.17 instead of 8.58/Mpc) but P_nl moves by
8.9e-4 near the table's edge (2.3e-5 below k_max/2; the nonlinear floors were measured with
1.05), with 1.02 it costs 0.99 for 3.7e-4; and only that one node of CAMB's 193 lies above
the k_max the probes need: nothing to cut there.

Dark energy at w = -1 (measured the same way, linear P, z 0 and 1): CAMB's PPF model at
w0 = -1, wa = 0 (the fiducial of every shipped recipe) is integrated as a cosmological
constant, and the points of a w0 or wa stencil are not: they cost ~13 % more per run
(0.92 against 0.82 CPU s at IntTolBoost 1, 0.81 against 0.72 at 0.3) and P jumps by
~2.5e-7 against the smooth continuation through w = -1 (P(w0 = -1 +- 1e-4) averaged minus P(-1):
2.4e-7 at 1, 2.9e-7 at 0.3; the linear change of such a step is 4.9e-5). Central stencils
(3- and 5-point) never use the fiducial's value, and the Gaussian-validity check's differences
at 1 sigma are ~1e-2: neither sees the jump. A one-sided stencil of w0 or wa at w = -1 would
(fishcast makes one only at a bound of the domain, and no bound of w0 or wa lies at -1).
"""

from __future__ import annotations

import hashlib
import json
import math
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

import numpy as np
from scipy.integrate import simpson
from scipy.interpolate import CubicSpline, RectBivariateSpline

from .bspline import bicubic_shared_rows
from .errors import ComputationError, InputError
from .parameters import COSMOLOGICAL_DEFAULTS, PRIMORDIAL, camb_background_inputs

if TYPE_CHECKING:  # not imported at run time: a worker process that only computes points
    # then loads no probe module (nor pydantic, nor their scipy modules)
    from .probes.base import CosmologyRequirements

#: Reference primordial amplitude used to find A_s for a requested sigma8.
_AS_REFERENCE = 2.1e-9
#: Nodes of the sigma8 quadrature (:func:`linear_sigma8`) in x = k R (dimensionless), fixed so
#: that they do not move with the parameters: log-spaced from 1e-3 to 500, 200 per e-fold.
_SIGMA8_LNX = np.linspace(math.log(1e-3), math.log(500.0), int(200 * math.log(500.0 / 1e-3)) | 1)
#: k pivot of A_s and n_s [1/Mpc] (CAMB's default, stated for the record).
K_PIVOT = 0.05

NONLINEAR_MODELS = ("takahashi", "mead2020", "none")


@dataclass(frozen=True)
class CosmologySettings:
    """How the cosmology is computed. All fields are recorded in the output file.

    nonlinear_model: ``takahashi`` (halofit, Takahashi et al. 2012), ``mead2020`` (HMcode
        2020) or ``none`` (linear only).
    z_max, n_z: the redshift grid 0 <= z <= z_max with n_z nodes on which P(k, z) and the
        background are tabulated (fixed nodes: they do not move with the parameters).
    k_min, k_max [1/Mpc], n_k: the log-spaced k grid of the tabulated P(k, z); P is
        extrapolated as a power law beyond it.
    accuracy_boost, l_accuracy_boost: CAMB's AccuracyBoost and lAccuracyBoost. Raise them
        when a derivative is noise-limited.
    k_per_logint: CAMB's k sampling of the transfer functions (0 = CAMB's default).
    transfer_high_precision: CAMB's ``Transfer.high_precision``, the dense k sampling of the
        transfer functions (which ``CAMBparams.set_matter_power`` always switches on). True
        (the default, and fishcast's only choice before) for probes that resolve the BAO
        wiggles; :func:`settings_for` switches it off when no probe needs it
        (:attr:`fishcast.probes.base.CosmologyRequirements.transfer_high_precision`). See
        the module docstring, *Transfer sampling*, for what it costs and changes.
    int_tol_boost: CAMB's ``Accuracy.IntTolBoost``: the tolerance of CAMB's Boltzmann ODE
        integration is its base tolerance / exp(accuracy_boost x int_tol_boost - 1) (so with
        accuracy_boost 1: 0.3 is 2.0x looser than CAMB's default 1, 3 is 7.4x tighter).
        :func:`settings_for` uses :data:`DEFAULT_INT_TOL_BOOST` unless the user gives it
        (see the module docstring, *ODE tolerance*).
    """

    nonlinear_model: str = "takahashi"
    z_max: float = 4.0
    n_z: int = 100
    k_min: float = 1e-4
    k_max: float = 30.0
    n_k: int = 300
    accuracy_boost: float = 1.0
    l_accuracy_boost: float = 1.0
    k_per_logint: int = 0
    transfer_high_precision: bool = True
    int_tol_boost: float = 1.0

    def __post_init__(self):
        if self.nonlinear_model not in NONLINEAR_MODELS:
            raise InputError(f"nonlinear_model must be one of {NONLINEAR_MODELS}, got {self.nonlinear_model!r}")
        itb = self.int_tol_boost
        if isinstance(itb, (bool, np.bool_)) or not isinstance(itb, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(itb)) or float(itb) <= 0:
            raise InputError(f"int_tol_boost must be a finite number > 0, got {itb!r}")
        object.__setattr__(self, "int_tol_boost", float(itb))
        if not isinstance(self.transfer_high_precision, (bool, np.bool_)):
            raise InputError(f"transfer_high_precision must be true or false, got {self.transfer_high_precision!r}")
        object.__setattr__(self, "transfer_high_precision", bool(self.transfer_high_precision))

    @property
    def nonlinear(self) -> bool:
        return self.nonlinear_model != "none"

    def z_grid(self) -> np.ndarray:
        """Fixed redshift nodes: denser at low z where lensing kernels and chi change fast."""
        x = np.linspace(0.0, 1.0, self.n_z)
        return self.z_max * x**1.5

    def k_grid(self) -> np.ndarray:
        """Fixed log-spaced wavenumbers [1/Mpc]."""
        return np.geomspace(self.k_min, self.k_max, self.n_k)


#: The k_max [1/Mpc] of CAMB's transfer functions before the probes' requirements were read
#: (the reference of the accuracy tests, tests/test_requirements.py).
DEFAULT_K_MAX = 30.0
#: The smallest k_max [1/Mpc] of a table with the nonlinear spectrum, whatever the probes need
#: and at any redshift: halofit and HMcode take their nonlinear scale, effective slope and
#: curvature at each redshift from CAMB's linear P(k) up to k_max (CAMB itself warns below
#: 5/Mpc). At higher redshifts they need more: :data:`NONLINEAR_K_FLOOR`. (Until issue 15 this
#: floor was 10/Mpc for CAMB's own sigma8 integral, which set A_s; sigma8 is now fishcast's
#: quadrature, :func:`linear_sigma8`, with P(k) a power law beyond k_max: the linear P(k)
#: with A_s from sigma8 is within 2e-5 of the 30/Mpc table for k_max >= 4/Mpc, 3e-4 at
#: 3/Mpc, measured with CAMB 2.0.5 on the IST:F fiducial.)
MIN_K_MAX = 5.0
#: The smallest k_max [1/Mpc] of a nonlinear table by model and by the largest redshift of the
#: table: (z_max, k_max) nodes, ln k_max linear in z between them, :data:`MIN_K_MAX` below the
#: first, :data:`DEFAULT_K_MAX` above the last (not measured). Measured with CAMB 2.0.5 on the
#: IST:F fiducial (m_nu = 0.06 eV), tables on the reference's k nodes against k_max = 30/Mpc:
#: the first k_max at which P_nl at k <= k_max/3 (no extrapolation) stays within 1e-4 and
#: d ln P_nl/d n_s within 1e-3 at that redshift. Below it the errors grow fast:
#:
#: * takahashi: 4.1/Mpc is enough up to z = 2 (5e-6, 5e-6); at z = 2.6 5.1/Mpc (2e-5, 6e-4;
#:   4.1/Mpc: 3e-4, 7e-3); z = 3.27 8.8/Mpc (8e-6, 2e-4; 7.15/Mpc: 1e-4, 3e-3); z = 4 15/Mpc
#:   (4e-6, 8e-5; 12.4/Mpc: 4e-5, 2e-3; 10/Mpc: 4e-4, 1e-2);
#: * mead2020 (HMcode) needs more: z = 0.92 5.1/Mpc (4e-5, 9e-5); z = 1.41 7.2/Mpc (4e-5,
#:   3e-4); z = 1.98 8.8/Mpc (7e-5, 7e-4); z = 2.6 18/Mpc (6e-5, 2e-4; 15/Mpc: 7e-5, 2e-3). At
#:   z >= 3.27 it is not converged below 30/Mpc (25/Mpc: 1e-4, 4e-3 at z = 3.27; 9e-4, 1e-2
#:   at z = 4), nor, likely, at 30: the nodes there are the cheapest k_max measured within
#:   half the accuracy test's thresholds on LSST Y10 WL (z_max = 4; tests/test_requirements.py):
#:   21.4/Mpc (C_ell 1.6e-4, errors 2.4e-3; 15.3/Mpc: 6.2e-4, 2.6e-3; 25.3/Mpc: 6.8e-5,
#:   3.4e-3 -- the errors scatter, they do not converge, against the 30/Mpc reference).
#:
#: The Euclid IST:F recipes (takahashi, z_max = 3.0) get 7.06/Mpc from this table.
NONLINEAR_K_FLOOR = {
    "takahashi": ((2.0, MIN_K_MAX), (2.6, 5.1), (3.27, 8.8), (4.0, 15.3)),
    "mead2020": ((0.92, MIN_K_MAX), (1.41, 7.2), (1.98, 8.8), (2.6, 18.1), (3.27, 21.4), (4.0, 21.4)),
}
#: The smallest k_max [1/Mpc] when no probe uses the nonlinear spectrum (BAO-scale clustering
#: probes, which need k < 1/Mpc), whose P(k, z) table then keeps the nodes of the reference
#: table (:func:`reference_k_nodes`). Measured with CAMB 2.0.5 against k_max = 30/Mpc
#: (3-point stencils; tests/test_requirements.py checks the recipes at this value):
#:
#: * the BAO wiggles: CAMB's transfer sampling at 0.01-0.4/Mpc does not move with k_max (its
#:   optimized spacing is the same below 90/tau_rec ~ 0.3/Mpc for every k_max above that);
#:   fishcast's own table did: when its log-spaced nodes move, the bicubic spline of ln P
#:   between them changes d ln P/d Omega_m at the BAO scale by ~2e-3 (absolute), as much as
#:   300 against 1000 nodes. Keeping the reference nodes removes that;
#: * what remains moves with k_max as noise, not as a convergence. It was blamed on CAMB's
#:   sigma8 integral (A_s from sigma8, summed on CAMB's transfer nodes), now replaced by
#:   fishcast's quadrature (:func:`linear_sigma8`: d ln A_s/d h within 1.5e-5 for every
#:   k_max); the scatter stays: CAMB's transfer functions themselves (its time stepping starts
#:   earlier, its k sampling above 0.3/Mpc changes, for a larger k_max) move d ln P/d wa and
#:   d ln P/d Omega_b at the BAO scale. Re-measured with the quadrature (CAMB 2.0.5, 3-point
#:   stencils, the floor patched, against the 30/Mpc reference): the largest change of a
#:   marginalized error, DESI recipe 5.0e-3 (1.0/Mpc), 2.6e-3 (2.0), 5.4e-3 (3.1), 1.3e-3
#:   (5.1), 5.8e-3 (10), 9.3e-4 (15.3), 1.4e-3 (20.5) (wa, Omega_b or n_s); Euclid GCsp
#:   optimistic (which needs 10/Mpc itself, sigma_v) 6.3e-3 at 10/Mpc; the two-tracer toy
#:   (fixed cosmology) 1e-6 at all of them; signals within 2e-6 at all of them. Below 15/Mpc
#:   the scatter reaches the 0.5 % of the accuracy test, at 15/Mpc it is within half of it.
#:
#: A CAMB run at 15/Mpc costs ~0.7 of one at 30/Mpc (tests/benchmarks/bench_3x2pt.py prints
#: the ratio).
MIN_K_MAX_LINEAR = 15.0
#: CAMB's ``Accuracy.IntTolBoost`` when the user gives none (:func:`settings_for`): see the
#: module docstring, *ODE tolerance*.
DEFAULT_INT_TOL_BOOST = 0.3
#: The smallest z_max of the tables when no z_max is given (the probes may need more).
MIN_Z_MAX = 0.5



def settings_for(requirements: CosmologyRequirements, *, nonlinear_model: str = "takahashi",
                 k_max: float | None = None, z_max: float | None = None,
                 transfer_high_precision: bool | None = None, int_tol_boost: float | None = None,
                 **accuracy) -> CosmologySettings:
    """The settings the backend computes with, for probes with these (combined, see
    :func:`fishcast.probes.base.combined_requirements`) requirements.

    nonlinear_model: the survey's choice; ``none`` is used when no probe needs the nonlinear
        spectrum (CAMB is then not asked for it).
    k_max [1/Mpc]: the user's ``cosmology.accuracy.k_max`` (an override, even below what a
        probe asks: P(k) is extrapolated as a power law beyond it), else the largest
        ``requirements.k_max`` (CAMB computes what the probes need), and at least
        :func:`nonlinear_k_floor` of the model and z_max (halofit/HMcode read their nonlinear
        scale from the linear table), or :data:`MIN_K_MAX_LINEAR` when no probe needs the
        nonlinear spectrum; then (linear or nonlinear) raised to the next node
        of the reference table and ``n_k`` lowered to the nodes up to it (:func:`reference_k_nodes`: the
        table keeps the reference's nodes, ``n_k`` over [k_min, DEFAULT_K_MAX]).
    z_max: the user's, else ``requirements.z_max`` (at least :data:`MIN_Z_MAX`).
    transfer_high_precision: the user's ``cosmology.accuracy.transfer_high_precision``, else
        ``requirements.transfer_high_precision`` (any probe's need: every shipped probe keeps
        it, see the module docstring, *Transfer sampling*).
    int_tol_boost: the user's ``cosmology.accuracy.int_tol_boost``, else
        :data:`DEFAULT_INT_TOL_BOOST` at ``accuracy_boost`` 1 (the pair measured), CAMB's own
        1 at any other ``accuracy_boost`` (CAMB multiplies the two; a raised one asks for more
        accuracy, a lowered one already adds noise that the looser tolerance adds to). One
        value for every probe: measured, the tolerance moves P(k) by ~1e-6 whatever the
        probe (see the module docstring, *ODE tolerance*).
    accuracy: the other fields of :class:`CosmologySettings` (n_z, n_k, accuracy_boost, ...).
    The settings are recorded in the output (``/cosmology`` attributes).
    """
    model = nonlinear_model if requirements.nonlinear else "none"
    zmax = float(z_max) if z_max is not None else max(float(requirements.z_max), MIN_Z_MAX)
    floor = nonlinear_k_floor(model, zmax) if requirements.nonlinear else MIN_K_MAX_LINEAR
    kmax = float(k_max) if k_max is not None else max(floor, float(requirements.k_max))
    if k_max is None:  # linear and nonlinear tables alike keep the reference's nodes
        k_min = float(accuracy.get("k_min", CosmologySettings.k_min))
        n_k = int(accuracy.get("n_k", CosmologySettings.n_k))
        kmax, accuracy["n_k"] = reference_k_nodes(kmax, k_min, n_k)
    dense = (bool(requirements.transfer_high_precision) if transfer_high_precision is None
             else bool(transfer_high_precision))
    if int_tol_boost is None:  # the measured default, unless the user asks CAMB for more accuracy
        boost = float(accuracy.get("accuracy_boost", CosmologySettings.accuracy_boost))
        int_tol_boost = DEFAULT_INT_TOL_BOOST if boost == 1.0 else 1.0
    return CosmologySettings(nonlinear_model=model, k_max=kmax, z_max=zmax, transfer_high_precision=dense,
                             int_tol_boost=int_tol_boost, **accuracy)


def nonlinear_k_floor(nonlinear_model: str, z_max: float) -> float:
    """The smallest k_max [1/Mpc] of a table whose nonlinear spectrum (``nonlinear_model``)
    is computed up to redshift ``z_max``: :data:`NONLINEAR_K_FLOOR`, ln k_max linear in z
    between its nodes, :data:`MIN_K_MAX` below the first node (and for ``none``, a linear
    table of a nonlinear probe: nothing reads the table but the probe), :data:`DEFAULT_K_MAX`
    above the last (not measured there)."""
    nodes = NONLINEAR_K_FLOOR.get(nonlinear_model)
    if nodes is None:
        return MIN_K_MAX
    z, k = (np.array(c, dtype=float) for c in zip(*nodes))
    if z_max > z[-1] + 1e-9:
        return DEFAULT_K_MAX
    return max(MIN_K_MAX, float(np.exp(np.interp(z_max, z, np.log(k)))))


def reference_k_nodes(k_need: float, k_min: float, n_k: int) -> tuple[float, int]:
    """The k_max [1/Mpc] and number of nodes of a P(k, z) table that holds exactly the nodes
    of the reference table -- ``n_k`` log-spaced nodes from ``k_min`` to
    :data:`DEFAULT_K_MAX`, i.e. k_i = k_min r^i, r = (DEFAULT_K_MAX/k_min)^(1/(n_k - 1)) --
    up to the first node at or above ``k_need`` (continued beyond DEFAULT_K_MAX with the same
    spacing when ``k_need`` is larger). Used for every table whose k_max is derived from the
    probes' needs: the spline of ln P then interpolates (the BAO wiggles, the nonlinear
    spectrum's features) between the same nodes whatever k_max the probes need, so ``n_k``
    means the same density of nodes as before the requirements were read. With the nodes
    moving with k_max, d ln P/d h at the BAO scale moved by 3.5e-3 (linear) and up to 1.2e-2
    (mead2020) between k_max 25 and 30/Mpc, and the LSST Y10 3x2pt errors by 4 %; on the
    reference's nodes by < 5e-4 (measured with CAMB 2.0.5)."""
    dlnk = math.log(DEFAULT_K_MAX / k_min) / (n_k - 1)
    m = max(int(math.ceil(math.log(k_need / k_min) / dlnk - 1e-9)), 2)
    return k_min * math.exp(m * dlnk), m + 1


@dataclass(frozen=True, eq=False)
class CosmologyResult:
    """One cosmology, tabulated on fixed grids. See the module docstring for units.

    z: redshift nodes (:meth:`CosmologySettings.z_grid`); k [1/Mpc]: wavenumber nodes.
    pk_lin, pk_nl [Mpc^3]: linear and nonlinear total-matter P(k, z), shape (n_z, n_k).
    chi [Mpc]: comoving radial distance; hubble [km/s/Mpc]: H(z).
    growth (dimensionless): the total-matter linear growth factor D(z)/D(0), CAMB's
        sigma8(z)/sigma8(0) (R = 8 Mpc/h).
    growth_rate (dimensionless): f(z) of baryons + CDM, f sigma8_cb / sigma8_cb at R = 8 Mpc/h
        (:func:`cb_growth_rate`); with massive neutrinos not exactly d ln growth / d ln a
        (the total matter's).
    sigma8_z (dimensionless): total-matter sigma8 D(z).
    """

    params: Mapping[str, float]
    z: np.ndarray
    k: np.ndarray
    pk_lin: np.ndarray
    pk_nl: np.ndarray | None
    chi: np.ndarray
    hubble: np.ndarray
    growth: np.ndarray
    growth_rate: np.ndarray
    sigma8_z: np.ndarray
    derived: Mapping[str, float] = field(default_factory=dict)

    # --- scalars of the fishcast.probes.base.Cosmology protocol --------------------------
    @property
    def z_max(self) -> float:
        """Largest tabulated redshift."""
        return float(self.z[-1])

    @property
    def h(self) -> float:
        """H0 / (100 km/s/Mpc)."""
        return float(self.derived["h"])

    @property
    def H0(self) -> float:
        """Hubble constant [km/s/Mpc]."""
        return float(self.derived["H0"])

    @property
    def Omega_m(self) -> float:
        """Total matter density today (baryons + CDM + massive neutrinos)."""
        return float(self.derived["Omega_m"])

    @property
    def sigma8(self) -> float:
        """sigma8 at z = 0 (spheres of 8 Mpc/h, linear theory)."""
        return float(self.derived["sigma8"])

    @property
    def has_nonlinear(self) -> bool:
        """Whether the nonlinear P(k, z) was computed (settings.nonlinear_model != 'none')."""
        return self.pk_nl is not None

    # --- interpolation -------------------------------------------------------------------
    @cached_property
    def _lnpk_lin(self) -> RectBivariateSpline:
        return RectBivariateSpline(self.z, np.log(self.k), np.log(self.pk_lin), kx=3, ky=3)

    @cached_property
    def _lnpk_nl(self) -> RectBivariateSpline:
        if self.pk_nl is None:
            raise ComputationError("the nonlinear power spectrum was not computed for this cosmology")
        return RectBivariateSpline(self.z, np.log(self.k), np.log(self.pk_nl), kx=3, ky=3)

    def pk(self, z, k, nonlinear: bool = True) -> np.ndarray:
        """Matter power spectrum P(k, z) [Mpc^3] at k [1/Mpc]; z and k broadcast together.

        Bicubic spline of ln P in (z, ln k); beyond the tabulated k range a power law with the
        local logarithmic slope at the edge.

        When ``z`` has fewer values than the broadcast points (a Limber integral: each z node
        with one k per multipole), the spline's z direction is contracted once per value of
        ``z`` (:func:`fishcast.bspline.bicubic_shared_rows`): the same spline, equal to the
        point-by-point evaluation to rounding (1e-15 relative in P), several times faster.
        """
        spl = self._lnpk_nl if nonlinear else self._lnpk_lin
        z_in = np.asarray(z, dtype=float)
        z_b, k_b = np.broadcast_arrays(z_in, np.asarray(k, dtype=float))
        lnk = np.log(k_b).ravel()
        lo, hi = math.log(self.k[0]), math.log(self.k[-1])
        lnk_c = np.clip(lnk, lo, hi)
        if z_b.size and 4 * z_in.size <= z_b.size and spl.degrees == (3, 3):
            rows = np.broadcast_to(np.arange(z_in.size).reshape(z_in.shape), z_b.shape)
            tz, tk = spl.get_knots()
            out = bicubic_shared_rows(tz, tk, spl.get_coeffs(), np.clip(z_in.ravel(), self.z[0], self.z[-1]),
                                      lnk_c, rows)
        else:
            out = spl.ev(np.clip(z_b, self.z[0], self.z[-1]).ravel(), lnk_c)
        outside = np.flatnonzero(lnk != lnk_c)
        if outside.size:  # the power law beyond the table, with the slope at its edge
            zo = np.clip(z_b.ravel()[outside], self.z[0], self.z[-1])
            out[outside] += spl.ev(zo, lnk_c[outside], dy=1) * (lnk[outside] - lnk_c[outside])
        return np.exp(out).reshape(z_b.shape)

    def pk_h(self, z, k_h, nonlinear: bool = False) -> np.ndarray:
        """P(k, z) [(Mpc/h)^3] at k_h [h/Mpc] (the units of clustering probes)."""
        h = self.derived["h"]
        return self.pk(z, np.asarray(k_h) * h, nonlinear=nonlinear) * h**3

    @cached_property
    def _background(self) -> dict[str, CubicSpline]:
        return {
            "chi": CubicSpline(self.z, self.chi),
            "hubble": CubicSpline(self.z, self.hubble),
            "growth": CubicSpline(self.z, self.growth),
            "growth_rate": CubicSpline(self.z, self.growth_rate),
        }

    def chi_of(self, z) -> np.ndarray:
        """Comoving radial distance [Mpc]."""
        return self._background["chi"](z)

    def hubble_of(self, z) -> np.ndarray:
        """Hubble rate H(z) [km/s/Mpc]."""
        return self._background["hubble"](z)

    def growth_of(self, z) -> np.ndarray:
        """Linear growth factor of total matter D(z)/D(0) (dimensionless; CAMB's
        sigma8(z)/sigma8(0)), the amplitude of :meth:`pk`: P_lin(k, z) ~ D(z)^2 P_lin(k, 0) on
        scales where the growth is scale-independent."""
        return self._background["growth"](z)

    def growth_rate_of(self, z) -> np.ndarray:
        """Linear growth rate of baryons + CDM, f(z) = d ln D_cb / d ln a (dimensionless): the
        velocity-density f sigma8_cb / sigma8_cb at R = 8 Mpc/h (:func:`cb_growth_rate`), the
        f of the Kaiser factor of a tracer of baryons + CDM. Within 1.5e-4 of the
        scale-independent growth equation sourced by baryons + CDM (CLASS's convention) at the
        IST:F fiducial; 0.42-0.44 % below CAMB's f sigma8 over the total-matter sigma8 (the
        definition before cache scheme 3) at m_nu = 0.06 eV; equal to it without massive
        neutrinos."""
        return self._background["growth_rate"](z)

    # --- storage -------------------------------------------------------------------------
    ARRAYS = ("z", "k", "pk_lin", "pk_nl", "chi", "hubble", "growth", "growth_rate", "sigma8_z")

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (for the on-disk cache); ``params`` and ``derived`` as JSON bytes."""
        out = {name: getattr(self, name) for name in self.ARRAYS if getattr(self, name) is not None}
        out["params_json"] = np.frombuffer(json.dumps(dict(self.params), sort_keys=True).encode(), dtype=np.uint8)
        out["derived_json"] = np.frombuffer(json.dumps(dict(self.derived), sort_keys=True).encode(), dtype=np.uint8)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "CosmologyResult":
        kw = {name: np.asarray(arrays[name]) if name in arrays else None for name in cls.ARRAYS}
        kw["params"] = json.loads(bytes(np.asarray(arrays["params_json"], dtype=np.uint8)).decode())
        kw["derived"] = json.loads(bytes(np.asarray(arrays["derived_json"], dtype=np.uint8)).decode())
        return cls(**kw)


# ---------------------------------------------------------------------------------------
# CAMB
# ---------------------------------------------------------------------------------------

_BOLTZMANN_CALLS = 0
_TRANSFER_REUSES = 0


def boltzmann_calls() -> int:
    """Number of CAMB transfer-function (Boltzmann) runs made by this process so far, or on
    its behalf by worker processes (see :func:`count_worker_calls`)."""
    return _BOLTZMANN_CALLS


def count_worker_calls(n: int) -> None:
    """Add ``n`` Boltzmann runs that worker processes made for this process (their own
    counters are not this one), so that :func:`boltzmann_calls` counts a run's CAMB cost
    whether it ran here or in a pool."""
    global _BOLTZMANN_CALLS
    _BOLTZMANN_CALLS += int(n)


def transfer_reuses() -> int:
    """Number of points this process computed from a CAMB transfer object held by the active
    :func:`transfer_store` since an earlier call (no Boltzmann run: only the primordial
    spectrum, sigma8 and the nonlinear correction were computed again)."""
    return _TRANSFER_REUSES


class TransferStore:
    """CAMB transfer objects (``CAMBdata`` after ``get_transfer_functions``) held in this
    process, keyed by ``(settings, transfer_key)``: a point with the same settings and the
    same non-primordial parameters needs no Boltzmann run of its own. Bounded: the keys in
    ``keep`` (e.g. the fiducial's) are held once computed; at most ``capacity`` others, the
    most recently used. A held object is ~a few MB (n_z x CAMB's k nodes x the transfer
    variables).

    Reusing an object gives bit-identical results (checked with CAMB 2.0.5 on the Euclid
    IST:F fiducial: a point computed from a transfer object that already served other
    primordial parameters equals, array for array, the same point from a fresh run;
    tests/test_exec_pool.py checks it)."""

    def __init__(self, capacity: int = 2, keep: Iterable[tuple] = ()):
        self.capacity = max(0, int(capacity))
        self.keep: set[tuple] = set(keep)
        self._held: OrderedDict[tuple, object] = OrderedDict()

    def get(self, key: tuple):
        data = self._held.get(key)
        if data is not None:
            self._held.move_to_end(key)
        return data

    def put(self, key: tuple, data) -> None:
        self._held[key] = data
        self._held.move_to_end(key)
        others = [k for k in self._held if k not in self.keep]
        for k in others[:max(0, len(others) - self.capacity)]:
            del self._held[k]

    def holds(self, key: tuple) -> bool:
        return key in self._held

    def wants(self, key: tuple) -> bool:
        """Whether ``key`` is held, or is one the store keeps once computed."""
        return key in self._held or key in self.keep

    def __len__(self) -> int:
        return len(self._held)


_STORE: TransferStore | None = None


def store_key(params: Mapping[str, float], settings: CosmologySettings) -> tuple:
    """The key of a point's transfer object: the settings and :func:`transfer_key`."""
    return (settings, transfer_key(full_params(params)))


@contextlib.contextmanager
def transfer_store(keep: Iterable[tuple[Mapping[str, float], CosmologySettings]] = (),
                   capacity: int = 2) -> Iterator[TransferStore]:
    """Hold CAMB transfer objects in this process while the block runs (see
    :class:`TransferStore`): :func:`compute_many` reads and fills it. ``keep``: (point,
    settings) pairs whose transfer objects are kept once computed (the fiducial's). Nested,
    the outer store is used (with ``keep`` added). Released (memory freed) at the end."""
    global _STORE
    keys = [store_key(p, s) for p, s in keep]
    if _STORE is not None:
        _STORE.keep.update(keys)
        yield _STORE
        return
    _STORE = TransferStore(capacity, keys)
    try:
        yield _STORE
    finally:
        _STORE = None


def active_store() -> TransferStore | None:
    """The store of the enclosing :func:`transfer_store`, or None."""
    return _STORE


def camb_version() -> str:
    import camb

    return str(camb.__version__)


def full_params(params: Mapping[str, float]) -> dict[str, float]:
    """Canonical cosmological parameters with the documented defaults filled in."""
    out = dict(COSMOLOGICAL_DEFAULTS)
    out.update({k: float(v) for k, v in params.items()})
    return out


#: Version of what a cached evaluation holds, part of every :func:`point_key`: raised whenever
#: the same inputs give different results, so that entries of an older fishcast are not reused.
#: 2: sigma8 (and A_s from a requested sigma8) by fishcast's own quadrature;
#: 3: ``growth_rate`` is the baryon + CDM growth rate (:func:`cb_growth_rate`).
CACHE_SCHEME = 3


def point_key(params: Mapping[str, float], settings: CosmologySettings) -> str:
    """Content address of one evaluation: the exact inputs, settings and CAMB version."""
    payload = {
        "params": {k: float(v).hex() for k, v in sorted(full_params(params).items())},
        "settings": asdict(settings),
        "camb": camb_version(),
        "scheme": CACHE_SCHEME,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def describe_point(params: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.6g}" for k, v in sorted(params.items()))


@lru_cache(maxsize=256)
def neutrino_omnuh2(m_nu: float) -> float:
    """CAMB's Omega_nu h^2 for a sum of masses m_nu [eV] (one massive eigenstate). Kept per
    m_nu (a pure function of it): every point asks for it twice, at 2 ms a CAMBparams."""
    import camb

    pars = camb.CAMBparams()
    pars.set_cosmology(H0=70.0, ombh2=0.022, omch2=0.12, mnu=m_nu, num_massive_neutrinos=1 if m_nu > 0 else 0)
    return float(pars.omnuh2)


def domain_violation(params: Mapping[str, float]) -> str | None:
    """Why the backend cannot run at ``params`` (canonical cosmological parameters; the
    documented defaults fill the rest), or None when it can. These are the joint limits of
    the model as CAMB implements it, beyond each parameter's own domain in the registry:

    - m_nu >= 0 [eV];
    - omch2 = Omega_m h^2 - ombh2 - omnuh2 > 0 (Omega_m must exceed Omega_b + Omega_nu),
      ombh2 > 0 and H0 = 100 h > 0 [km/s/Mpc];
    - w0 + wa <= 0: CAMB's PPF dark energy refuses w(a -> 0) = w0 + wa > 0 (w > 0 at high
      redshift; CAMB 2.0.5, ``DarkEnergyEqnOfState.validate_params``).

    Costs no Boltzmann run (only CAMB's neutrino density for m_nu)."""
    from . import camb_ranges

    p = full_params(params)
    if p["m_nu"] < 0:
        return f"m_nu = {p['m_nu']:.4g} eV < 0"
    bg = camb_background_inputs(p, neutrino_omnuh2(p["m_nu"]))
    if bg["omch2"] <= 0 or bg["ombh2"] <= 0 or bg["H0"] <= 0:
        return ("Omega_m must exceed Omega_b + Omega_nu and Omega_b, h must be positive "
                f"(omch2={bg['omch2']:.4g}, ombh2={bg['ombh2']:.4g}, H0={bg['H0']:.4g})")
    if p["w0"] + p["wa"] > 0:
        return (f"w0 + wa = {p['w0'] + p['wa']:.4g} > 0: CAMB's PPF dark energy needs w0 + wa <= 0 "
                "(w > 0 at high redshift)")
    outside = camb_ranges.problems(p)  # the ranges fishcast lets through to CAMB at all
    if outside:
        return "; ".join(m for _, m in outside)
    return None


def _camb_params(p: Mapping[str, float], settings: CosmologySettings, As: float):
    import camb

    from . import camb_ranges

    camb_ranges.check(p, "the point")  # last guard: a bad input must never reach CAMB's Fortran
    why = domain_violation(p)
    if why is not None:
        raise ComputationError(f"unphysical point: {why} (point: {describe_point(p)})")
    bg = camb_background_inputs(p, neutrino_omnuh2(p["m_nu"]))
    pars = camb.CAMBparams()
    pars.set_cosmology(
        H0=bg["H0"], ombh2=bg["ombh2"], omch2=bg["omch2"], mnu=bg["mnu"], omk=bg["omk"],
        num_massive_neutrinos=1 if bg["mnu"] > 0 else 0,
    )
    pars.set_dark_energy(w=p["w0"], wa=p["wa"], dark_energy_model="ppf")
    pars.InitPower.set_params(As=As, ns=p["n_s"], pivot_scalar=K_PIVOT)
    zs = settings.z_grid()[::-1].copy()  # CAMB wants decreasing redshift
    pars.set_matter_power(redshifts=list(zs), kmax=settings.k_max * 1.05, nonlinear=settings.nonlinear,
                          k_per_logint=settings.k_per_logint or None, silent=True)
    pars.Transfer.high_precision = settings.transfer_high_precision  # set_matter_power switches it on
    if settings.nonlinear_model == "takahashi":
        pars.NonLinearModel.set_params(halofit_version="takahashi")
    elif settings.nonlinear_model == "mead2020":
        pars.NonLinearModel.set_params(halofit_version="mead2020")
    pars.set_accuracy(AccuracyBoost=settings.accuracy_boost, lAccuracyBoost=settings.l_accuracy_boost)
    pars.Accuracy.IntTolBoost = settings.int_tol_boost
    pars.WantCls = False
    pars.Want_CMB = False
    pars.DoLensing = False
    pars.WantTransfer = True
    return pars


def _primordial(p: Mapping[str, float]) -> tuple[float | None, float | None]:
    """(A_s, sigma8): exactly one is given."""
    As = p.get("A_s")
    s8 = p.get("sigma8")
    if (As is None) == (s8 is None):
        raise InputError("exactly one of sigma8 and A_s must be given")
    return As, s8


def transfer_key(p: Mapping[str, float]) -> tuple:
    return tuple(sorted((k, float(v)) for k, v in p.items() if k not in PRIMORDIAL))


def compute(params: Mapping[str, float], settings: CosmologySettings) -> CosmologyResult:
    """One CAMB evaluation at a point (canonical cosmological parameters)."""
    return compute_many([params], settings)[0]


def compute_many(
    points: Sequence[Mapping[str, float]],
    settings: CosmologySettings,
    on_done: Callable[[int, CosmologyResult], None] | None = None,
) -> list[CosmologyResult]:
    """Evaluate several points; points differing only in (n_s, A_s, sigma8) share one
    Boltzmann run, and none is made for those whose transfer object the active
    :func:`transfer_store` holds (counted by :func:`transfer_reuses`). ``on_done(i,
    result)`` is called as soon as point ``i`` is finished (so a cache can keep it even if a
    later point fails)."""
    import camb

    global _BOLTZMANN_CALLS, _TRANSFER_REUSES
    full = [full_params(p) for p in points]
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(full):
        groups.setdefault(transfer_key(p), []).append(i)
    out: list[CosmologyResult | None] = [None] * len(full)
    store = _STORE
    for tkey, idx in groups.items():
        p0 = full[idx[0]]
        data = store.get((settings, tkey)) if store is not None else None
        if data is not None:
            _TRANSFER_REUSES += len(idx)
        else:
            As0, _ = _primordial(p0)
            try:
                pars = _camb_params(p0, settings, As0 if As0 is not None else _AS_REFERENCE)
                _BOLTZMANN_CALLS += 1
                data = camb.get_transfer_functions(pars)
            except ComputationError:
                raise
            except Exception as exc:  # CAMB raises CAMBError, CAMBValueError, ... and ValueError
                raise ComputationError(f"CAMB failed at the point {describe_point(p0)}: {exc}") from exc
            if store is not None:
                store.put((settings, tkey), data)
        for i in idx:
            try:
                out[i] = _spectra(full[i], data, settings)
            except ComputationError:
                raise
            except Exception as exc:
                raise ComputationError(f"CAMB failed at the point {describe_point(full[i])}: {exc}") from exc
            if on_done is not None:
                on_done(i, out[i])
    return out  # type: ignore[return-value]


def tophat_window(x) -> np.ndarray:
    """Fourier transform of a spherical top hat, W(x) = 3 (sin x - x cos x) / x^3, x = k R
    (dimensionless); its series 1 - x^2/10 + x^4/280 below x = 1e-2."""
    x = np.asarray(x, dtype=float)
    small = x < 1e-2
    xs = np.where(small, 1.0, x)
    big = 3.0 * (np.sin(xs) - xs * np.cos(xs)) / xs**3
    return np.where(small, 1.0 - x**2 / 10.0 + x**4 / 280.0, big)


def linear_sigma8(k: np.ndarray, pk: np.ndarray, h: float) -> float:
    """sigma8: the rms linear density contrast in spheres of R = 8 Mpc/h (dimensionless),

        sigma8^2 = Int dk k^2 P(k) W(kR)^2 / (2 pi^2) = Int d ln x  k^3 P(k) W(x)^2 / (2 pi^2),

    with x = k R and W the top hat (:func:`tophat_window`), from a linear P(k) [Mpc^3]
    tabulated at increasing k [1/Mpc] (any spacing: CAMB's transfer-function nodes).

    ln P is a cubic spline in ln k between the nodes, a power law with the end slopes beyond
    them; the integral is Simpson's rule on fixed nodes in x (:data:`_SIGMA8_LNX`: 1e-3 <= x
    <= 500, 200 per e-fold), which do not move with h, so that sigma8 is a smooth function of
    the parameters. CAMB's own sigma8 sums the integrand on its transfer nodes (a few per
    e-fold above 0.3/Mpc), where W(kR)^2 oscillates with a period that moves with h: measured
    with CAMB 2.0.5 on the IST:F fiducial, d ln A_s/d h (h +- 1 %) then jumps by 2.5e-3 between
    k_max = 10, 20, 25 and 30/Mpc (-3.4222, -3.4243, -3.4247, -3.4231), and CAMB's sigma8 is
    1.6e-4 below its converged value (k_per_logint = 30). This quadrature, on CAMB's default
    nodes: within 6e-7 of that converged value, d ln A_s/d h = -3.42059 +- 1.5e-5 for every
    k_max (converged: -3.42072). The quadrature itself is within 1e-9 of sigma8 (against 1600
    nodes per e-fold, and x up to 1e4), so the accuracy is that of CAMB's P(k) and the spline.
    """
    k = np.asarray(k, dtype=float)
    lnk, lnp = np.log(k), np.log(np.asarray(pk, dtype=float))
    spline = CubicSpline(lnk, lnp)
    lnk_q = _SIGMA8_LNX - math.log(8.0 / h)  # k = x / R [1/Mpc]
    inside = np.clip(lnk_q, lnk[0], lnk[-1])
    lnp_q = spline(inside) + np.where(lnk_q < lnk[0], spline(lnk[0], 1) * (lnk_q - lnk[0]), 0.0) \
        + np.where(lnk_q > lnk[-1], spline(lnk[-1], 1) * (lnk_q - lnk[-1]), 0.0)
    f = np.exp(3.0 * lnk_q + lnp_q) * tophat_window(np.exp(_SIGMA8_LNX)) ** 2 / (2.0 * math.pi**2)
    return float(math.sqrt(simpson(f, x=_SIGMA8_LNX)))


def _camb_linear_sigma8(data) -> float:
    """:func:`linear_sigma8` of CAMB's linear P(k, z = 0) (total matter, on its transfer nodes)
    for the primordial spectrum of the last ``power_spectra_from_transfer``."""
    k, z, pk = data.get_linear_matter_power_spectrum(hubble_units=False, k_hunit=False, have_power_spectra=True)
    i0 = int(np.argmin(np.abs(z)))
    if abs(z[i0]) > 1e-12:
        raise ComputationError(f"CAMB's matter power has no z = 0 node (lowest z = {z[i0]:g})")
    return linear_sigma8(k, pk[i0], data.Params.H0 / 100.0)


def cb_growth_rate(data) -> np.ndarray:
    """The linear growth rate of baryons + CDM, f(z) (dimensionless), at the redshifts of
    CAMB's matter power (increasing z), from CAMB results with power spectra computed.

        f = f sigma8_cb / sigma8_cb,     f sigma8_cb = sigma_vd(8 Mpc/h)^2 / sigma_dd(8 Mpc/h),

    CAMB's ``get_fsigma8``, the velocity-density definition of the Planck 2015 parameter paper
    (d = delta of baryons + CDM, v = their Newtonian-gauge velocity divergence): for a
    scale-independent growth it is f sigma8 exactly. sigma8_cb is taken in the numerics of
    that f sigma8 -- CAMB's sigma8 (``get_sigma8``, total matter, summed on the transfer
    nodes) times the ratio sigma8_cb / sigma8 of ``get_sigmaR(8, var 'delta_nonu')`` and
    ``get_sigmaR(8, var 'delta_tot')`` (both CAMB's spline quadrature) -- so that only
    same-quadrature ratios enter. ``get_sigmaR`` alone sits 1.8e-4 above ``get_sigma8`` by
    its quadrature, and that offset moves with h (the window's oscillations move across the
    transfer nodes): f sigma8 / sigma8_cb(get_sigmaR) gave d ln f/d h = 0.0166 with 1 %
    steps and 0.0097 with 0.5 % steps (CAMB 2.0.5, IST:F fiducial, z = 1); this ratio
    0.00854 at every step from 0.25 % to 2 %, and the growth equation 0.0089.

    Without massive neutrinos delta_nonu is delta_tot and f is CAMB's f sigma8 / sigma8.
    """
    s8 = np.asarray(data.get_sigma8(), dtype=float)
    fs8 = np.asarray(data.get_fsigma8(), dtype=float)
    tot = np.ravel(data.get_sigmaR(8.0, var1="delta_tot", var2="delta_tot", hubble_units=True))
    cb = np.ravel(data.get_sigmaR(8.0, var1="delta_nonu", var2="delta_nonu", hubble_units=True))
    return (fs8 / (s8 * (cb / tot)))[::-1]  # CAMB orders by decreasing z


def _spectra(p: Mapping[str, float], data, settings: CosmologySettings) -> CosmologyResult:
    import camb

    As, s8 = _primordial(p)
    ip = camb.InitialPowerLaw()
    if As is None:
        ip.set_params(As=_AS_REFERENCE, ns=p["n_s"], pivot_scalar=K_PIVOT)
        data.power_spectra_from_transfer(ip, silent=True)
        As = _AS_REFERENCE * (s8 / _camb_linear_sigma8(data)) ** 2
        sigma8 = float(s8)  # the linear sigma8 scales as sqrt(A_s): exactly the requested value
    else:
        sigma8 = None
    ip.set_params(As=As, ns=p["n_s"], pivot_scalar=K_PIVOT)
    data.power_spectra_from_transfer(ip, silent=True)
    if sigma8 is None:
        sigma8 = _camb_linear_sigma8(data)

    z = settings.z_grid()
    k = settings.k_grid()
    lin = data.get_matter_power_interpolator(nonlinear=False, hubble_units=False, k_hunit=False,
                                             extrap_kmax=settings.k_max * 2, log_interp=True)
    pk_lin = lin.P(z, k)
    pk_nl = None
    if settings.nonlinear:
        nl = data.get_matter_power_interpolator(nonlinear=True, hubble_units=False, k_hunit=False,
                                                extrap_kmax=settings.k_max * 2, log_interp=True)
        pk_nl = nl.P(z, k)
    s8z = np.asarray(data.get_sigma8())[::-1]  # CAMB orders by decreasing z
    growth = s8z / s8z[0]
    params = data.Params
    h = params.H0 / 100.0
    res = CosmologyResult(
        params={k_: float(v) for k_, v in p.items()},
        z=z,
        k=k,
        pk_lin=np.ascontiguousarray(pk_lin),
        pk_nl=None if pk_nl is None else np.ascontiguousarray(pk_nl),
        chi=np.asarray(data.comoving_radial_distance(z)),
        hubble=np.asarray(data.hubble_parameter(z)),
        growth=growth,
        growth_rate=cb_growth_rate(data),
        sigma8_z=sigma8 * growth,  # CAMB's growth, normalized by the smooth sigma8
        derived={
            "h": h,
            "H0": float(params.H0),
            "ombh2": float(params.ombh2),
            "omch2": float(params.omch2),
            "omnuh2": float(params.omnuh2),
            "Omega_m": float(params.omegam),
            "Omega_b": float(params.ombh2) / h**2,
            "Omega_nu": float(params.omnuh2) / h**2,
            "Omega_k": float(params.omk),
            "A_s": float(As),
            "n_s": float(p["n_s"]),
            "sigma8": sigma8,
        },
    )
    for name in ("pk_lin", "pk_nl", "chi", "hubble", "growth", "growth_rate"):
        arr = getattr(res, name)
        if arr is not None and not np.all(np.isfinite(arr)):
            raise ComputationError(f"CAMB returned non-finite {name} at the point {describe_point(p)}")
    if np.any(res.pk_lin <= 0) or (res.pk_nl is not None and np.any(res.pk_nl <= 0)):
        raise ComputationError(f"CAMB returned a non-positive power spectrum at the point {describe_point(p)}")
    return res
