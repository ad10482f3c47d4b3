"""The Euclid IST:F spectroscopic galaxy-clustering recipes (recipes/euclid-gcsp-*.yaml), run
with their physics as shipped and the FAST numerical reductions below (one fixed 1 % step,
3-point stencil, a smaller CAMB table), against the official IST:F Fisher matrices. How far
FAST is from the recipes' numerics and from converged numerics: "Numerical convergence", at
the end.

Reference: Euclid Collaboration: Blanchard et al. 2020, A&A 642, A191 (IST:F), section 3.2;
official matrices `EuclidISTF_GCsp_w0wa_flat_pessimistic.txt` and
`EuclidISTF_GCsp_w0wa_flat_optimistic.txt` (with their `.paramnames`) from the public
repository euclidist-forecasting/fisher_for_public (All_Results), copied to tests/data/istf/.
They hold the seven cosmological parameters with the per-shell nuisances marginalized; ours
are marginalized over ours (ln b, P_s, and pessimistic sv_survey, sp_survey) before comparing.

What IST:F did, and where it was read (settings read, no code copied). The paper's section
3.2 itself could not be read here (the stored copies of the A&A and arXiv pages hold the
front matter only), so the settings come from public codes that reproduce IST:F GCsp and
say so:

* MontePython's `euclid_spectroscopic` likelihood ("developed to match IST:Fisher recipe",
  "validated against CosmicFish and IST:Fisher in 2303.09451"; files __init__.py,
  euclid_spectroscopic.data.pessimistic / .optimistic, read in the copy
  sambit-giri/montepython_bcm): nuisances per shell ln(b sigma8) and P_shot (fiducial 0) in
  both settings, which differ by k_max only (0.25 / 0.30 h/Mpc, k_min 0.001 h/Mpc); sigma_v
  = sigma_p = sqrt(Int P_lin dk / 6 pi^2) of the fiducial, fixed ('predicted'; sigma_v,
  sigma_p free per shell is their separate 'superpessimistic' setting); f held at the
  fiducial inside the Fingers of God and the de-wiggling, f of the cosmology at hand in the
  Kaiser factor; no-wiggle spectrum a Savitzky-Golay filter of ln P (width 1.36 in ln k,
  order 3, "same dewiggle method as the Euclid Collaboration"); shell volumes 7.94, 9.15,
  10.05, 16.22 x 10^9 (Mpc/h)^3 (fishcast's fiducial volumes agree within 0.1 %); mode
  weight V k^2 dk dmu / (8 pi^2), mu in [-1, 1]. A comment there says that to "reproduce the
  Euclid IST:F wrong results with the h-bug" the true k is rescaled by h/h_fid: that is
  fishcast's `observed_h: varying` (k range fixed in h/Mpc of the cosmology at hand, P
  converted to the fiducial's (Mpc/h)^3).
* cosmicfishpie (S. Casas et al.; configs Euclid-Spectroscopic-ISTF-Pessimistic.yaml and
  ...-Pessimistic-sigma_pv.yaml, LSSsurvey/spectro_obs.py): ln b and P_s per shell, k_max
  0.25, sigma_z 0.001; the sigma_pv variant (used in its IST:F comparison notebook) adds
  sigma_p, sigma_v per shell; the k range in h/Mpc rescaled by h/h_fid (IST:F's convention).
* FisherMathica (snwnde/fishermathica, an IST:F GCsp code; Examples/LCDM-limit/
  4-GC-FisherRun.m and the function docs): shell parameters ln D_A, ln H, ln f sigma8,
  ln b sigma8, P_s with the shape parameters, fully numerical derivatives, ln b sigma8 and
  P_s marginalized; sigma_p, sigma_v without explicit dependence on the cosmology; and
  sigma_p computed at the survey's MEAN redshift "to match the recipe": one value for the
  whole survey.
* fisher_for_public's README: the GC inputs are P(k, z)/sigma8^2(z), f(z), D(z) at z = 1.0,
  1.2, 1.4, 1.65, with relative parameter steps of 1 %.

Not confirmed by any source: that IST:F's pessimistic matrix marginalizes sigma_v, sigma_p
(MontePython's pessimistic keeps them fixed). The official matrices require it: with them
fixed (and P_s free) every pessimistic error is 2.6-5.6x smaller than IST:F's (FoM 71
against 14.5).

What is reproduced, measured with these recipes (ratio fishcast / IST:F of the 1-sigma
errors; "conditional": nuisances marginalized, the other cosmological parameters fixed):

* optimistic (`observed_h: varying`, sigma_v = sigma_p from the linear P at each point, ln b
  nuisances, no residual shot noise): every marginalized error within 9 % (0.91-1.03 at
  converged numerics) and FoM(w0, wa) 1.08x IST:F's 55.1 (1.09x at AccuracyBoost 1) -- the
  issue's 10 % target, asserted. This structure
  is inferred from the matrix, not from a source: its conditional errors differ by up to 2x
  (n_s 0.53, sigma8 0.85). With the structure of the codes above (sigma_v, sigma_p fixed,
  P_s free) the marginalized errors are 0.61-1.43x IST:F's (FoM 88.8).
* pessimistic (`observed_h: varying`, ln b and P_s per shell, `dispersions: survey`: one
  sigma_v = sigma_p for every shell, the fiducial's at the survey's mean redshift 1.31,
  times two free ratios sv_survey, sp_survey -- FisherMathica's single survey sigma_p,
  free): conditional errors within 4 % (0.96-1.01). Marginalized, at converged CAMB accuracy
  (AccuracyBoost 3, "Numerical convergence" below): Omega_m 0.95, Omega_b 0.96, w0 0.93,
  wa 0.95, h 1.08, n_s 0.94-0.95, sigma8 0.913-0.919; FoM(w0, wa) 0.98-0.99x IST:F's --
  within the issue's 10 %, asserted (this test: sigma8 0.917). With CAMB's AccuracyBoost 1
  (fishcast's default; the recipe now sets 2) sigma8 is 0.878-0.900 and w0 0.89-0.92,
  depending on the derivative step: the numbers below marked FAST were measured so (sigma8 0.898), they
  compare ingredients on the same CAMB points and stand as differences. The official
  matrix is nearly degenerate (correlations up to 0.99) and its sigma8 row in correlation
  form differs from ours by 0.08 (w0), 0.06 (wa), 0.04 (Omega_m). IST:F's own growth and
  no-wiggle inputs (its CAMB f(z), D(z) and P_nw files) sit behind an external link, not in
  the public repository. Every sourced alternative for them was measured (the growth budget
  below): none brings sigma(sigma8) within 10 % at AccuracyBoost 1. The growth rate of
  baryons + CDM (issue 11, adopted) moved it from 0.880 to 0.898 there.

Which ingredient moves what (pessimistic, the same CAMB points, ratios as above; measured
with the previous growth rate, sigma8 0.880, see the growth budget):

* the dispersions: fixed (with P_s free) 0.18-0.39, FoM 71.2; free per shell (sv_<i>,
  sp_<i>, the recipe before) 1.02-1.21, FoM 6.7 (conditional within 4 % too); one free
  ratio for all shells but each shell's own fiducial value 0.84-0.99 (h 0.84), FoM 16.7;
  `survey` (the recipe) 0.88-1.07, FoM 14.5;
* the residual shot noise P_s per shell: fixed at 0, errors 0.47-0.80, FoM 24.8, and the
  conditional errors drift by up to 1.8x -- P_s is needed, as in every code above;
* the h-units convention (`observed_h`): with the survey's own frame ('fiducial', fishcast's
  default) sigma(h) is 4.5x larger (12x on the optimistic recipe); the others move by up to
  50 %;
* f held at its fiducial inside the damping terms (MontePython): 0.83-1.07, FoM 17.1;
* the no-wiggle spectrum: the Savitzky-Golay filter of ln P (width 1.36 in ln k, order 3)
  instead of fishcast's Eisenstein-Hu shape x Gaussian-smoothed ratio (width 0.25 in ln k):
  0.88-1.02, FoM 14.7 (sigma8 unchanged). The Gaussian width moves sigma8: 0.5 gives
  0.84-1.07 (sigma8 0.84), 0.1 gives 0.91-1.10 (sigma8 0.91, h 1.10, FoM 14.0), every error
  within 10 % -- not adopted: no source gives that width (it leaves a good part of the BAO
  wiggles in P_nw), and picking it to pass would be a fit, not a reproduction;
* quadrature (n_k 120 -> 400, n_mu 12 -> 24): < 0.1 %; the derivative step and the CAMB
  accuracy: up to 2-3 % on the pessimistic errors (not < 0.5 % as measured before on one
  step), see "Numerical convergence" below;
* the CAMB table: 300 log-spaced k nodes (the default) and 1000 agree within the step scatter
  below; 150 under-resolve the BAO wiggles and move the pessimistic errors by 20 %.

The growth budget (issue 11, the last 2 %): sigma(sigma8) of the pessimistic recipe against
IST:F's, each alternative swapped into the recipe as shipped, on the same CAMB points (FAST
with AccuracyBoost 1, as this test ran before the convergence study; the other six errors and FoM(w0, wa) are given where they move by more than 1 %):

* the recipe (adopted, issue 11; cache scheme 3): f of baryons + CDM, CAMB's velocity-density
  f sigma8_cb over sigma8_cb (fishcast.cosmology.cb_growth_rate), the consistent f of a
  tracer of baryons + CDM (Castorina et al. 2015; MontePython's euclid_spectroscopic with
  `use_tracer: clustering`), within 1.5e-4 of the growth equation sourced by baryons + CDM
  as CLASS's background.c solves it (tests/test_cosmology.py,
  test_growth_rate_against_the_growth_equation): 0.898; the other errors 0.91-1.07
  (h 1.073), FoM 14.46 (1.00); the optimistic recipe stays within 10 % (sigma8 1.004, FoM
  59.9). With the Savitzky-Golay no-wiggle spectrum as well: 0.897 (measured with the
  growth equation's f, equal to this one within 1.5e-4);
* the previous recipe: CAMB's f sigma8 over the total-matter sigma8, 0.42-0.44 % above the
  baryon + CDM f at m_nu = 0.06 eV: 0.880 (optimistic sigma8 0.994, FoM 60.0); the
  alternatives below were measured against it (0.880);
* f = d ln D / d ln a of the scale-independent growth equation D'' + (2 + d ln H / d ln a) D'
  = 3/2 Omega_src(a) D with CAMB's H(z), the source all matter (neutrinos included): 0.886;
* the tracer's spectrum P_cb (CAMB's delta_nonu: baryons + CDM; sigma8 still that of all
  matter, sigma_v from P_cb too) instead of the total-matter P_m, with the f above: 0.8835,
  the other errors within 0.5 %, FoM 14.44; optimistic sigma8 0.995 (-1 %), the others within
  0.5 %. Not adopted: MontePython's euclid_spectroscopic takes P_cb (`use_tracer:
  clustering`: the bias defined against P_cb, with f_cb and sigma8_cb(z) in the Kaiser
  term, P_m for sigma_v), cosmicfishpie's Euclid validation settings take P_m
  (`GCsp_Tracer: matter`, its default), IST:F's own choice could not be read here, and it
  moves sigma(sigma8) away from IST:F's;
* the growth index f = Omega_m(z)^0.545 (cosmicfishpie's gamma option, Linder 2005): 0.837
  (h 1.108, FoM 14.1);
* f and D from D(z, k) = sqrt(P(k, z) / P(k, 0)) at a fixed k (cosmicfishpie's growth,
  default k = 1e-4/Mpc): f only, k = 1e-4/Mpc 0.660 (h 1.24, FoM 13.3), 1e-3/Mpc 0.735
  (h 1.12, FoM 13.7), 0.01/Mpc 0.890, 0.1/Mpc 0.885 (the others 0.90-1.06); f and the
  amplitude sigma8(z) = sigma8 D(z), k = 1e-3/Mpc 0.530 (h 1.27, FoM 12.5), 0.01/Mpc
  0.885 -- near the horizon the PPF dark-energy perturbations and the synchronous gauge
  enter D, and d f / d w0 falls by 11 %: not the growth of sub-horizon modes;
* f held at the fiducial everywhere 0.577, h 1.17, FoM 11.0 (the response of f sigma8(z)
  to w0, wa and Omega_m is where sigma8's information sits); in the damping terms only
  (MontePython, cosmicfishpie's fix_cosmo_nl_terms) 0.832, w0 0.88, FoM 17.1 (with the
  baryon + CDM f: 0.851; MontePython keeps the all-matter f there); f of the survey's mean
  redshift in the Fingers of God (one sigma_p including f for the survey) 0.857, the others
  0.89-0.99, FoM 18.1; in the BAO damping 0.878;
* sigma8(z): fishcast rescales P(k, z) of each point by (sigma8 / CAMB's sigma8)^2 at every
  z, so sigma8(z) = sigma8 D(z) with D of that point -- what IST:F's files hold (P/sigma8^2(z)
  and sigma8^2(z) at every step, fisher_for_public's README); with D held at the fiducial's:
  1.196 (w0 0.73, h 1.49, FoM 11.5);
* the redshift error: sigma_z = 0.002 at every z (MontePython's pessimistic data file; ~
  sigma_z0 = 0.00087 in (1+z)) 0.890, the others 0.94-1.05, FoM 15.3; none 0.910, the
  others 0.94-0.98, FoM 18.6 -- IST:F's is 0.001 (1+z), kept;
* mu over [-1, 1], k from 0.001 h/Mpc, the shells at their mid redshifts (1.0, 1.2, 1.4,
  1.65, as fisher_for_public's files), the Lorentzian on the power, sigma_r = c sigma_z
  (1+z)/H fixed in the observed frame: the same in MontePython and cosmicfishpie, nothing
  to swap.

Why so small a change matters: the matrix is nearly degenerate. Fixing any one of the other
six parameters in both matrices brings sigma(sigma8) within 4.8 % (0.99-1.05); the
nuisance-marginalized Fisher elements agree within 8 % on the diagonal, while F(sigma8, w0)
is 0.65x, F(sigma8, Omega_m) 0.78x and F(sigma8, Omega_b) 0.80x IST:F's (the recipe with the
baryon + CDM f). No sourced input
reproduces that row; tuning one (a growth definition, sigma_z, a smoothing width) to pass
would be a fit.

Numerical convergence (issue 11: what OUR number is, not which choice passes). Both recipes,
physics as shipped, the numerics pushed one at a time with
tests/benchmarks/istf_gcsp_convergence.py (CAMB 2.0.5; the Gaussian check off: it does not
touch the Fisher matrix). "Shipped": the recipes before this study, fishcast's defaults:
CAMB AccuracyBoost 1, CAMB's transfer k sampling, the P(k, z) table with n_z 100, n_k 300,
k_max 15/Mpc (the linear default), the adaptive step sweep, 5-point stencil. Ratios fishcast / IST:F, columns Omega_m, Omega_b, w0, wa, h, n_s,
sigma8 | FoM(w0, wa):

  pessimistic                                 Om    Ob    w0    wa    h     ns    s8  | FoM
  shipped                                    0.906 0.922 0.890 0.911 1.047 0.904 0.878 | 1.028
  shipped, full sweep (8 rungs)              0.917 0.933 0.900 0.921 1.055 0.914 0.887 | 1.016
  shipped but fixed 1 % step, 3-point        0.929 0.945 0.912 0.934 1.071 0.925 0.897 | 1.001
  FAST, AccuracyBoost 1 (this test before)   0.930 0.947 0.914 0.935 1.073 0.926 0.898 | 1.000
  k_per_logint 30                            0.916 0.932 0.899 0.920 1.054 0.912 0.886 | 1.017
  AccuracyBoost 2                            0.944 0.956 0.926 0.948 1.074 0.942 0.911 | 0.988
  AccuracyBoost 2, k_per_logint 30           0.942 0.955 0.924 0.946 1.071 0.940 0.911 | 0.990
    the same, full sweep                     0.948 0.961 0.930 0.952 1.077 0.945 0.916 | 0.983
    the same, probe n_k 400, n_mu 24         0.943 0.955 0.925 0.947 1.072 0.940 0.911 | 0.989
    the same, n_z 200, n_k 1000, k_max 30    0.952 0.965 0.933 0.955 1.083 0.948 0.918 | 0.980
  AccuracyBoost 3, k_per_logint 40           0.945 0.960 0.927 0.949 1.076 0.941 0.913 | 0.986
    the same, fixed 0.3125 % step, 3-point   0.951 0.965 0.933 0.955 1.081 0.948 0.918 | 0.980
    the same, fixed 0.625 % step, 3-point    0.952 0.963 0.933 0.956 1.081 0.951 0.919 | 0.979
  FAST, AccuracyBoost 2 (this test)          0.951 0.965 0.933 0.956 1.088 0.948 0.917 | 0.978

  optimistic: every setting above within 0.90-1.05 on every error (n_s 0.90-0.92 the
  lowest) and FoM 1.076-1.098; shipped 1.016 1.020 0.964 0.958 1.050 0.908 1.001 | 1.090,
  AccuracyBoost 3 1.026 1.028 0.972 0.966 1.050 0.917 1.009 | 1.082, this test 1.025 1.028
  0.972 0.966 1.050 0.916 1.008 | 1.082.

What moves the pessimistic errors:

* CAMB's AccuracyBoost, and nothing else systematically: 1 -> 2 raises them by 2.5-4 % (sigma8
  0.878 -> 0.911, adaptive sweep; 0.890 -> 0.908 averaged over steps), 2 -> 3 by < 0.5 %
  (adaptive 0.911 -> 0.913). The optimistic errors move by ~1 % at most (it keeps the
  default 1). Hence the pessimistic recipe sets `cosmology.accuracy.accuracy_boost: 2` (a
  CAMB run costs ~2.5x more): a numerical setting, not an ingredient.
* the derivative step, as noise: fixed 3-point steps on the plateau (relative 0.025 ..
  0.00078; at 0.05 truncation lowers the errors by up to 8 %) give sigma8 0.878-0.900 at
  AccuracyBoost 1 and 0.883-0.919 at AccuracyBoost 2 with k_per_logint 30 (5-point:
  0.875-0.922), not converging as the step shrinks. The derivatives d/d Omega_m, d/d wa and
  d/d w0 carry it (swapping one parameter's derivative between rungs moves sigma8 by up to
  2 %; d ln P/d wa changes from rung to rung by 1e-3 to 4e-3 of its maximum), the nearly degenerate
  matrix amplifies it; fishcast's own stability diagnostic (diagnostics/stability, from the
  neighbouring rungs) reports 1.6-1.9 % for sigma(sigma8) on these runs, 0.3 % on the
  optimistic recipe. The adaptive sweep and the full sweep agree within 1 % at every
  AccuracyBoost.
* k_per_logint (30, 40), the P(k, z) table (n_z 200, n_k 1000, k_max 30/Mpc) and the probe's
  quadrature (n_k 400, n_mu 24): within that scatter (< 1 %, < 0.1 % for the quadrature).

So the converged pessimistic comparison is sigma8 0.913-0.919 (AccuracyBoost 3), every
error within 10 %, with a numerical uncertainty of ~1 % from the derivatives; this test's
settings reproduce it (0.917). At AccuracyBoost 1 (the recipe before) it fell short (0.878).
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner

from fishcast.cli.main import cli
from fishcast.io import read_fisher
from fishcast.io.exchange import read_text_fisher

ROOT = pathlib.Path(__file__).parent.parent
REF = pathlib.Path(__file__).parent / "data" / "istf"
COSMO = ["Omega_m", "Omega_b", "w0", "wa", "h", "n_s", "sigma8"]
#: numerical settings of this test: CAMB AccuracyBoost 2, as the pessimistic recipe sets it
#: (at fishcast's default 1 its nearly degenerate matrix is not converged: sigma(sigma8) 0.878
#: instead of 0.913-0.919 at AccuracyBoost 3; module docstring, "Numerical convergence"; the
#: optimistic recipe gets it too, so that both share every CAMB point) and, to keep CI fast,
#: one fixed 1 % step with the 3-point stencil, no Gaussian check, fewer redshift nodes and
#: k <= 10/Mpc in the CAMB table. These give sigma(sigma8) 0.917 (pessimistic), within 0.2 %
#: of the mean of the AccuracyBoost 3 runs (0.913, 0.918, 0.919), and every other error within
#: 0.7 % of the range of those runs (h 1.088 against 1.076-1.081, the largest difference).
#: With AccuracyBoost 1 the same reductions gave 0.898. The table must keep ~300 log-spaced k
#: nodes: with 150 the spline of P(k) under-resolves the BAO wiggles and the marginalized
#: errors move by 20 %. The points are this module's own (the two recipes share them; no other
#: test uses this fiducial with these settings): 15 CAMB runs, ~25 s more than at
#: AccuracyBoost 1 on a loaded 2-core machine.
FAST = ["--set", "derivatives.mode=fixed", "--set", "derivatives.stencil=3-point",
        "--set", "diagnostics.gaussian_check=false", "--set", "cosmology.accuracy.n_z=40",
        "--set", "cosmology.accuracy.accuracy_boost=2",
        "--set", "cosmology.accuracy.n_k=300", "--set", "cosmology.accuracy.k_max=10"]


@pytest.fixture(scope="module")
def gcsp(tmp_path_factory, cache_dir):
    """Both recipes run once (they share every CAMB point: same fiducial, same steps)."""
    out = {}
    for setting in ("pessimistic", "optimistic"):
        path = tmp_path_factory.mktemp("gcsp") / f"euclid-gcsp-{setting}.h5"
        res = CliRunner().invoke(cli, ["run", str(ROOT / "recipes" / f"euclid-gcsp-{setting}.yaml"), "-o",
                                       str(path), "--cache-dir", str(cache_dir), "-q"] + FAST)
        assert res.exit_code in (0, 3), res.output
        ours, _ = read_fisher(path)
        ref = read_text_fisher(REF / f"EuclidISTF_GCsp_w0wa_flat_{setting}.txt",
                               REF / f"EuclidISTF_GCsp_w0wa_flat_{setting}.paramnames")
        out[setting] = (ours, ref, path)
    return out


def _ratios(ours, ref):
    assert sorted(ref.names) == sorted(COSMO), ref.names
    nuisances = [n for n in ours.names if n not in COSMO]
    assert nuisances, "the recipe has free nuisances (ln b per shell, ...)"
    o = ours.marginalize(COSMO)
    r = ref.marginalize(COSMO)
    marg = {n: o.sigma(n) / r.sigma(n) for n in COSMO}
    cond = {n: float(np.sqrt(r.matrix[i, i] / o.matrix[i, i])) for i, n in enumerate(COSMO)}
    fom = o.figure_of_merit("w0", "wa") / r.figure_of_merit("w0", "wa")
    return marg, cond, fom


def _model(path):
    import h5py

    with h5py.File(path, "r") as f:
        return [m.decode() for m in f["data/counts_in_cells/model"][()]]


def test_euclid_gcsp_optimistic_within_ten_percent_of_istf(gcsp):
    """EuclidISTF_GCsp_w0wa_flat_optimistic.txt: every marginalized error and FoM(w0, wa)."""
    ours, ref, path = gcsp["optimistic"]
    marg, cond, fom = _ratios(ours, ref)
    for n in COSMO:
        assert abs(marg[n] - 1) < 0.10, (n, marg)
    assert abs(fom - 1) < 0.10, fom
    # the published value (Blanchard et al. 2020: GCsp optimistic FoM ~ 55)
    assert ref.figure_of_merit("w0", "wa") == pytest.approx(55.1, rel=0.01)
    model = _model(path)
    assert any("bao_damping=true" in m for m in model) and any("fingers_of_god=lorentzian" in m for m in model)
    assert any("observed_h=varying" in m for m in model) and any("dispersions=cosmology" in m for m in model)


def test_euclid_gcsp_pessimistic_against_istf(gcsp):
    """EuclidISTF_GCsp_w0wa_flat_pessimistic.txt: what agrees today (module docstring):
    conditional errors within 5 %, marginalized errors 0.85-1.12x, FoM within 5 %; one
    sigma_v = sigma_p for the whole survey (dispersions: survey)."""
    ours, ref, path = gcsp["pessimistic"]
    marg, cond, fom = _ratios(ours, ref)
    for n in COSMO:
        assert abs(cond[n] - 1) < 0.05, (n, cond)
        assert 0.85 < marg[n] < 1.12, (n, marg)
    assert abs(fom - 1) < 0.05, fom
    assert ref.figure_of_merit("w0", "wa") == pytest.approx(14.5, rel=0.01)  # data/README
    model = _model(path)
    assert any("dispersions=survey" in m for m in model) and any("residual_shot_noise=true" in m for m in model)
    assert {"sv_survey", "sp_survey"} <= set(ours.names) and not any(n.startswith(("sv_1", "sp_1")) for n in ours.names)


def test_survey_dispersions_one_value_at_the_mean_redshift(gcsp, fiducial_cosmo):
    """`dispersions: survey`: every shell's fiducial sigma_v = sigma_p is the one of the
    survey's mean redshift, sigma_v^2 = Int P_lin(k) dk / (6 pi^2) (IST:F, Blanchard et al.
    2020 sec. 3.2), here integrated independently by scipy's adaptive quadrature."""
    import h5py
    from scipy.integrate import quad

    _, _, path = gcsp["pessimistic"]
    with h5py.File(path, "r") as f:
        sv = f["data/counts_in_cells/sigma_v"][()]
        sp = f["data/counts_in_cells/sigma_p"][()]
        z_eff = f["data/counts_in_cells/z_eff"][()]
    zbar = float(np.mean(z_eff))
    assert zbar == pytest.approx(1.3125)
    np.testing.assert_allclose(sv, sv[0], rtol=1e-12)
    np.testing.assert_array_equal(sp, sv)
    integrand = lambda lnk: math.exp(lnk) * float(fiducial_cosmo.pk_h(zbar, math.exp(lnk), nonlinear=False))
    val, _ = quad(integrand, math.log(1e-4), math.log(10.0), limit=400)
    assert sv[0] == pytest.approx(math.sqrt(val / (6 * math.pi**2)), rel=2e-3)


def test_euclid_gcsp_pessimistic_within_ten_percent_of_istf(gcsp):
    """EuclidISTF_GCsp_w0wa_flat_pessimistic.txt: every marginalized error and FoM(w0, wa)
    within 10 % at converged CAMB accuracy (issue 11; the convergence table of the module
    docstring: sigma(sigma8) 0.917 here, 0.913-0.919 at AccuracyBoost 3)."""
    ours, ref, _ = gcsp["pessimistic"]
    marg, _, fom = _ratios(ours, ref)
    assert all(abs(v - 1) < 0.10 for v in marg.values()) and abs(fom - 1) < 0.10, (marg, fom)
