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

* optimistic (IST:F's h-units convention, sigma_v = sigma_p from the linear P at each point,
  ln b nuisances, no residual shot noise): every marginalized error and FoM(w0, wa) within
  7 % (0.94-1.05; FoM 59.0 against 55.1) -- the issue's 10 % target, asserted;
* pessimistic (the same, with sigma_v, sigma_p free per shell and a free residual shot noise
  P_s per shell): the conditional errors (nuisances marginalized, the other cosmological
  parameters fixed) agree within 5 % (0.96-1.04), but the marginalized errors are 5-22 %
  larger and FoM(w0, wa) is 6.5 against 14.5 (0.45). The official matrix is very nearly
  degenerate (correlations up to 0.99); the nuisance-marginalized Fisher matrices in
  correlation form differ by up to 0.05 (w0-h) and 0.03 (the sigma8 row), which is enough.
  No combination of the switches below brings it within 10 %; the xfail test states the
  target and fails today.

Which ingredient moves what (measured on the same CAMB points):

* the h-units convention (`observed_h`): IST:F fixes the k range in h/Mpc of the cosmology
  at hand ('varying'); with the survey's own frame ('fiducial', fishcast's default) sigma(h)
  is 5.4x (pessimistic) and 12x (optimistic) larger; the others move by up to 30 %;
* the dispersions sigma_v = sigma_p (`dispersions`): fixed at the fiducial instead of free
  (pessimistic), every error shrinks 2-5x (FoM 71); fixed instead of recomputed
  (optimistic), by 30-50 % (FoM 104);
* the residual shot noise P_s per shell: free in the optimistic recipe, errors +20-45 %
  (FoM 41); fixed in the pessimistic one, errors -20-45 % (FoM 14.8, but the conditional
  errors then differ by up to 2x);
* f held at its fiducial inside the damping terms: < 2 %;
* the no-wiggle spectrum (Eisenstein-Hu shape x Gaussian-smoothed ratio, width 0.25 in ln k;
  IST:F leaves the method open): widths 0.1-0.5 move the marginalized errors by <= 3 %;
  0.01 (barely smoothed) by up to 10 %;
* quadrature (n_k 120 -> 400, n_mu 12 -> 24): < 0.1 %; the 5-point stencil: < 0.5 %;
* the CAMB table: 300 log-spaced k nodes (the default) and 1000 agree within 0.2 %; 150
  under-resolve the BAO wiggles and move the pessimistic errors by 20 %.
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
#: reductions shared with tests/test_observed_frame.py (the CAMB points are shared through the
#: session cache): a 3-point stencil, no Gaussian check, fewer redshift nodes and k <= 10/Mpc
#: in the CAMB table (the errors move by ~1 %). The table must keep ~300 log-spaced k nodes:
#: with 150 the spline of P(k) under-resolves the BAO wiggles and the marginalized errors
#: move by 20 %.
FAST = ["--set", "derivatives.mode=fixed", "--set", "derivatives.stencil=3-point",
        "--set", "diagnostics.gaussian_check=false", "--set", "cosmology.accuracy.n_z=40",
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
    conditional errors within 6 %, marginalized errors 1.0-1.3x, FoM 0.38-0.55x."""
    ours, ref, path = gcsp["pessimistic"]
    marg, cond, fom = _ratios(ours, ref)
    for n in COSMO:
        assert abs(cond[n] - 1) < 0.06, (n, cond)
        assert 1.0 < marg[n] < 1.3, (n, marg)
    assert 0.38 < fom < 0.55, fom
    assert ref.figure_of_merit("w0", "wa") == pytest.approx(14.5, rel=0.01)  # data/README
    model = _model(path)
    assert any("dispersions=free" in m for m in model) and any("residual_shot_noise=true" in m for m in model)


@pytest.mark.xfail(strict=True, reason="issue 11 target not met for the pessimistic setting: marginalized "
                                       "errors 5-22 % and FoM 55 % away from IST:F (see the module docstring)")
def test_euclid_gcsp_pessimistic_within_ten_percent_of_istf(gcsp):
    ours, ref, _ = gcsp["pessimistic"]
    marg, _, fom = _ratios(ours, ref)
    assert all(abs(v - 1) < 0.10 for v in marg.values()) and abs(fom - 1) < 0.10, (marg, fom)
