"""Every bad-input error of ``fishcast run`` / ``fishcast batch`` names file, line and key.

The house rule: bad input never produces a traceback, but a message naming the file, the line
and the key, and exit 2. The survey loader locates what it finds itself (``_Problems``,
``pydantic_problems``, ``line_of``); this module covers what is found later -- while the
probes are built from the tables the YAML names, while planning, while resolving derivative
ladders from an earlier run's steps -- and holds the structural test that fails when a new
unlocated site appears (:func:`test_every_mutation_of_a_small_survey_is_located`).

Inventory: every ``raise InputError / SurveyError / FileFormatError`` in fishcast/ that the
content of a survey YAML, a ``--set`` override, a grid file, or a file a YAML names (n(z)
table, <L>/L* table, density table, ``steps_from`` HDF5) can reach from ``run`` / ``batch``.
"Before" is the state of main at 14271ad; "now" what this module tests (test name in
brackets).

================================================  =============================================  ===========================================
site                                              before                                         now
================================================  =============================================  ===========================================
yamlio.load_yaml / _convert (syntax, tags,        file:line: key (the YAML node's line); an      unchanged [structural test]
duplicate keys, nesting, alias bombs)             empty file, or nesting past Python's
                                                  recursion limit: the file alone (no key)
yamlio.read_yaml_file (the survey file itself     file (no key exists: the file as a whole)      unchanged (not content of a key)
unreadable, too big, control characters)          / file:line for a control character
survey.apply_overrides ``--set`` a key through    file: key (no line)                            file:line: key -- the line of the longest
a non-mapping ("cannot set this key")                                                            prefix the file holds [test_set_...]
survey._validate (pydantic), check_numbers,       file:line: key                                 unchanged [structural test]
_fiducials, _free_names, _priors, _check_flat,
_check_domains, _check_memory, _settings,
_check_requirements, _declared_parameters
survey._build_probes: any error of a probe's      file:line: probes.<section> (the section's     file:line: the key the error carries
build (below)                                     line), whatever key it was about               (errors.at_key), under the section
redshift.read_table (n(z) / <L>/L* table: not     section line; the table file (and its line)    file:line: probes.weak_lensing.nz.file
two columns, not a number: TABLE:LINE; too few    in the message, not the key that names it      (or ...sources.nz.file, counts[i].nz.file,
rows, non-finite, not increasing: TABLE)                                                         ...luminosity_ratio_file): TABLE[:LINE]:
                                                                                                 [test_table_named_by_the_yaml]
io.reading.read_text (table missing, a folder,    as above                                       as above [test_table_named_by_the_yaml]
a FIFO, too big, not UTF-8)
redshift.TabulatedNz (z < 0, n < 0, integrates    as above                                       as above [test_table_named_by_the_yaml]
to zero)
weak_lensing.read_luminosity_ratio (<= 0, ends    as above                                       ...intrinsic_alignment.luminosity_ratio_file
below integration.z_max)                                                                         [test_table_named_by_the_yaml]
redshift.SmailNz (z0, alpha, beta)                section line                                   ...nz (schema bounds make it unreachable
                                                                                                 today; kept located)
redshift.equipopulated_edges, bin edges, empty    section line                                   ...bins [structural test]
bins (TomographicBins)
redshift.GaussianOutlierPhotoz (photo-z params)   section line                                   ...photoz (schema bounds first)
multitracer_clustering._read_table (density       section line; table file named                 probes.counts_in_cells.tracers[i].density
table)                                                                                           .file: TABLE: ... [test_table_named_...]
multitracer_clustering: "has no objects in any    section line                                   ...tracers[i].density [test_probe_...]
shell", bias.values per shell, no bias where      section line                                   ...tracers[i].bias.values [test_probe_...]
present, shell k_max <= k_min                     section line                                   ...k_max
photometric CountsSample (bias values per bin),   section line                                   ...counts[i].bias; ...ell.<spectrum>
no band centre in a spectrum's range
plan.check_planned_point (stencil value not       file:line: key (Survey.where, a255cb7)         unchanged (tests in test_faults_round2,
finite, lost in rounding, outside CAMB ranges)                                                   test_cli_run) [structural test]
plan.known_starts: steps_from file missing, not   the HDF5 file and "(derivatives.steps_from)";  file:line: derivatives.steps_from: H5: ...
HDF5, no /derivatives, a step not a number or     no YAML file or line                           [test_steps_from_*]
not positive (+ io.hdf5._open, io.reading.
check_hdf5_tree)
derivatives.resolve_spec / plan_ladder from       bare message (no file): "Omega_m: no stencil   file:line: derivatives.parameters.<name>
plan.stencils (a step from steps_from that no     with step ... fits"                            (if the YAML has it), else
ladder fits; the YAML's own settings are                                                         derivatives.steps_from [test_steps_from_...]
refused at load since a255cb7)
any other InputError out of run_forecast          bare message                                   Survey.locate (run; batch design tasks):
(a site not listed here)                                                                         file:line: key from the error's key; the
                                                                                                 file at least [test_cli_locates_a_late_...]
batch.load_grid (grid file: pydantic, axes,       file:line: key                                 unchanged (test_fuzz_inputs grids)
set, survey key)
batch.plan_batch: a design's load or planning     each design's reason located in the base       the same, and where the grid sets a value
error                                             survey, at the line of the value the grid      of the key: "(this design sets KEY = V:
                                                  replaced                                       GRID:LINE: axes.KEY)" [test_a_design_...]
batch.run_batch "no design of the grid is         the header line bare                           "GRID:LINE: survey: no design of the grid
valid"                                                                                           is valid:" [test_batch_...]
cosmology.CosmologySettings nonlinear_model,      --                                             unreachable: the schema (Literal) and the
cosmology "exactly one of sigma8 and A_s"                                                        loader (_fiducials) refuse first
fisher.FisherMatrix, diagnostics (shapes, non-    --                                             unreachable from input content: matrices
finite matrices), weak_lensing.ell_factor,                                                       the code built; priors checked at load
derivatives shapes, redshift nodes/shifts
run: output is the survey; batch.prepare_output;  --                                             options, not file content: the option
execute (workers, cluster, backend)                                                              named (out of this inventory)
report, mock, plotting, simfisher, reparam,       --                                             other commands (show, compare, mock, plot,
io.exchange, io.simulations, io.diagnostics                                                      simfisher, import, derive)
================================================  =============================================  ===========================================
"""

from __future__ import annotations

import copy
import pathlib
import re
import textwrap
import time

import h5py
import pytest
import yaml

from fishcast.errors import FishcastError, InputError
from tests.test_faults import TOY, invoke

#: a located line of a message: ``FILE.yaml:LINE: `` at its start
LOCATED = re.compile(r"^.*\.yaml:\d+: ")


def line_with(text: str, marker: str) -> int:
    """1-based line of the first line of ``text`` that contains ``marker``."""
    return next(i for i, line in enumerate(text.splitlines(), start=1) if marker in line)


def assert_refused(res, survey: pathlib.Path, line: int, key: str, *more: str, out: pathlib.Path | None = None):
    """Exit 2, no traceback, ``survey:line: key: `` in the output, and each of ``more``."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert f"{survey}:{line}: {key}: " in res.output, res.output
    for m in more:
        assert m in res.output, (m, res.output)
    if out is not None:
        assert not out.exists()


def run_args(survey, out, *extra):
    return ("run", survey, "-o", out, "--no-cache", "-q", "--workers", "1", *extra)


# ============================================================== the small surveys (no CAMB)
NZ = "# z  n(z)\n0.0 0.0\n0.5 1.0\n1.0 2.0\n2.0 1.0\n3.0 0.0\n"
LUM = "0.0 0.3\n1.0 0.5\n2.0 0.6\n3.5 0.7\n"
DENSITY = "0.5 0.0\n0.8 2.0e-4\n1.2 2.0e-4\n1.5 0.0\n"

WL = textwrap.dedent("""\
    name: wl-located
    cosmology: {nonlinear_model: none, accuracy: {n_z: 20, n_k: 60, k_max: 2.0}}
    parameters:
      fiducial: {Omega_m: 0.3, Omega_b: 0.05, h: 0.7, n_s: 0.96, sigma8: 0.8}
      free: [Omega_m, A_IA]
    derivatives: {mode: fixed, stencil: 3-point}
    diagnostics: {gaussian_check: false}
    probes:
      weak_lensing:
        f_sky: 0.1
        ell: {min: 10, max: 100, n_bands: 3}
        n_gal: 10
        shape_noise: {sigma_e: 0.3, convention: multiplies_inverse_density}
        nz: {type: table, file: nz.txt}
        bins: {type: equipopulated, n_bins: 2, z_min: 0.1, z_max: 1.5}
        photoz: {sigma_b: 0.05}
        intrinsic_alignment:
          model: nla
          C_IA: 0.0134
          luminosity_ratio_file: lum.txt
        integration: {z_max: 3.0, n_z: 31}
    """)

PHOTO = textwrap.dedent("""\
    name: photo-located
    cosmology: {nonlinear_model: none, accuracy: {n_z: 20, n_k: 60, k_max: 2.0}}
    parameters:
      fiducial: {Omega_m: 0.3, Omega_b: 0.05, h: 0.7, n_s: 0.96, sigma8: 0.8}
      free: [Omega_m, "b_*"]
    derivatives: {mode: fixed, stencil: 3-point}
    diagnostics: {gaussian_check: false}
    probes:
      photometric:
        f_sky: 0.1
        spectra: [WL, GCph, XC]
        ell: {n_bands: 3, WL: {min: 10, max: 100}, GCph: {min: 10, max: 100}, XC: {min: 10, max: 100}}
        sources:
          n_gal: 10
          shape_noise: {sigma_e: 0.3, convention: multiplies_inverse_density}
          nz: {type: table, file: nz.txt}
          bins: {type: equipopulated, n_bins: 2, z_min: 0.1, z_max: 1.5}
          photoz: {sigma_b: 0.05}
          intrinsic_alignment: {model: none}
        counts:
          - name: g
            n_gal: 5
            bias: {model: per_bin}
            nz: {type: table, file: nz_g.txt}
            bins: {type: edges, edges: [0.2, 0.8, 1.4]}
            photoz: {sigma_b: 0.05}
        integration: {n_z: 31, z_max: 3.0}
    """)

#: the toy counts-in-cells survey, tracer B's density from a table
CELLS = TOY.replace("density: {unit: (h/Mpc)^3, values: [2.0e-4]}", "density: {unit: (h/Mpc)^3, file: dens.txt}")
assert CELLS != TOY


def write(tmp_path: pathlib.Path, text: str, name: str = "s.yaml", **tables: str) -> pathlib.Path:
    """The survey ``text`` as ``tmp_path/name``, and the tables it names (the default good
    ones unless given: ``nz``, ``nz_g``, ``lum``, ``dens``)."""
    files = {"nz.txt": NZ, "nz_g.txt": NZ, "lum.txt": LUM, "dens.txt": DENSITY}
    for k, v in tables.items():
        files[k.replace("_txt", ".txt")] = v
    for fname, content in files.items():
        if content is not None:
            (tmp_path / fname).write_text(content)
    p = tmp_path / name
    p.write_text(text)
    return p


def test_the_small_surveys_are_valid(tmp_path):
    for text in (WL, PHOTO, CELLS):
        s = write(tmp_path, text)
        res = invoke("validate", s)
        assert res.exit_code == 0, res.output


# ==================================================== 1. files named by the YAML (tables)
#: (survey, the table's file, its bad content (None: no such file), the YAML key that names
#:  it, the marker of that key's line, what the message says of the table)
TABLE_CASES = {
    "nz not a number": (WL, "nz_txt", "0 0\n0.5 1\n1.0 x\n2 1\n", "probes.weak_lensing.nz.file", "nz:",
                        "nz.txt:3: not a number in the n(z) table"),
    "nz three columns": (WL, "nz_txt", "0 0\n0.5 1 2\n1 2\n2 1\n", "probes.weak_lensing.nz.file", "nz:",
                         "nz.txt:2: the n(z) table must have two columns"),
    "nz missing": (WL, "nz_txt", None, "probes.weak_lensing.nz.file", "nz:", "nz.txt: no such file"),
    "nz too short": (WL, "nz_txt", "0 0\n1 1\n", "probes.weak_lensing.nz.file", "nz:", "at least 4 rows"),
    "nz decreasing": (WL, "nz_txt", "0 0\n1 1\n0.5 2\n2 1\n", "probes.weak_lensing.nz.file", "nz:",
                      "must be strictly increasing"),
    "nz zero": (WL, "nz_txt", "0 0\n1 0\n2 0\n3 0\n", "probes.weak_lensing.nz.file", "nz:", "integrates to zero"),
    "nz negative z": (WL, "nz_txt", "-1 0\n1 1\n2 1\n3 0\n", "probes.weak_lensing.nz.file", "nz:",
                      "negative redshifts"),
    "lum negative": (WL, "lum_txt", "0 0.3\n1 -0.5\n2 0.6\n3.5 0.7\n",
                     "probes.weak_lensing.intrinsic_alignment.luminosity_ratio_file", "luminosity_ratio_file",
                     "lum.txt: <L>/L* must be positive"),
    "lum short in z": (WL, "lum_txt", "0 0.3\n0.5 0.5\n0.8 0.6\n1.0 0.7\n",
                       "probes.weak_lensing.intrinsic_alignment.luminosity_ratio_file", "luminosity_ratio_file",
                       "it must reach integration.z_max"),
    "lum not a number": (WL, "lum_txt", "0 0.3\n1 nope\n", "probes.weak_lensing.intrinsic_alignment.luminosity_ratio_file",
                         "luminosity_ratio_file", "lum.txt:2: not a number"),
    "sources nz": (PHOTO, "nz_txt", "0 0\nzero 1\n", "probes.photometric.sources.nz.file", "file: nz.txt",
                   "nz.txt:2: not a number"),
    "counts nz": (PHOTO, "nz_g_txt", None, "probes.photometric.counts[0].nz.file", "file: nz_g.txt",
                  "nz_g.txt: no such file"),
    "density missing": (CELLS, "dens_txt", None, "probes.counts_in_cells.tracers[1].density.file", "dens.txt",
                        "dens.txt: no such file"),
    "density negative": (CELLS, "dens_txt", "0.5 0\n0.8 -1\n1.2 1\n", "probes.counts_in_cells.tracers[1].density.file",
                         "dens.txt", "values must be finite and >= 0"),
    "density one column": (CELLS, "dens_txt", "0.5\n0.8\n", "probes.counts_in_cells.tracers[1].density.file",
                           "dens.txt", "need two columns"),
}


@pytest.mark.parametrize("case", sorted(TABLE_CASES))
def test_table_named_by_the_yaml(case, tmp_path, no_camb):
    """A bad table: the message names the YAML file, the line and the key that names the
    table, then the table's file (and its line where one line is at fault)."""
    text, table, content, key, marker, says = TABLE_CASES[case]
    s = write(tmp_path, text, **{table: content})
    if content is None:
        (tmp_path / table.replace("_txt", ".txt")).unlink(missing_ok=True)
    out = tmp_path / "o.h5"
    res = invoke(*run_args(s, out))
    assert_refused(res, s, line_with(text, marker), key, says, out=out)
    assert str(tmp_path / table.replace("_txt", ".txt")) in res.output  # the table by its path
    assert no_camb == []


# =================================================== 2. a probe's checks of its own section
PROBE_CASES = {
    # tracer B's density table is zero inside the shell [0.9, 1.1]
    "no objects": (CELLS, {"dens_txt": "0.1 0\n0.5 0\n1.5 0\n2.0 0\n"}, "probes.counts_in_cells.tracers[1].density",
                   "dens.txt", "tracer B has no objects in any shell"),
    "bias per shell": (CELLS.replace("bias: {form: per_shell, values: [2.0]}", "bias: {form: per_shell, values: [2.0, 1.0]}"),
                       {}, "probes.counts_in_cells.tracers[1].bias.values", "name: B",
                       "bias.values needs one value per shell"),
}


@pytest.mark.parametrize("case", sorted(PROBE_CASES))
def test_probe_checks_are_located_at_their_key(case, tmp_path, no_camb):
    text, tables, key, marker, says = PROBE_CASES[case]
    s = write(tmp_path, text, **tables)
    out = tmp_path / "o.h5"
    res = invoke(*run_args(s, out))
    assert_refused(res, s, line_with(text, marker), key, says, out=out)
    assert no_camb == []


# ========================================================= 3. --set through a non-mapping
def test_set_a_key_through_a_value_is_located_at_the_value(tmp_path, no_camb):
    s = write(tmp_path, CELLS)
    out = tmp_path / "o.h5"
    res = invoke(*run_args(s, out, "--set", "probes.counts_in_cells.f_sky.x=1"))
    # the line of the longest prefix the file holds: f_sky's
    assert_refused(res, s, line_with(CELLS, "f_sky:"), "probes.counts_in_cells.f_sky.x",
                   "cannot set this key: probes.counts_in_cells.f_sky is not a mapping", out=out)
    res = invoke(*run_args(s, out, "--set", "probes.counts_in_cells.f_sky.x.y=1"))
    assert_refused(res, s, line_with(CELLS, "f_sky:"), "probes.counts_in_cells.f_sky.x.y",
                   "cannot set this key: probes.counts_in_cells.f_sky is not a mapping", out=out)


# =================================================================== 4. steps_from
def steps_survey(tmp_path, target, extra: str = "") -> tuple[pathlib.Path, str]:
    text = TOY.replace("derivatives: {mode: fixed, stencil: 3-point}",
                       f"derivatives:\n  mode: fast\n  steps_from: {target}\n{extra}")
    return write(tmp_path, text), text


@pytest.mark.parametrize("kind", ["missing", "text", "no derivatives"])
def test_steps_from_an_unreadable_file_is_located_at_the_key(kind, tmp_path, no_camb):
    target = tmp_path / "earlier.h5"
    if kind == "text":
        target.write_text("not hdf5\n")
    elif kind == "no derivatives":
        with h5py.File(target, "w") as f:
            f.attrs["schema_version"] = "1.0"
    s, text = steps_survey(tmp_path, target)
    out = tmp_path / "o.h5"
    res = invoke(*run_args(s, out))
    assert_refused(res, s, line_with(text, "steps_from"), "derivatives.steps_from", str(target), out=out)
    assert no_camb == []


@pytest.mark.parametrize("step, where, says", [
    # a step that is no step
    (float("nan"), "steps_from", "chosen_step = nan is not a positive, finite step"),
    (-0.01, "steps_from", "is not a positive, finite step"),
    # a step that takes the stencil out of what CAMB may be given: found at planning
    (3.0, "steps_from", "cannot be given to CAMB"),
    # a step no stencil fits in the domain [0, 1] the YAML gives Omega_m: found while
    # resolving the ladders, located at the YAML's settings of Omega_m
    (3.0, "parameters", "no stencil with step"),
])
def test_steps_from_a_bad_step_is_located(step, where, says, tmp_path, toy_h5, no_camb):
    bad = tmp_path / "steps.h5"
    bad.write_bytes(toy_h5.read_bytes())
    with h5py.File(bad, "r+") as f:
        f["derivatives/Omega_m"].attrs["chosen_step"] = step
    extra = "  parameters:\n    Omega_m: {lower: 0.0, upper: 1.0}\n" if where == "parameters" else ""
    s, text = steps_survey(tmp_path, bad, extra)
    out = tmp_path / "o.h5"
    res = invoke(*run_args(s, out))
    if where == "parameters":
        assert_refused(res, s, line_with(text, "Omega_m: {lower"), "derivatives.parameters.Omega_m", says, out=out)
    else:
        assert_refused(res, s, line_with(text, "steps_from"), "derivatives.steps_from", says, "steps.h5", out=out)
    assert no_camb == []


# ============================================================= 5. the CLI's net, and batch
@pytest.mark.parametrize("key", [("probes", "counts_in_cells", "k_max"), ()])
def test_cli_locates_a_late_input_error(key, tmp_path, monkeypatch, no_camb):
    """An InputError out of the forecast that its site did not locate: the CLI puts the
    file, and the line of the key it carries, in front (a site without a key: the file)."""
    import fishcast.pipeline.forecast as fc

    def late(*a, **kw):
        exc = InputError("k_max is too large for this test")
        exc.key = key
        raise exc

    monkeypatch.setattr(fc, "run_forecast", late)
    s = write(tmp_path, CELLS)
    out = tmp_path / "o.h5"
    res = invoke(*run_args(s, out))
    assert res.exit_code == 2 and not out.exists(), res.output
    if key:
        assert f"error: {s}:{line_with(CELLS, 'k_max: 0.10')}: probes.counts_in_cells.k_max: k_max is too large" \
            in res.output, res.output
    else:
        assert f"error: {s}: k_max is too large" in res.output, res.output


def test_batch_with_no_valid_design_is_located(tmp_path, no_camb):
    """Every design of a grid fails on its base survey's bad n(z) table: exit 2; the header
    names the grid's line of the base survey, each design the base survey's line and key."""
    s = write(tmp_path, WL, nz_txt="0 0\n0.5 1\n1.0 x\n2 1\n")
    grid_text = textwrap.dedent(f"""\
        name: g
        survey: {s.name}
        axes:
          probes.weak_lensing.f_sky: [0.1, 0.2]
        """)
    grid = tmp_path / "grid.yaml"
    grid.write_text(grid_text)
    out = tmp_path / "out"
    res = invoke("batch", grid, "-o", out, "--no-cache", "-q", "--workers", "1")
    assert res.exit_code == 2, res.output
    assert f"error: {grid}:2: survey: no design of the grid is valid" in res.output, res.output
    line = line_with(WL, "nz:")
    assert res.output.count(f"{s}:{line}: probes.weak_lensing.nz.file: {tmp_path / 'nz.txt'}:3: ") == 2, res.output
    assert not list(out.glob("*.h5")) if out.exists() else True


# ================================================ 6. the structural test: mutations of leaves
#: bad values of every kind put in place of each leaf of a small valid survey
BAD_VALUES = (-1.0, 0, 1.0e300, -1.0e300, "nan", "abc", True, [], {}, [1.0e300, -1.0])
#: bad contents put in place of each table a survey names
BAD_TABLES = (None, "", "0 0\n", "0 x\n1 1\n2 2\n3 3\n", "0 nan\n1 1\n2 2\n3 3\n", "0 -1\n1 -1\n2 -1\n3 -1\n",
              "3 1\n2 1\n1 1\n0 1\n", "0 1 2\n", "0 0\n1 0\n2 0\n3 0\n", "\x00\x01\n")

#: the small surveys, with derivative settings that reach the ladder checks
STRUCTURAL = {
    "cells": CELLS.replace("derivatives: {mode: fixed, stencil: 3-point}",
                           "derivatives:\n  mode: sweep\n  n_rungs: 4\n  window: 3\n  h_max: 0.05\n"
                           "  parameters:\n    Omega_m: {h_max: 0.1, n_rungs: 4, scale: 0.3, lower: 0.05, upper: 0.95}\n"
                           "    sigma8: {step: 0.01}"),
    "wl": WL,
    "photometric": PHOTO,
}


def leaves(node, prefix=()):
    """(path, value) of every leaf of a YAML document, and of every list as a whole."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, prefix + (k,))
    elif isinstance(node, list):
        yield prefix, node
        for i, v in enumerate(node):
            yield from leaves(v, prefix + (i,))
    else:
        yield prefix, node


def set_at(data, path, value):
    for p in path[:-1]:
        data = data[p]
    data[path[-1]] = value


@pytest.mark.filterwarnings("error::RuntimeWarning", "error::UserWarning")  # no numpy overflow or loadtxt
# warning may reach the terminal on the way to the located message (k_max 1e300, ell.max 1e308, an empty table)
def test_every_mutation_of_a_small_survey_is_located(tmp_path, no_camb):
    """Every leaf of each small survey replaced by each bad value of :data:`BAD_VALUES`, and
    every table it names by each bad content of :data:`BAD_TABLES`, through the loader and
    the planner (CAMB refused): each either plans, or raises a FishcastError whose every
    line is ``FILE.yaml:LINE: ...``. A new check that is not located fails here."""
    from fishcast.pipeline.plan import plan_survey
    from fishcast.survey import survey_from_text

    unlocated, crashed, counts = [], [], {"planned": 0, "refused": 0}
    t0 = time.process_time()

    def check(label, text, folder):
        try:
            plan_survey(survey_from_text(text, str(folder / "m.yaml"), folder))
            counts["planned"] += 1
        except FishcastError as exc:
            counts["refused"] += 1
            assert exc.exit_code == 2, (label, str(exc))
            for line in str(exc).splitlines():
                if not LOCATED.match(line):
                    unlocated.append((label, line))
        except Exception as exc:  # noqa: BLE001 - a traceback: the failure this test is for
            crashed.append((label, f"{type(exc).__name__}: {exc}"))

    for name, text in STRUCTURAL.items():
        folder = tmp_path / name
        folder.mkdir()
        write(folder, text)
        base = yaml.safe_load(text)
        for path, _ in list(leaves(base)):
            for bad in BAD_VALUES:
                data = copy.deepcopy(base)
                set_at(data, path, bad)
                check((name, path, bad), yaml.safe_dump(data, sort_keys=False), folder)
        for table in ("nz.txt", "nz_g.txt", "lum.txt", "dens.txt"):
            if table not in text:
                continue
            for content in BAD_TABLES:
                tfolder = tmp_path / f"{name}-{table}-{BAD_TABLES.index(content)}"
                tfolder.mkdir()
                write(tfolder, text)
                if content is None:
                    (tfolder / table).unlink()
                else:
                    (tfolder / table).write_text(content)
                check((name, table, content), text, tfolder)
    assert not crashed, crashed[:10]
    assert not unlocated, unlocated[:10]
    assert counts["refused"] > counts["planned"] > 0, counts  # the mutations bite, and some still plan
    assert no_camb == []
    assert time.process_time() - t0 < 30


def test_a_design_whose_grid_value_is_bad_names_the_grid_line(tmp_path, no_camb):
    """A value the grid sets is refused in the base survey's line of the key it replaced; the
    reason adds where the grid sets it (axes or set), so the user finds the value."""
    s = write(tmp_path, WL)
    grid_text = textwrap.dedent(f"""\
        name: g
        survey: {s.name}
        set:
          probes.weak_lensing.ell.n_bands: 3
        axes:
          probes.weak_lensing.f_sky: [0.1, 2.0]
        """)
    grid = tmp_path / "grid.yaml"
    grid.write_text(grid_text)
    from fishcast.pipeline.batch import load_grid, plan_batch

    bp = plan_batch(load_grid(grid))
    (failure,) = bp.failed
    assert failure.exit_code == 2
    assert failure.reason.startswith(f"{s}:{line_with(WL, 'f_sky:')}: probes.weak_lensing.f_sky: "), failure.reason
    assert failure.reason.endswith(f"(this design sets probes.weak_lensing.f_sky = 2: {grid}:6: "
                                   "axes.probes.weak_lensing.f_sky)"), failure.reason


def test_a_batch_design_task_locates_a_late_input_error(tmp_path, monkeypatch, no_camb):
    """The same net in a batch design's task (it runs the design's forecast)."""
    import fishcast.pipeline.forecast as fc
    from fishcast.pipeline.batch import design_task
    from fishcast.survey import load_survey

    def late(*a, **kw):
        exc = InputError("k_max is too large for this test")
        exc.key = ("probes", "counts_in_cells", "k_max")
        raise exc

    monkeypatch.setattr(fc, "run_forecast", late)
    s = write(tmp_path, CELLS)
    with pytest.raises(InputError) as info:
        design_task(load_survey(s), {}, str(tmp_path / "d.h5"), None, False, ("w0", "wa"), 0)
    assert str(info.value) == (f"{s}:{line_with(CELLS, 'k_max: 0.10')}: probes.counts_in_cells.k_max: "
                               "k_max is too large for this test")
    assert not (tmp_path / "d.h5").exists()
