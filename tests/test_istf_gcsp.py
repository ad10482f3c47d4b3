"""The Euclid IST:F spectroscopic galaxy-clustering recipes (recipes/euclid-gcsp-*.yaml), run
as shipped (only the derivative stencil fixed at 3 points to keep CI fast), against the
official IST:F Fisher matrices.

Reference: Euclid Collaboration: Blanchard et al. 2020, A&A 642, A191 (IST:F), section 3.2;
official matrices `EuclidISTF_GCsp_w0wa_flat_pessimistic.txt` and
`EuclidISTF_GCsp_w0wa_flat_optimistic.txt` (with their `.paramnames`) from the public
repository euclidist-forecasting/fisher_for_public (All_Results), copied to tests/data/istf/.
They hold the seven cosmological parameters with the per-shell nuisances marginalized; ours
are marginalized over ours (ln b, P_s and, pessimistic, sv, sp) before comparing.

What is reproduced, measured with these recipes (ratio fishcast / IST:F of the 1-sigma
errors):

* conditional errors (nuisances marginalized, the other cosmological parameters fixed) --
  the information in each parameter's own derivative: pessimistic all within 5 %
  (0.96-1.04); optimistic within 1 % except Omega_m (1.12) and h (1.27);
* marginalized errors: pessimistic 1.07-1.22 (FoM(w0, wa) 6.5 against 14.5, ratio 0.45);
  optimistic 1.18-1.43 (FoM 41 against 55, 0.75). The issue's target (every marginalized
  error and the FoM within 10 %) is NOT met: the official matrices are very nearly
  degenerate (correlations up to 0.99), and the nuisance-marginalized Fisher matrices in
  correlation form differ from IST:F's by up to 0.05 (w0-h) and 0.03 (sigma8 row), which is
  enough. The xfail test below states the target and fails today.

Which ingredient moves what (pessimistic unless said; measured on the same CAMB points):

* the h-units convention (`observed_h`): IST:F fixes the k range in h/Mpc of the cosmology
  at hand ('varying'); with the survey's own frame ('fiducial', fishcast's default) sigma(h)
  is 5.4x (pessimistic) and 16x (optimistic) larger, the conditional sigma(h) 2.2x / 4.6x;
  the others move by 10-30 %;
* the dispersions sigma_v = sigma_p (`dispersions`): free per shell in the pessimistic
  recipe; fixed at the fiducial instead, every error shrinks 2-5x (FoM 71); in the
  optimistic recipe recomputed at each point ('cosmology'); fixed instead, the conditional
  sigma(sigma8) halves (0.54 of IST:F's) -- the two choices that bring the conditional
  errors within a few per cent of IST:F's;
* f held at its fiducial inside the damping terms: < 2 %;
* the no-wiggle spectrum (Eisenstein-Hu shape x Gaussian-smoothed ratio, width 0.25 in ln k;
  IST:F leaves the method open): widths 0.1-0.5 move the marginalized errors by <= 3 % and
  the FoM by 2 %; 0.01 (barely smoothed, wiggles leak into P_nw) by up to 10 %;
* quadrature (n_k 120 -> 400, n_mu 12 -> 24): < 0.1 %; the 5-point stencil: < 0.5 %.
"""

from __future__ import annotations

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
FAST = ["--set", "derivatives.mode=fixed", "--set", "derivatives.stencil=3-point",
        "--set", "diagnostics.gaussian_check=false"]


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
    assert nuisances, "the recipe has free nuisances (ln b, P_s per shell)"
    o = ours.marginalize(COSMO)
    r = ref.marginalize(COSMO)
    marg = {n: o.sigma(n) / r.sigma(n) for n in COSMO}
    cond = {n: float(np.sqrt(r.matrix[i, i] / o.matrix[i, i])) for i, n in enumerate(COSMO)}
    fom = o.figure_of_merit("w0", "wa") / r.figure_of_merit("w0", "wa")
    return marg, cond, fom


#: measured agreement (see the module docstring); bands around today's numbers
CONDITIONAL_TOL = {"pessimistic": dict.fromkeys(COSMO, 0.06),
                   "optimistic": dict(dict.fromkeys(COSMO, 0.03), Omega_m=0.15, h=0.32)}
MARGINAL_BAND = {"pessimistic": (1.0, 1.3), "optimistic": (1.1, 1.5)}
FOM_BAND = {"pessimistic": (0.38, 0.55), "optimistic": (0.65, 0.85)}


@pytest.mark.parametrize("setting", ["pessimistic", "optimistic"])
def test_euclid_gcsp_recipe_against_istf(gcsp, setting):
    ours, ref, path = gcsp[setting]
    marg, cond, fom = _ratios(ours, ref)
    for n in COSMO:
        assert abs(cond[n] - 1) < CONDITIONAL_TOL[setting][n], (setting, n, cond)
        lo, hi = MARGINAL_BAND[setting]
        assert lo < marg[n] < hi, (setting, n, marg)
    assert FOM_BAND[setting][0] < fom < FOM_BAND[setting][1], (setting, fom)
    # the published FoM(w0, wa) (data/README: GCsp pessimistic 14.5)
    if setting == "pessimistic":
        assert ref.figure_of_merit("w0", "wa") == pytest.approx(14.5, rel=0.01)
    # the model is recorded in the output
    import h5py

    with h5py.File(path, "r") as f:
        model = [m.decode() for m in f["data/counts_in_cells/model"][()]]
    assert any("bao_damping=true" in m for m in model)
    assert any("fingers_of_god=lorentzian" in m for m in model)
    assert any("observed_h=varying" in m for m in model)


@pytest.mark.xfail(strict=True, reason="issue 11 target not met: marginalized errors 7-43 % and FoM 25-55 % "
                                       "away from IST:F (see the module docstring)")
@pytest.mark.parametrize("setting", ["pessimistic", "optimistic"])
def test_euclid_gcsp_within_ten_percent_of_istf(gcsp, setting):
    ours, ref, _ = gcsp[setting]
    marg, _, fom = _ratios(ours, ref)
    assert all(abs(v - 1) < 0.10 for v in marg.values()) and abs(fom - 1) < 0.10, (marg, fom)
