"""The exact counts-in-cells Fisher as a user feature (`fisher_method: exact_cells`,
fishcast/probes/exact_cells_probe.py), through `fishcast run`.

References: the eigenvalue form of the exact box Fisher, fishcast.exact_cells.box_fisher, is
checked against the dense trace formula and the Fourier limit in tests/test_cells.py; here
the probe's own dense trace over the cell counts, with CAMB's P(k) and derivatives taken by
the pipeline, must equal it projected by the chain rule (ln A = 2 ln sigma8 + const in real
space at fixed shape; d ln b / d b = 1/b).
"""

from __future__ import annotations

import pathlib

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from fishcast.cli.main import cli
from fishcast.probes import multitracer_clustering as mt
from tests.test_observed_frame import FakeCosmo, ZeroPower

ROOT = pathlib.Path(__file__).parent.parent
RECIPE = ROOT / "recipes" / "two-tracer-cells.yaml"
FAST = ["--set", "derivatives.mode=fixed", "--set", "derivatives.stencil=3-point",
        "--set", "diagnostics.gaussian_check=false"]


def _cfg(**over):
    base = dict(f_sky=0.1, z_edges=[0.9, 1.1],
                tracers=[dict(name="A", density=dict(unit="(h/Mpc)^3", values=[1e-2]),
                              bias=dict(form="per_shell", values=[1.0])),
                         dict(name="B", density=dict(unit="deg^-2 per unit z", values=[3000.0]),
                              bias=dict(form="per_shell", values=[2.0]))],
                k_max=0.3, rsd=False, fisher_method="exact_cells", cells=dict(side=8.0, n_side=4))
    base.update(over)
    return mt.CountsInCellsConfig.model_validate(base)


def test_exact_cells_configuration_is_checked():
    assert _cfg().fisher_method == "exact_cells"
    with pytest.raises(ValidationError, match="real space"):
        _cfg(rsd=True)
    with pytest.raises(ValidationError, match="needs `cells`"):
        _cfg(cells=None)
    with pytest.raises(ValidationError, match="fewer cells"):
        _cfg(cells=dict(side=8.0, n_side=16))
    with pytest.raises(ValidationError, match="only with fisher_method"):
        _cfg(fisher_method="fourier")


def test_exact_cells_noise_is_fixed_and_signal_follows_the_geometry():
    """The count noise n_a V_c (fiducial-frame densities) does not move with the cosmology;
    the signal does, anisotropically with Alcock-Paczynski (the stretched box)."""
    probe = mt.build(_cfg(), pathlib.Path("."))
    fid = FakeCosmo()
    p = probe.nuisance_parameters()
    ctx = probe.fiducial_context(fid, p)
    C0 = probe.signal(fid, p, ctx)
    M = 4**3
    assert C0.shape == (1, 2 * M, 2 * M)
    np.testing.assert_allclose(C0[0], C0[0].T, rtol=1e-12)
    for other in (FakeCosmo(om=0.27), FakeCosmo(stretch=1.05)):
        np.testing.assert_array_equal(probe.signal(ZeroPower(other), p, ctx), probe.signal(ZeroPower(fid), p, ctx))
        assert not np.allclose(probe.signal(other, p, ctx), C0)


def test_exact_cells_run_equals_the_projected_box_fisher(tmp_path, cache_dir):
    out = tmp_path / "cells.h5"
    res = CliRunner().invoke(cli, ["run", str(RECIPE), "-o", str(out), "--cache-dir", str(cache_dir), "-q"] + FAST)
    assert res.exit_code in (0, 3), res.output
    with h5py.File(out, "r") as f:
        g = f["data/counts_in_cells"]
        model = [m.decode() for m in g["model"][()]]
        F_box = g["fourier_comparison/1/exact_box"][()]
        F_four = g["fourier_comparison/1/fourier"][()]
        mism = g["fourier_comparison/max_normalized_difference"][()]
        F = f["fisher/matrix"][()]
        names = [s.decode() for s in f["parameters/names"][()]]
    assert any(m.startswith("fisher_method=exact_cells") for m in model)
    assert names == ["sigma8", "b_B_1"]
    J = np.zeros((3, 2))
    J[0, 0] = 2.0 / 0.8111  # ln A = 2 ln sigma8 + const
    J[2, 1] = 1.0 / 2.0     # ln b_B
    np.testing.assert_allclose(F, J.T @ F_box @ J, rtol=1e-5)
    # the agreement with the Fourier result of the same volume is reported: a 48 Mpc/h box
    # differs by a few per cent (edge effects), and the report says by how much
    d = np.sqrt(np.diag(F_four))
    assert mism[0] == pytest.approx(np.max(np.abs(F_box - F_four) / np.outer(d, d)))
    assert 0.005 < mism[0] < 0.10
    show = CliRunner().invoke(cli, ["show", str(out)])
    assert show.exit_code == 0 and "sigma8" in show.output
