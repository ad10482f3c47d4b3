"""The probe contract (issue 10, part 2): the Cosmology protocol is what the CAMB result and
the tests' stand-ins implement; the pipeline calls probes only through hooks declared on
Probe (no hasattr); probes are immutable once built; the CAMB backend honours the probes'
requirements (a linear-only survey never asks CAMB for the nonlinear spectrum, k_max)."""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import pathlib

import numpy as np
import pytest

import fishcast
from fishcast.cosmology import (
    DEFAULT_K_MAX,
    MIN_K_MAX,
    MIN_K_MAX_LINEAR,
    NONLINEAR_K_FLOOR,
    CosmologyResult,
    CosmologySettings,
    compute,
    nonlinear_k_floor,
    settings_for,
)
from fishcast.pipeline.forecast import DataVector
from fishcast.probes.base import Cosmology, CosmologyRequirements, Probe, combined_requirements
from fishcast.survey import survey_from_text

from .test_cli_run import SMALL
from .test_multitracer import _FakeCosmo
from .test_weak_lensing import EdS

ROOT = pathlib.Path(fishcast.__file__).parent
TOY = (pathlib.Path(__file__).parent.parent / "recipes" / "two-tracer-toy.yaml").read_text()


# --------------------------------------------------------------------------- the protocol
def _protocol_members() -> set[str]:
    return {n for n in vars(Cosmology) if not n.startswith("_")}


def test_the_protocol_lists_what_probes_use():
    assert _protocol_members() >= {"z_max", "h", "H0", "Omega_m", "sigma8", "has_nonlinear", "chi_of",
                                   "hubble_of", "growth_of", "growth_rate_of", "pk", "pk_h"}
    for name in _protocol_members():
        doc = inspect.getdoc(getattr(Cosmology, name)) or ""
        assert doc, f"Cosmology.{name} has no docstring (units)"


def test_camb_result_is_a_cosmology(fiducial_cosmo):
    assert isinstance(fiducial_cosmo, Cosmology)
    # static listing: every member is defined on the class, not only found on an instance
    missing = [n for n in _protocol_members() if not hasattr(CosmologyResult, n)]
    assert not missing, missing
    c = fiducial_cosmo
    assert c.z_max == pytest.approx(3.0)
    assert c.h == pytest.approx(0.67) and c.H0 == pytest.approx(67.0)
    assert c.Omega_m == pytest.approx(0.32, rel=1e-6)  # the IST:F fiducial asked of CAMB
    assert c.sigma8 == pytest.approx(0.815583, rel=1e-4)
    assert c.has_nonlinear


@pytest.mark.parametrize("standin", [EdS, _FakeCosmo])
def test_the_test_standins_are_cosmologies(standin):
    assert isinstance(standin(), Cosmology)


def test_something_else_is_not_a_cosmology():
    class Partial:
        def chi_of(self, z):
            return z

    assert not isinstance(Partial(), Cosmology)


def test_every_probe_method_takes_a_typed_cosmo():
    from fishcast.probes import multitracer_clustering, weak_lensing

    for cls in (Probe, weak_lensing.WeakLensingProbe, multitracer_clustering.CountsInCellsProbe):
        for name, fn in inspect.getmembers(cls, inspect.isfunction):
            params = inspect.signature(fn).parameters
            if "cosmo" in params:
                assert params["cosmo"].annotation in (Cosmology, "Cosmology"), f"{cls.__name__}.{name}"


# --------------------------------------------------------------------------- the pipeline
def test_no_hasattr_in_the_pipeline():
    """Every hook the pipeline calls is declared on Probe: no hasattr anywhere in
    fishcast/pipeline/, and no getattr with a default on a probe."""
    offenders = []
    for path in sorted((ROOT / "pipeline").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == "hasattr":
                    offenders.append(f"{path.name}:{node.lineno}")
                elif node.func.id == "getattr" and len(node.args) == 3 and "probe" in ast.unparse(node.args[0]):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders


def test_the_hooks_the_pipeline_calls_are_declared_on_probe():
    for hook in ("nuisance_parameters", "requirements", "signal", "fiducial_context", "gram", "norm",
                 "products", "reports"):
        assert callable(getattr(Probe, hook)), hook


class _Gaussian(Probe):
    """A probe with only the required methods: a data vector mu_i = A x_i, unit covariance."""

    name = "gaussian"

    def __init__(self):
        self.x = np.linspace(0.0, 1.0, 5)

    def nuisance_parameters(self):
        return {"A_gauss": 1.0}

    def requirements(self):
        return CosmologyRequirements(z_max=1.0, k_max=1.0, nonlinear=False)

    def signal(self, cosmo: Cosmology, params):
        return params.get("A_gauss", 1.0) * self.x * cosmo.h

    def gram(self, fiducial_signal, derivs, context=None):
        d = derivs.reshape(derivs.shape[0], -1)
        return d @ d.T


def test_a_probe_with_only_the_required_methods_gets_the_defaults():
    probe = _Gaussian()
    cosmo = EdS()
    fid = {"A_gauss": 1.0}
    dv, sig = DataVector.at_fiducial([probe], cosmo, fid)
    assert dv.contexts == (None,)
    np.testing.assert_allclose(sig, probe.x * 0.7)
    d = (probe.x * 0.7)[None]  # d mu / d A
    np.testing.assert_allclose(dv.gram(sig, d), [[np.sum((probe.x * 0.7) ** 2)]])  # F = sum (d mu)^2
    assert probe.norm(sig, d[0]) == pytest.approx(np.sqrt(np.sum((probe.x * 0.7) ** 2)))
    assert probe.products(cosmo, fid) == {}
    assert probe.reports(cosmo, fid, sig, d, ["A_gauss"], None) == {}
    with pytest.raises(AttributeError, match="immutable"):
        probe.x = np.zeros(5)


# --------------------------------------------------------------------------- immutability
@pytest.fixture(scope="module")
def probes():
    wl = survey_from_text(SMALL, "small.yaml").probes[0]
    cic = survey_from_text(TOY, "toy.yaml").probes[0]
    return {"weak_lensing": (wl, EdS()), "counts_in_cells": (cic, _FakeCosmo())}


def _snapshot(obj) -> dict:
    out = {}
    for k, v in vars(obj).items():
        out[k] = v.copy() if isinstance(v, np.ndarray) else copy.deepcopy(v)
    return out


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray):
            if not (isinstance(y, np.ndarray) and x.shape == y.shape and np.array_equal(x, y, equal_nan=True)):
                return False
        elif not (x is y or x == y or repr(x) == repr(y)):
            return False
    return True


@pytest.mark.parametrize("which", ["weak_lensing", "counts_in_cells"])
def test_probes_are_immutable(probes, which):
    probe, cosmo = probes[which]
    with pytest.raises(AttributeError, match="immutable"):
        probe.name = "other"
    with pytest.raises(AttributeError, match="immutable"):
        probe.brand_new_attribute = 1
    arrays = [v for v in vars(probe).values() if isinstance(v, np.ndarray)]
    assert arrays and all(not a.flags.writeable for a in arrays)
    with pytest.raises(ValueError):
        arrays[0][...] = 0.0


@pytest.mark.parametrize("which", ["weak_lensing", "counts_in_cells"])
def test_using_a_probe_leaves_it_unchanged(probes, which):
    """signal, fiducial_context, gram, products and reports change nothing on the probe
    (set_fiducial used to pin the shell volumes on the multi-tracer probe)."""
    probe, cosmo = probes[which]
    before = _snapshot(probe)
    fid = probe.nuisance_parameters()
    names = list(fid)
    sig = probe.signal(cosmo, fid)
    ctx = probe.fiducial_context(cosmo, fid)
    derivs = np.stack([sig * (i + 1) * 0.1 for i in range(len(names))])
    probe.gram(sig, derivs, ctx)
    probe.norm(sig, derivs[0], ctx)
    probe.products(cosmo, fid)
    probe.reports(cosmo, fid, sig, derivs, names, ctx)
    probe.signal(_FakeCosmo(om=0.25) if which == "counts_in_cells" else EdS(H0=60.0), fid)
    assert _same(before, _snapshot(probe))


def test_the_context_is_immutable(probes):
    probe, cosmo = probes["counts_in_cells"]
    ctx = probe.fiducial_context(cosmo, probe.nuisance_parameters())
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.volumes = None
    with pytest.raises(ValueError):
        ctx.volumes[0] = 1.0


# --------------------------------------------------------------------------- requirements
def test_combined_requirements():
    r = combined_requirements([CosmologyRequirements(1.0, 0.2, False), CosmologyRequirements(3.0, 30.0, True)])
    assert r == CosmologyRequirements(3.0, 30.0, True)
    assert not combined_requirements([CosmologyRequirements(1.0, 0.2, False)]).nonlinear


def test_the_dense_transfer_sampling_is_needed_when_any_probe_needs_it():
    """combined_requirements ORs the probes' need for CAMB's dense transfer sampling; a probe
    that does not say keeps it (the default); settings_for derives the setting from the
    requirements, and the user's cosmology.accuracy.transfer_high_precision overrides it
    either way."""
    assert CosmologyRequirements(1.0, 0.2, False).transfer_high_precision  # not stated: kept
    sparse = CosmologyRequirements(3.0, 7.0, True, transfer_high_precision=False)
    dense = CosmologyRequirements(1.0, 0.2, False, transfer_high_precision=True)
    assert not combined_requirements([sparse, sparse]).transfer_high_precision
    assert combined_requirements([sparse, dense]).transfer_high_precision
    assert combined_requirements([dense, sparse]).transfer_high_precision
    assert not settings_for(sparse).transfer_high_precision
    assert settings_for(dense).transfer_high_precision
    assert settings_for(sparse, transfer_high_precision=True).transfer_high_precision
    assert not settings_for(dense, transfer_high_precision=False).transfer_high_precision


def test_settings_for_reads_the_requirements():
    lin = CosmologyRequirements(z_max=1.1, k_max=0.1, nonlinear=False)
    nl = CosmologyRequirements(z_max=3.0, k_max=50.0, nonlinear=True)
    assert settings_for(lin, nonlinear_model="takahashi").nonlinear_model == "none"
    assert settings_for(nl, nonlinear_model="mead2020").nonlinear_model == "mead2020"
    assert settings_for(nl, nonlinear_model="none").nonlinear_model == "none"  # the user's choice stays
    # a derived k_max is raised to the next node of the reference table (< one node spacing,
    # 3 % at n_k 300), linear or nonlinear alike
    assert 50.0 <= settings_for(nl).k_max < 50.0 * 1.05  # a probe needing more than the default raises it
    # the backend's floor for linear-only runs, on the next node of the reference table (n_k
    # nodes from k_min to DEFAULT_K_MAX: the table keeps those nodes below its k_max)
    s_lin = settings_for(lin, n_k=300)
    assert MIN_K_MAX_LINEAR <= s_lin.k_max < MIN_K_MAX_LINEAR * 1.05
    ref = CosmologySettings(k_max=DEFAULT_K_MAX, n_k=300).k_grid()
    np.testing.assert_allclose(s_lin.k_grid(), ref[:s_lin.n_k], rtol=1e-12)
    assert settings_for(lin, k_max=2.0, n_k=300).n_k == 300  # a k_max the user gives: n_k as given
    assert 12.0 <= settings_for(dataclasses.replace(nl, k_max=12.0)).k_max < 12.0 * 1.05  # what the probe needs
    # the floor: the nonlinear model's need at the table's z_max (takahashi, z_max = 3)
    floor = nonlinear_k_floor("takahashi", 3.0)
    assert floor > MIN_K_MAX
    assert floor <= settings_for(dataclasses.replace(nl, k_max=1.0)).k_max < floor * 1.05
    low = dataclasses.replace(nl, k_max=1.0, z_max=1.0)
    assert MIN_K_MAX <= settings_for(low).k_max < MIN_K_MAX * 1.05
    assert settings_for(low, nonlinear_model="mead2020", z_max=2.6).k_max >= nonlinear_k_floor("mead2020", 2.6)
    s_nl = settings_for(dataclasses.replace(nl, k_max=12.0), n_k=300)
    np.testing.assert_allclose(s_nl.k_grid(), ref[:s_nl.n_k], rtol=1e-12)  # the reference's nodes
    assert settings_for(nl, k_max=10.0).k_max == 10.0  # the user's accuracy.k_max overrides
    assert settings_for(lin).z_max == pytest.approx(1.1)
    assert settings_for(lin, z_max=2.0).z_max == 2.0


def test_the_nonlinear_floor_table():
    """nonlinear_k_floor: the table's nodes, ln k_max linear in z between them (the midpoint
    is the geometric mean), MIN_K_MAX below the first node and for a linear table,
    DEFAULT_K_MAX above the last (not measured), never decreasing with z_max."""
    for model, nodes in NONLINEAR_K_FLOOR.items():
        z, k = (np.array(c) for c in zip(*nodes))
        assert np.all(np.diff(z) > 0) and np.all(np.diff(k) >= 0) and k[0] >= MIN_K_MAX
        for zi, ki in nodes:
            assert nonlinear_k_floor(model, zi) == pytest.approx(ki, rel=1e-12)
        mid = 0.5 * (z[-2] + z[-1])
        assert nonlinear_k_floor(model, mid) == pytest.approx(np.sqrt(k[-2] * k[-1]), rel=1e-12)
        assert nonlinear_k_floor(model, z[0] / 2) == MIN_K_MAX
        assert nonlinear_k_floor(model, z[-1] + 0.1) == DEFAULT_K_MAX
        grid = np.linspace(0.0, z[-1], 50)
        assert np.all(np.diff([nonlinear_k_floor(model, x) for x in grid]) >= 0)
    assert nonlinear_k_floor("none", 3.0) == MIN_K_MAX


def test_survey_settings_follow_the_probes():
    wl = survey_from_text(SMALL, "small.yaml")
    assert wl.settings.nonlinear_model == "takahashi"
    assert wl.settings.k_max == 10.0  # accuracy.k_max given: the override
    no_override = SMALL.replace("accuracy: {k_max: 10, n_k: 200, n_z: 60}", "accuracy: {n_k: 200, n_z: 60}")
    derived = survey_from_text(no_override, "s.yaml")
    # what WL needs (issue 15), at least the backend's floor
    # (raised to the next node of the reference table: < one node spacing, 6.5 % at n_k 200)
    need = max(derived.probes[0].requirements().k_max, nonlinear_k_floor("takahashi", derived.settings.z_max))
    assert need <= derived.settings.k_max < need * 1.07 and derived.settings.k_max < 30.0
    more = no_override.replace("integration: {z_max: 3.0, n_z: 121}", "integration: {z_max: 3.0, n_z: 121, k_max: 50}")
    assert 50.0 <= survey_from_text(more, "s.yaml").settings.k_max < 50.0 * 1.07
    toy = survey_from_text(TOY.replace("nonlinear_model: none", "nonlinear_model: takahashi"), "toy.yaml")
    assert toy.settings.nonlinear_model == "none"
    assert MIN_K_MAX_LINEAR <= toy.settings.k_max < 1.05 * MIN_K_MAX_LINEAR  # linear clustering: the backend's floor


def test_a_linear_only_survey_does_not_compute_the_nonlinear_spectrum(monkeypatch):
    """Multi-tracer clustering uses only the linear P(k): with nonlinear_model takahashi in
    the file, CAMB is still set up without a nonlinear model and never asked for P_nl."""
    import camb

    toy = survey_from_text(TOY.replace("nonlinear_model: none", "nonlinear_model: takahashi"), "toy.yaml")
    settings = dataclasses.replace(toy.settings, n_z=12, n_k=60)  # small tables: a cheap real CAMB call
    seen = {"nonlinear": [], "interp": []}
    real_transfer = camb.get_transfer_functions

    def transfer(pars, *a, **kw):
        seen["nonlinear"].append(pars.NonLinear)
        data = real_transfer(pars, *a, **kw)
        real_interp = data.get_matter_power_interpolator

        def interp(*ia, **ikw):
            seen["interp"].append(ikw.get("nonlinear", True))
            return real_interp(*ia, **ikw)

        data.get_matter_power_interpolator = interp
        return data

    monkeypatch.setattr(camb, "get_transfer_functions", transfer)
    res = compute(toy.cosmological_fiducial, settings)
    assert seen["nonlinear"] == [camb.model.NonLinear_none]
    assert seen["interp"] == [False]
    assert res.pk_nl is None and not res.has_nonlinear
    # and the probe runs on it
    probe = toy.probes[0]
    assert np.all(np.isfinite(probe.signal(res, toy.fiducial)))


@pytest.mark.parametrize("which", ["weak_lensing", "counts_in_cells"])
def test_probes_pickle(probes, which):
    """Batch designs go to worker processes: a sealed probe pickles and stays sealed."""
    import pickle

    probe, cosmo = probes[which]
    back = pickle.loads(pickle.dumps(probe))
    fid = probe.nuisance_parameters()
    np.testing.assert_array_equal(back.signal(cosmo, fid), probe.signal(cosmo, fid))
    with pytest.raises(AttributeError, match="immutable"):
        back.name = "other"


def test_a_gram_without_the_context_is_refused_when_the_class_is_defined():
    with pytest.raises(TypeError, match="must accept the fiducial context"):
        class OldStyle(Probe):  # noqa: F841
            def nuisance_parameters(self):
                return {}

            def requirements(self):
                return CosmologyRequirements(1.0, 1.0, False)

            def signal(self, cosmo: Cosmology, params):
                return np.zeros(1)

            def gram(self, fiducial_signal, derivs):
                return np.zeros((len(derivs), len(derivs)))
