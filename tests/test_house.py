"""The house takes the next probe (issue 10): one parameter registry, one probe registry.

* A toy probe defined entirely in this file (a Gaussian data vector mean = A_toy sigma8 [1..n]
  with a diagonal covariance, one nuisance parameter A_toy with its own unit and label) is
  registered from here, runs end to end through ``fishcast run`` on real CAMB output, gets
  swept and written, and its parameter carries the declared unit and label in the HDF5
  file and in ``fishcast show`` -- with no edit outside this file.
* The parameter registry is the only table: every label, CosmoSIS name, alias, unit and
  derivative domain that other modules expose comes from :mod:`fishcast.parameters`.
* The step scales and domains are those derivatives.py had before the registry (the table
  is copied below as it was in derivatives.DEFAULT_DOMAINS), so the golden forecast holds.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Mapping

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict, Field

from fishcast import parameters as P
from fishcast.cli.main import cli
from fishcast.probes import register_probe, registered_probes, unregister_probe
from fishcast.probes.base import Cosmology, CosmologyRequirements, Probe

# ------------------------------------------------------------------------------ toy probe
A_TOY = P.NuisanceParameter("A_toy", 1.0, "uK", r"\mathcal{A}_{\rm toy}", step_scale=0.5,
                            domain=P.Domain(lower=0.0), description="toy amplitude")


class ToyConfig(BaseModel):
    """A toy Gaussian data vector: mean_i = A_toy sigma8 i (i = 1..n), covariance diag(sigma^2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(5, ge=1, le=100, description="length of the data vector")
    sigma: float = Field(0.1, gt=0, description="1-sigma error of each element [uK]")
    A_toy: float = Field(1.0, gt=0, description="fiducial of the amplitude A_toy [uK]")


class ToyProbe(Probe):
    name = "toy"

    def __init__(self, config: ToyConfig):
        self.config = config
        self.x = np.arange(1.0, config.n + 1.0)

    def nuisance_parameters(self):
        return P.NuisanceParameters([P.NuisanceParameter(
            A_TOY.name, self.config.A_toy, A_TOY.unit, A_TOY.latex, A_TOY.step_scale, A_TOY.domain,
            description=A_TOY.description)])

    def requirements(self):
        return CosmologyRequirements(z_max=0.5, k_max=1.0, nonlinear=False)

    def signal(self, cosmo: Cosmology, params: Mapping[str, float]) -> np.ndarray:
        a = float(params.get("A_toy", self.config.A_toy))
        return a * float(cosmo.sigma8) * self.x  # CAMB's sigma8(z=0)

    def gram(self, fiducial_signal, derivs, context=None):
        d = np.asarray(derivs).reshape(len(derivs), -1) / self.config.sigma
        return d @ d.T


def build_toy(config: ToyConfig, survey_dir) -> ToyProbe:
    return ToyProbe(config)


TOY_SURVEY = textwrap.dedent("""\
    name: toy
    cosmology:
      nonlinear_model: none
      accuracy: {k_max: 2, n_k: 60, n_z: 10}
    parameters:
      fiducial: {Omega_m: 0.32, Omega_b: 0.05, h: 0.67, n_s: 0.96, sigma8: 0.8, A_toy: 1.5}
      free: [sigma8, A_toy]
      priors: {A_toy: 0.2}
    diagnostics: {gaussian_check: false}
    probes:
      toy: {n: 6, sigma: 0.1, A_toy: 1.0}
    """)


@pytest.fixture
def toy_registered():
    register_probe("toy", ToyConfig, build_toy)
    try:
        yield
    finally:
        unregister_probe("toy")
        P.unregister("A_toy")


def test_toy_probe_end_to_end(toy_registered, tmp_path, cache_dir):
    (tmp_path / "toy.yaml").write_text(TOY_SURVEY)
    out = tmp_path / "toy.h5"
    runner = CliRunner()
    res = runner.invoke(cli, ["run", str(tmp_path / "toy.yaml"), "-o", str(out), "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output

    # analytic Fisher: d mean/d sigma8 = A x, d mean/d A = sigma8 x, S = sum x^2 / sigma^2, plus
    # the prior 1/0.2^2 on A_toy (fiducials from the YAML: sigma8 0.8, A_toy 1.5)
    s8, a, S = 0.8, 1.5, float(np.sum(np.arange(1.0, 7.0) ** 2) / 0.1 ** 2)
    expect = np.array([[a * a * S, a * s8 * S], [a * s8 * S, s8 * s8 * S + 1 / 0.2 ** 2]])
    with h5py.File(out, "r") as f:
        names = [s.decode() for s in f["parameters/names"][()]]
        units = [s.decode() for s in f["parameters/units"][()]]
        latex = [s.decode() for s in f["parameters/latex"][()]]
        assert names == ["sigma8", "A_toy"]
        assert units == ["", "uK"]
        assert latex == [r"\sigma_8", r"\mathcal{A}_{\rm toy}"]
        np.testing.assert_allclose(f["fisher/matrix"][()], expect, rtol=1e-5)
        assert "toy" in f["fisher/probes"]
        sweep = f["derivatives/A_toy"]  # swept: a ladder of steps in the parameter's unit
        # adaptive (the default): the 2-rung start passes (the signal is linear in A_toy)
        assert sweep.attrs["mode"] == "adaptive" and sweep["steps"].shape[0] == 2
        assert sweep.attrs["basis"] == "start" and sweep.attrs["plateau_rungs"] == 2
        assert sweep["steps"].attrs["units"] == "uK"
        assert sweep.attrs["verdict"] == "PASS"
        # the declared step scale: top of the ladder = h_max (0.05) x scale (|fiducial| 1.5, not
        # an offset); the expected plateau starts at start_step (0.0125) x scale, and the start
        # is its two central rungs, from 0.00625 x scale
        assert sweep.attrs["search_max_step"] == pytest.approx(0.05 * 1.5)
        assert sweep["steps"][0] == pytest.approx(0.00625 * 1.5)

    res = runner.invoke(cli, ["show", str(out)])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if line.startswith("A_toy"))
    assert row.split()[-1] == "uK"
    res = runner.invoke(cli, ["show", str(out), "--format", "latex"])
    assert res.exit_code == 0, res.output
    assert r"$\mathcal{A}_{\rm toy}$" in res.output
    res = runner.invoke(cli, ["show", str(out), "--format", "json"])
    rows = {r["name"]: r for r in json.loads(res.output)["parameters"]}
    assert rows["A_toy"]["units"] == "uK"
    # marginalized error of A_toy from the analytic inverse
    assert rows["A_toy"]["sigma_marginalized"] == pytest.approx(math.sqrt(np.linalg.inv(expect)[1, 1]), rel=1e-4)


def test_toy_probe_in_schema_and_validation(toy_registered, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["schema"])
    assert res.exit_code == 0, res.output
    schema = json.loads(res.output)
    assert "toy" in schema["$defs"]["ProbesConfig"]["properties"]
    assert "ToyConfig" in schema["$defs"]
    bad = TOY_SURVEY.replace("toy: {n: 6,", "toy: {n_elements: 6,")
    (tmp_path / "bad.yaml").write_text(bad)
    res = runner.invoke(cli, ["validate", str(tmp_path / "bad.yaml")])
    assert res.exit_code == 2
    assert "bad.yaml:11: probes.toy.n_elements: unknown key" in res.output


def test_unregistered_probe_section_is_an_unknown_key(tmp_path):
    assert "toy" not in registered_probes()
    (tmp_path / "toy.yaml").write_text(TOY_SURVEY)
    res = CliRunner().invoke(cli, ["validate", str(tmp_path / "toy.yaml")])
    assert res.exit_code == 2
    assert "probes.toy" in res.output and "unknown key" in res.output


def test_conflicting_declaration_is_bad_input(toy_registered, tmp_path):
    """A probe that declares a registered name with another unit is told so (exit 2)."""
    P.register(P.NuisanceParameter("A_toy", 1.0, "mK", "A"))
    (tmp_path / "toy.yaml").write_text(TOY_SURVEY)
    res = CliRunner().invoke(cli, ["validate", str(tmp_path / "toy.yaml")])
    assert res.exit_code == 2
    assert "probes.toy" in res.output and "unit 'uK' (registry: 'mK')" in res.output


def test_register_probe_refuses_a_taken_section():
    with pytest.raises(ValueError, match="already registered"):
        register_probe("weak_lensing", ToyConfig, build_toy)


# ------------------------------------------------------------------------------ one table
def _names_in_registry(name: str) -> bool:
    return P.get(name) is not None


def test_exchange_tables_are_views_of_the_registry():
    from fishcast.io import exchange

    assert exchange.LATEX and exchange.COSMOSIS_NAMES and exchange.ALIASES
    for name, label in exchange.LATEX.items():
        assert P.latex_of(name) == label
    for name, cs in exchange.COSMOSIS_NAMES.items():
        assert P.cosmosis_name_of(name) == cs
    for alias, name in exchange.ALIASES.items():
        assert _names_in_registry(name) and alias in P.lookup(name).aliases
    for name in ["Omega_m", "m_nu", "A_IA", "m_3", "dz_2", "b_LRG_1", "b_ELG_c0", "S8", "H0"]:
        assert exchange.latex_name(name) == P.latex_of(name)
        assert exchange._cosmosis_name(name) == P.cosmosis_name_of(name)


def test_no_module_keeps_a_parallel_table():
    """No module other than the registry keeps a table of parameter descriptions: no mapping
    from two or more parameter names to strings (labels, units, exchange names) and no
    table of domains; the old tables are gone."""
    import pathlib

    import fishcast
    from fishcast import derivatives

    assert not hasattr(derivatives, "DEFAULT_DOMAINS")
    assert not hasattr(P, "_NUISANCE_UNITS_PATTERNS")
    names = set(P.registered()) | {"m_1", "dz_1"}
    string_entry = re.compile(r'"([\w|]+)"\s*:\s*[rbf]?"')  # "name": "text"
    domain_row = re.compile(r'\(\s*r?"([^"]+)"\s*,\s*\w*Domain\(')  # ("name", ParameterDomain(...))
    root = pathlib.Path(fishcast.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "parameters.py":
            continue
        text = path.read_text()
        keyed = [k for k in string_entry.findall(text) if k in names]
        if len(set(keyed)) >= 2:
            offenders.append(f"{path.relative_to(root)}: {sorted(set(keyed))}")
        if domain_row.search(text):
            offenders.append(f"{path.relative_to(root)}: a domain table")
    assert not offenders, offenders


def test_units_labels_and_reparam_come_from_the_registry():
    from fishcast.reparam import DERIVED

    assert P.unit_of("m_nu") == "eV" and P.unit_of("H0") == "km/s/Mpc" and P.unit_of("unknown_q") == ""
    for name, d in DERIVED.items():
        assert d.units == P.unit_of(name) and P.get(name).derived
    assert P.fisher_unit("eV", "eV") == "1/eV^2"
    assert P.fisher_unit("", "km/s/Mpc") == "1/(km/s/Mpc)"
    assert P.fisher_unit("eV", "uK") == "1/(eV uK)"
    assert P.fisher_unit("", "") == ""


def test_families_name_their_members():
    fam = P.get("b_LRG_2")
    assert fam.latex == r"b_{\rm LRG,2}" and fam.domain == P.Domain(lower=0.0)
    assert P.get("m_12").cosmosis == "shear_calibration_parameters--m12"
    assert P.latex_of("dz_3") == r"\Delta z_{3}"
    assert P.get("m_nu").cosmological and not P.get("m_1").cosmological  # m_{i} is digits only
    assert P.get("b_LRG_c1").latex == r"c^{\rm LRG}_{1}"


# ------------------------------------------------------------------------------ old domains
#: derivatives.DEFAULT_DOMAINS as it was before the registry (regex, scale, scale_always,
#: lower, upper, lower_inclusive, upper_inclusive, units, cosmological); first match wins
OLD_DEFAULT_DOMAINS = (
    ("Omega_m", 1.0, False, 0.0, None, False, False, "", True),
    ("Omega_b", 1.0, False, 0.0, None, False, False, "", True),
    ("Omega_c|ombh2|omch2", 1.0, False, 0.0, None, False, False, "", True),
    ("h", 1.0, False, 0.0, None, False, False, "", True),
    ("H0", 67.0, False, 0.0, None, False, False, "km/s/Mpc", True),
    ("m_nu", 0.06, False, 0.0, None, True, False, "eV", True),
    ("sigma8|S8", 1.0, False, 0.0, None, False, False, "", True),
    ("A_s", 2.1e-9, False, 0.0, None, False, False, "", True),
    ("n_s", 1.0, False, None, None, False, False, "", True),
    ("w0", 1.0, False, None, None, False, False, "", True),
    ("wa", 1.0, True, None, None, False, False, "", True),
    ("Omega_k", 0.1, True, None, None, False, False, "", True),
    ("A_IA", 1.0, False, None, None, False, False, "", False),
    ("eta_IA", 1.0, True, None, None, False, False, "", False),
    ("beta_IA", 1.0, False, None, None, False, False, "", False),
    (r"m_\d+", 0.01, True, -1.0, None, False, False, "", False),
    (r"dz_\d+", 0.01, True, None, None, False, False, "", False),
    # changed on purpose since: c_j (j >= 1) of a polynomial b(z) may be negative (a bias that
    # falls with z); only c_0 and b itself are positive (probes/multitracer_clustering.py)
    (r"b_[A-Za-z][A-Za-z0-9]*_c[1-9][0-9]*", 1.0, False, None, None, False, False, "", False),
    (r"b\w*", 1.0, False, 0.0, None, False, False, "", False),
)


def _old_domain(name: str):
    for row in OLD_DEFAULT_DOMAINS:
        if re.fullmatch(row[0], name):
            return row[1:]
    return (1.0, False, None, None, False, False, "", False)


@pytest.mark.parametrize("name", [
    "Omega_m", "Omega_b", "Omega_c", "ombh2", "omch2", "h", "H0", "m_nu", "sigma8", "S8", "A_s", "n_s",
    "w0", "wa", "Omega_k", "A_IA", "eta_IA", "beta_IA", "m_1", "m_13", "dz_1", "dz_10",
    "b_LRG_1", "b_ELG_12", "b_QSO_c0", "b_X1_c2", "omh2", "A_s_1e9", "logA", "some_new_parameter",
])
def test_step_scales_and_domains_are_unchanged(name):
    from fishcast.derivatives import domain_of

    d = domain_of(name)
    got = (d.scale, d.scale_always, d.lower, d.upper, d.lower_inclusive, d.upper_inclusive, d.units, d.cosmological)
    old = _old_domain(name)
    if name in ("omh2", "A_s_1e9", "logA"):  # derived, not in the old table: now labelled cosmological
        assert got[:-1] == old[:-1] and got[-1] is True
    else:
        assert got == old


def test_resolved_specs_of_a_recipe_are_unchanged():
    """The ladders of the golden recipe's free parameters: as derivatives.py had them."""
    from fishcast.derivatives import DerivativesConfig, resolve_spec

    cfg = DerivativesConfig(mode="sweep")
    for name, fid in {"Omega_m": 0.32, "m_nu": 0.06, "wa": 0.0, "Omega_k": 0.0, "A_IA": 1.72,
                      "eta_IA": -0.41, "m_2": 0.0, "dz_3": 0.0, "b_LRG_1": 1.9}.items():
        old = _old_domain(name)
        spec = resolve_spec(name, fid, cfg)
        scale = old[0] if (old[1] or fid == 0.0) else abs(fid)
        assert spec.scale == scale and spec.top_step == pytest.approx(scale * 0.05, rel=0, abs=0)
        adaptive = resolve_spec(name, fid, DerivativesConfig())  # the default: the same ladder as its range
        assert adaptive.scale == scale and adaptive.max_step == spec.top_step
        assert (spec.lower, spec.upper, spec.lower_inclusive, spec.upper_inclusive) == old[2:6]
