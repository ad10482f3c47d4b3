"""What a worker process of ``fishcast run`` imports (issue 15: the CPU outside CAMB).

A spawned worker unpickles CosmologySettings (fishcast.cosmology) and the evaluation task
(fishcast.pipeline.execute) and uses the cosmology cache (fishcast.pipeline.cache, which
needs fishcast.io's atomic writer and safe readers). None of that needs the probes, pydantic,
h5py or the Fisher algebra; each of them cost the workers CPU on every run (measured with
tests/benchmarks/bench_overhead.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout.split()
    return set(out)


def test_a_worker_imports_no_probe_pydantic_or_hdf5():
    mods = _modules_after("import fishcast.pipeline.execute, fishcast.cosmology, fishcast.pipeline.cache\n"
                          "from fishcast.cosmology import CosmologySettings, compute_many")
    assert "fishcast.cosmology" in mods and "fishcast.io.atomic" in mods  # the scan sees them
    heavy = {"pydantic", "h5py", "fishcast.probes", "fishcast.survey", "fishcast.fisher", "fishcast.io.hdf5",
             "scipy.ndimage", "yaml"}
    assert mods & heavy == set()


def test_fishcast_io_names_resolve_on_first_use():
    import fishcast.io as fio
    from fishcast.io import hdf5

    assert fio.write_forecast is hdf5.write_forecast
    assert fio.SCHEMA_VERSION == hdf5.SCHEMA_VERSION
    from fishcast.io import AtomicFiles, dataset, open_forecast  # noqa: F401  (from-imports too)

    assert {"write_forecast", "read_fisher", "check_output_path"} <= set(dir(fio))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        fio.nonexistent  # noqa: B018


def test_cosmology_still_reads_the_probes_requirements():
    # settings_for takes CosmologyRequirements without importing it at module level
    from fishcast.cosmology import settings_for
    from fishcast.probes.base import CosmologyRequirements

    st = settings_for(CosmologyRequirements(z_max=2.0, k_max=3.0, nonlinear=True))
    assert st.z_max == 2.0 and st.k_max >= 3.0 and st.nonlinear_model == "takahashi"


def test_a_survey_imports_the_modules_of_its_own_probes_only(tmp_path):
    """The built-in probes are registered by name (fishcast.probes): a weak-lensing survey
    validates its section with the weak-lensing model and imports neither the multi-tracer
    nor the photometric module (~45 ms of the start-up of `fishcast run`); the schema still
    holds every probe, and the survey pickles into a fresh process (a batch design's worker),
    which imports the same probe module only."""
    import pathlib

    recipe = pathlib.Path(__file__).parents[1] / "recipes" / "euclid-wl-pessimistic.yaml"
    pickled = tmp_path / "survey.pickle"
    others = {"fishcast.probes.multitracer_clustering", "fishcast.probes.photometric"}
    mods = _modules_after(f"import pickle\nfrom fishcast.survey import load_survey\n"
                          f"sv = load_survey({str(recipe)!r})\n"
                          f"open({str(pickled)!r}, 'wb').write(pickle.dumps(sv))\n"
                          f"assert sv.config.probes.weak_lensing.f_sky == 0.3636")
    assert "fishcast.probes.weak_lensing" in mods and "fishcast.survey" in mods
    assert mods & others == set()
    mods = _modules_after(f"import pickle\nsv = pickle.loads(open({str(pickled)!r}, 'rb').read())\n"
                          f"assert sv.probes[0].name == 'weak_lensing' and sv.config.probes.photometric is None")
    assert "fishcast.probes.weak_lensing" in mods and mods & others == set()
    from fishcast.survey import schema

    assert {"weak_lensing", "counts_in_cells", "photometric"} <= set(schema()["$defs"]["ProbesConfig"]["properties"])


def test_a_section_the_survey_holds_is_validated_by_its_model():
    """Sections are typed by the sections the file holds: an unknown key inside another
    probe's section is found (its model imported then), an unknown section is an unknown key,
    and a registered section given as null is accepted as absent."""
    import pathlib

    from fishcast.errors import SurveyError
    from fishcast.survey import survey_from_text

    recipe = pathlib.Path(__file__).parents[1] / "recipes" / "euclid-wl-pessimistic.yaml"
    text = recipe.read_text()
    with pytest.raises(SurveyError, match="probes.photometric.nonsense: unknown key"):
        survey_from_text(text.replace("probes:\n", "probes:\n  photometric: {nonsense: 1}\n"), "s.yaml", recipe.parent)
    with pytest.raises(SurveyError, match="probes.nonsense: unknown key"):
        survey_from_text(text.replace("probes:\n", "probes:\n  nonsense: {}\n"), "s.yaml", recipe.parent)
    sv = survey_from_text(text.replace("probes:\n", "probes:\n  photometric: null\n"), "s.yaml", recipe.parent)
    assert [p.name for p in sv.probes] == ["weak_lensing"] and sv.config.probes.photometric is None
