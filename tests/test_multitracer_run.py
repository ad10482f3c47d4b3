"""The two-tracer toy recipe through `fishcast run` and `fishcast show`, against the hand
calculation written in the recipe (physics.md section 2: closed forms of the real-space
multi-tracer Fisher; Abramo 2012)."""

from __future__ import annotations

import pathlib

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from scipy.integrate import quad

from fishcast.cli.main import cli

RECIPE = pathlib.Path(__file__).parent.parent / "recipes" / "two-tracer-toy.yaml"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "toy.h5"
    res = CliRunner().invoke(cli, ["run", str(RECIPE), "-o", str(out), "--no-cache", "-q",
                                   "--set", "diagnostics.gaussian_check=false"])
    assert res.exit_code == 0, res.output
    return out


def _chi_mpc_over_h(z, om=0.3153):
    """Flat LCDM comoving distance [Mpc/h], radiation neglected (an independent estimate)."""
    return quad(lambda x: 2997.92458 / np.sqrt(om * (1 + x) ** 3 + 1 - om), 0, z)[0]


def test_band_power_fisher_equals_the_hand_calculation(toy):
    with h5py.File(toy, "r") as f:
        shell = f["fisher/probes/counts_in_cells/shells/1"]
        F = shell["fisher"][()]
        names = [s.decode() for s in shell["parameter_names"][()]]
        P = float(np.ravel(f["data/counts_in_cells/pk"][()])[0])
    V = 0.1 * 4 * np.pi / 3 * (_chi_mpc_over_h(1.1) ** 3 - _chi_mpc_over_h(0.9) ** 3)
    Nk = V * (0.10**3 - 0.05**3) / (6 * np.pi**2)
    PA, PB = 1e-3 * 1.0**2 * P, 2e-4 * 2.0**2 * P
    Pt = PA + PB
    hand = {
        ("lnP_1", "lnP_1"): Nk / 2 * (Pt / (1 + Pt)) ** 2,
        ("lnP_1", "lnb_A"): Nk * PA * Pt / (1 + Pt) ** 2,
        ("lnb_A", "lnb_B"): Nk * (PA * PB * (1 - Pt)) / (1 + Pt) ** 2,
        ("lnb_B", "lnb_B"): Nk * (PB * Pt * (1 + Pt) + PB * PB * (1 - Pt)) / (1 + Pt) ** 2,
    }
    for (a, b), value in hand.items():
        # radiation and neutrinos are neglected in the hand volume: 1e-3
        assert F[names.index(a), names.index(b)] == pytest.approx(value, rel=1e-3), (a, b)


def test_cosmological_fisher_is_the_projection(toy):
    with h5py.File(toy, "r") as f:
        shell = f["fisher/probes/counts_in_cells/shells/1"]
        F = shell["fisher"][()]
        names = [s.decode() for s in shell["parameter_names"][()]]
        Fc = f["fisher/matrix"][()]
        cnames = [s.decode() for s in f["parameters/names"][()]]
    assert cnames == ["sigma8", "b_B_1"]
    i = [names.index("lnP_1"), names.index("lnb_B")]
    J = np.diag([2 / 0.8111, 1 / 2.0])  # ln P = 2 ln sigma8 + const; d ln b_B / d b_B = 1/b_B
    assert np.allclose(J.T @ F[np.ix_(i, i)] @ J, Fc, rtol=1e-6)


def test_show_prints_the_multi_tracer_gain(toy):
    res = CliRunner().invoke(cli, ["show", str(toy)])
    assert res.exit_code == 0, res.output
    assert "multi-tracer gain" in res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("b_B_1") and "-" in ln)
    cells = line.split()
    # b_B alone cannot be separated from the amplitude (only b^2 P is measured): '-'
    assert cells[1] == "-" and cells[2] == "-"
    joint, naive = float(cells[-1]), float(cells[-2])
    assert joint < naive  # the joint analysis beats the naive sum of single-tracer Fishers


def test_every_unit_in_the_file_is_a_unit_or_a_per_parameter_rule(toy):
    """Schema 1.1 (fishcast/io/h5util.py): a ``units`` attribute is one plain unit; a dataset
    with one unit per parameter (the tracer-comparison Fisher matrices) carries
    ``units_from`` + ``units_rule`` instead. A rule written as a unit string (it was
    "1/(unit_i unit_j)") is caught here for every dataset of the file."""
    from fishcast.io.h5util import UNITS_RULES

    seen = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            units = obj.attrs.get("units")
            if units is not None:
                assert "unit_" not in str(units), (name, units)
            if "units_rule" in obj.attrs:
                assert obj.attrs["units_rule"] in UNITS_RULES, name
                seen.append(name)

    with h5py.File(toy, "r") as f:
        f.visititems(visit)
        joint = f["fisher/probes/counts_in_cells/tracer_comparison/joint"]
        assert joint.attrs["units_rule"] == "1/(unit_i*unit_j)" and "units" not in joint.attrs
    assert any(s.endswith("tracer_comparison/single_tracer") for s in seen)
