"""Fuzzed survey and grid files (issue 7, part 1): every recipe in recipes/ is mutated by
hypothesis -- keys deleted or renamed, values of the wrong type, out-of-range numbers, NaN
and inf, very long lists, unicode keys and values, duplicate keys, deep nesting, unknown
keys, truncated files -- and given to `fishcast validate` (and, for a cached subset, to
`fishcast run`; for the grid recipe, to the grid reader, the design planner and
`fishcast batch`).

Each input either validates (and runs), or exits 2 with a message that locates the problem
(file:line: key: ...) at a key of the file; never a traceback, never a hang (a per-case
timeout), never an output file from a failed run.

The runs are deterministic: ``derandomize=True`` (the examples are a function of the test),
no example database, no deadline (a per-case SIGALRM timeout that is generous for a loaded
machine stands in for it). About 560 validation cases, 60 grid cases, 50 runs; ~40 s on 2 cores.
"""

from __future__ import annotations

import contextlib
import copy
import math
import pathlib
import re
import signal

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fishcast.cli.main import cli
from fishcast.errors import SurveyError, printable
from fishcast.yamlio import dotted

ROOT = pathlib.Path(__file__).resolve().parent.parent
SURVEY_RECIPES = sorted(p for p in (ROOT / "recipes").glob("*.yaml") if not p.name.startswith("grid-"))
GRID_RECIPES = sorted((ROOT / "recipes").glob("grid-*.yaml"))

#: validation examples per survey recipe (5 recipes) and for the grid recipe
N_VALIDATE = 100
N_GRID = 60
#: `fishcast run` examples per runnable recipe (2 recipes, cached)
N_RUN = 25
#: seconds before a case counts as a hang (validation takes ~0.01-0.2 s)
VALIDATE_TIMEOUT = 60.0  # generous: the suite may share 2 cores with other jobs
RUN_TIMEOUT = 120.0

# no explain phase: it replays a failing case under sys.settrace (10-50x slower), which turns
# one slow case into a cascade of timeouts and hides the first failure's own message
FUZZ = dict(derandomize=True, database=None, deadline=None, print_blob=False,
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                   HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])


class CaseTimeout(BaseException):
    """Raised by SIGALRM inside a case (a BaseException: nothing in fishcast catches it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise CaseTimeout(f"the case did not finish within {seconds} s (a hang)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------- the inputs
def recipe_data(recipe: pathlib.Path, lumratio: pathlib.Path) -> dict:
    """The recipe as data, with its file paths made absolute (the mutants live elsewhere)."""
    data = yaml.safe_load(recipe.read_text())
    probes = data.get("probes", {})
    for ia in (probes.get("weak_lensing", {}).get("intrinsic_alignment", {}),
               (probes.get("photometric", {}).get("sources") or {}).get("intrinsic_alignment", {})):
        if ia.get("luminosity_ratio_file"):
            ia["luminosity_ratio_file"] = str(lumratio)
    if "survey" in data and "axes" in data:  # a grid: its base survey
        data["survey"] = str((recipe.parent / data["survey"]).resolve())
    return data


def all_paths(node, prefix=()):
    """Every key path of a YAML document (mappings by key, sequences by index)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from all_paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield prefix + (i,)
            yield from all_paths(v, prefix + (i,))


def get_at(node, path):
    for p in path:
        node = node[p]
    return node


def path_exists(data, path) -> bool:
    try:
        get_at(data, path)
        return True
    except (KeyError, IndexError, TypeError):
        return False


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40)
UNICODE = st.sampled_from(["Ωₘ", "σ₈ ☃", "ℎ", "ｆ＿ｓｋｙ", "\u200b", "\u202eevil", "名前", "😀" * 50, "a\tb", "\u0000", "é" * 2000])
WRONG_TYPE = st.one_of(
    st.sampled_from(["abc", "", "1e3x", "true", "null", "[1, 2]", "0x10", "1_000", ".inf"]),
    st.just([]), st.just({}), st.just([1, 2, 3]), st.just({"a": 1}), st.just([["x"]]),
    st.booleans(), st.none(), st.integers(-10**30, 10**30), st.floats(allow_nan=False, allow_infinity=False),
    UNICODE, TEXT,
)
NONFINITE = st.sampled_from([math.nan, math.inf, -math.inf, -math.nan])
#: issue 14: raw control characters in the file (C0, DEL, C1; not tab/newline/CR, which are text)
CONTROL = st.characters(categories=("Cc",)).filter(lambda c: c not in "\t\n\r")
#: issue 14: characters of every unicode category a key may hold by mistake or malice:
#: controls, format (zero-width, bidi), separators (incl. U+2028), digits of other scripts
#: (Nd: '١'; No: '²'), marks, private use, symbols, letters of other scripts
CATEGORY_CHARS = st.characters(categories=("Cc", "Cf", "Zs", "Zl", "Zp", "Nd", "No", "Nl", "Mn", "Me", "Co",
                                           "So", "Sk", "Lo"))
#: issue 14: the extremes of the float type
EXTREME_FLOATS = st.sampled_from([5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                                  -1.7976931348623157e308, -0.0, 1e-300, -1e-300]) | st.floats(allow_nan=False)


def out_of_range(value) -> st.SearchStrategy:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return st.one_of(st.integers(-10**6, 10**6), st.sampled_from([-1.0, 0.0, 1e-300, 1e300, -1e300, 10**30]))
    return st.sampled_from([-value, 0, value * 1e6, -value * 1e6, value + 1e-9, -1, 1e308, -1e308, 5e-324,
                            10**30, -(10**30), int(abs(value)) + 10**6]) | st.floats(allow_nan=False)


OPS = ("delete", "retype", "range", "nonfinite", "long_list", "unicode_value", "unknown_key", "rename_key",
       "deep", "duplicate", "truncate", "double", "control_char", "unicode_key", "bool_number", "extreme_float")


@st.composite
def mutated(draw, data: dict, exclude: tuple = (), ops: tuple = OPS) -> tuple[str, str, tuple]:
    """(YAML text, operation, path) of one mutation of ``data``; ``exclude``: key paths not to
    touch; ``ops``: the mutations to choose from ("perturb" scales a number by 0.5 .. 2)."""
    data = copy.deepcopy(data)
    paths = [p for p in all_paths(data) if not any(p[:len(e)] == e for e in exclude)]
    op = draw(st.sampled_from(ops))
    if op == "perturb":
        numbers = [p for p in paths if isinstance(get_at(data, p), (int, float)) and not isinstance(get_at(data, p), bool)]
        path = draw(st.sampled_from(numbers))
        parent = get_at(data, path[:-1])
        factor = draw(st.floats(0.5, 2.0))
        parent[path[-1]] = type(parent[path[-1]])(parent[path[-1]] * factor) if isinstance(parent[path[-1]], float) \
            else max(1, round(parent[path[-1]] * factor))
        return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10**6), op, path
    if op in ("bool_number", "extreme_float"):
        numbers = [p for p in paths if isinstance(get_at(data, p), (int, float)) and not isinstance(get_at(data, p), bool)]
        if not numbers:
            return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10**6), "none", ()
        path = draw(st.sampled_from(numbers))
        get_at(data, path[:-1])[path[-1]] = draw(st.booleans() if op == "bool_number" else EXTREME_FLOATS)
        return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10**6), op, path
    if op == "control_char":  # a raw control character anywhere in the text
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10**6)
        cut = draw(st.integers(0, len(text)))
        return text[:cut] + draw(CONTROL) + text[cut:], op, ()
    if op in ("duplicate", "truncate"):
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10**6)
        if op == "truncate":
            cut = draw(st.integers(0, len(text)))
            return text[:cut], op, ()
        node = yaml.compose(text)
        maps = []

        def walk(n, path):
            if isinstance(n, yaml.MappingNode):
                if n.value:
                    maps.append((n, path))
                for kn, vn in n.value:
                    walk(vn, path + (kn.value,))
            elif isinstance(n, yaml.SequenceNode):
                for i, vn in enumerate(n.value):
                    walk(vn, path + (i,))

        walk(node, ())
        m, mpath = draw(st.sampled_from(maps))
        i = draw(st.integers(0, len(m.value) - 1))
        key_node, value_node = m.value[i]
        m.value.insert(draw(st.integers(0, len(m.value))), (copy.deepcopy(key_node), copy.deepcopy(value_node)))
        return yaml.serialize(node, allow_unicode=True, width=10**6), op, mpath + (key_node.value,)
    path = draw(st.sampled_from(paths))
    parent = get_at(data, path[:-1])
    last = path[-1]
    value = parent[last]
    if op == "delete":
        del parent[last]
    elif op == "retype":
        parent[last] = draw(WRONG_TYPE.filter(lambda v: type(v) is not type(value)))
    elif op == "range":
        parent[last] = draw(out_of_range(value))
    elif op == "nonfinite":
        parent[last] = draw(NONFINITE)
    elif op == "long_list":
        n = draw(st.sampled_from([1000, 5000, 20000]))
        item = value[0] if isinstance(value, list) and value else value
        parent[last] = draw(st.sampled_from([[item] * n, list(range(n)), [float(i) / n for i in range(n)]]))
    elif op == "unicode_value":
        parent[last] = draw(UNICODE | TEXT)
    elif op == "unknown_key":
        target = value if isinstance(value, dict) else (parent if isinstance(parent, dict) else None)
        if target is None:
            return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10**6), "none", ()
        name = draw(UNICODE | TEXT | st.sampled_from(["f_skyy", "n_gals", "Omega_M", "extra", "1"]))
        if name in target:
            name = name + "_x"
        target[name] = draw(WRONG_TYPE)
        path = (path if target is value else path[:-1]) + (name,)
    elif op == "unicode_key":
        if not isinstance(parent, dict):
            return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10**6), "none", ()
        new = str(last) + draw(st.text(CATEGORY_CHARS, min_size=1, max_size=6))
        if new in parent:
            new = new + "_x"
        parent[new] = parent.pop(last)
        path = path[:-1] + (new,)
    elif op == "rename_key":
        if not isinstance(parent, dict):
            return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10**6), "none", ()
        new = draw(UNICODE | st.sampled_from([str(last).upper(), str(last) + "s", str(last)[:-1] or "x"]))
        if new in parent:
            new = new + "_x"
        parent[new] = parent.pop(last)
        path = path[:-1] + (new,)
    elif op == "deep":
        n = draw(st.sampled_from([10, 40, 70, 200, 3000]))
        kind = draw(st.sampled_from(["list", "map"]))
        parent[last] = "DEEP-NESTING-PLACEHOLDER"  # written as flow text: a dumper would recurse too deep
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10**6)
        flow = "[" * n + "1" + "]" * n if kind == "list" else "{k: " * n + "1" + "}" * n
        return text.replace("DEEP-NESTING-PLACEHOLDER", flow), op, path
    elif op == "double":  # two mutations at once
        parent[last] = draw(WRONG_TYPE)
        other = draw(st.sampled_from(paths))
        with contextlib.suppress(KeyError, IndexError, TypeError):
            op_parent = get_at(data, other[:-1])
            del op_parent[other[-1]]
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10**6)
    return text, op, path


# ---------------------------------------------------------------------------- the oracle
def located_keys(message: str, filename: str) -> list[str]:
    """Keys named by the located lines ``file:line: key: message`` of an error message."""
    keys = []
    for line in message.splitlines():
        m = re.match(re.escape(filename) + r":(\d+): (.+?): ", line)
        if m:
            keys.append(m.group(2))
    return keys


def key_in_document(key: str, data) -> bool:
    """Whether a dotted key (``a.b[2].c``; keys may contain dots, as a grid's axes do) names
    a place of the (mutated) document: it exists, or its parent does (a missing key)."""

    def match(rest: str, node) -> bool:
        if rest == "":
            return True
        if isinstance(node, list):
            m = re.match(r"\[(\d+)\]", rest)
            if not m:
                return False
            i = int(m.group(1))
            tail = rest[m.end():].removeprefix(".")
            return i < len(node) and match(tail, node[i]) or (tail == "" and i == len(node))
        if isinstance(node, dict):
            for key, child in node.items():
                k = printable(key)
                if rest == k:
                    return True
                if rest.startswith(k + ".") and match(rest[len(k) + 1:], child):
                    return True
                if rest.startswith(k + "[") and match(rest[len(k):], child):
                    return True
            return "." not in rest and "[" not in rest  # a missing key of this mapping
        return False

    return bool(key) and match(key, data)


def check_bad_input_message(output: str, filename: str, text: str, op: str, path: tuple) -> None:
    """Exit-2 message: names the file, locates every problem, and names a key of the file."""
    assert output.startswith("error: "), output
    assert "Traceback" not in output
    message = output[len("error: "):]
    assert filename in message.splitlines()[0], message
    for line in message.strip().splitlines():
        assert line.startswith(filename), f"a problem without its file: {line!r}"
    keys = located_keys(message, filename)
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        data = None
    if keys and isinstance(data, dict):
        assert any(key_in_document(k, data) for k in keys), f"no key of the file named: {message}"
    elif (op in ("truncate", "duplicate", "deep", "control_char") or not isinstance(data, dict)
          or "control character" in message):  # refused by the reader (line, column), before keys exist
        # syntax, duplicates, nesting, empty or non-mapping files: a line number or the file
        assert re.search(re.escape(filename) + r"(:\d+)?: ", message), message
    else:
        pytest.fail(f"no key named for {op} at {dotted(path)}: {message}")
    if op in ("unknown_key", "rename_key") and isinstance(data, dict) and len(keys) == 1 \
            and "unknown key" in message:
        assert keys[0] == printable(dotted(path)), message  # a misspelled key is named exactly


def invoke(args: list[str], timeout: float):
    with time_limit(timeout):
        return CliRunner().invoke(cli, [str(a) for a in args])


def check_no_crash(res) -> None:
    assert res.exception is None or isinstance(res.exception, SystemExit), \
        f"uncaught {type(res.exception).__name__}: {res.exception}\n{res.output}"
    assert "Traceback" not in res.output


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize("recipe", SURVEY_RECIPES, ids=[p.stem for p in SURVEY_RECIPES])
def test_mutated_recipe_validates_or_exits_2_naming_the_key(recipe, lumratio, tmp_path):
    base = recipe_data(recipe, lumratio)
    counts = {"valid": 0, "invalid": 0}

    @settings(max_examples=N_VALIDATE, **FUZZ)
    @given(mutated(base))
    def case(mutant):
        text, op, path = mutant
        survey = tmp_path / "mutant.yaml"
        survey.write_text(text, encoding="utf-8")
        before = sorted(tmp_path.iterdir())
        res = invoke(["validate", survey], VALIDATE_TIMEOUT)
        check_no_crash(res)
        assert res.exit_code in (0, 2), res.output
        if op in ("bool_number", "control_char"):  # never valid (issue 14): a boolean is not a number
            assert res.exit_code == 2, (op, path, res.output)
        if res.exit_code == 0:
            assert f"{survey}: valid." in res.output
            counts["valid"] += 1
        else:
            check_bad_input_message(res.output, str(survey), text, op, path)
            counts["invalid"] += 1
        assert sorted(tmp_path.iterdir()) == before  # validation writes nothing

    case()
    assert counts["valid"] + counts["invalid"] >= N_VALIDATE
    assert counts["invalid"] > counts["valid"] > 0  # the mutations bite, and some still validate


def test_library_raises_only_survey_errors(lumratio):
    """The same mutations through the library: a SurveyError (exit 2) or a Survey, nothing else."""
    from fishcast.survey import survey_from_text

    recipe = next(p for p in SURVEY_RECIPES if p.name == "lsst-y10-wl.yaml")
    base = recipe_data(recipe, lumratio)

    @settings(max_examples=60, **FUZZ)
    @given(mutated(base))
    def case(mutant):
        text, _, _ = mutant
        with time_limit(VALIDATE_TIMEOUT):
            try:
                survey_from_text(text, "mutant.yaml", recipe.parent)
            except SurveyError as exc:
                assert exc.exit_code == 2 and exc.problems
                for line, key, msg in exc.problems:
                    assert msg and (line is None or line >= 1)

    case()


# ---------------------------------------------------------------------------- grids
@pytest.mark.parametrize("recipe", GRID_RECIPES, ids=[p.stem for p in GRID_RECIPES])
def test_mutated_grid_is_read_planned_or_refused_naming_the_key(recipe, lumratio, tmp_path):
    """The grid reader and the planner (every design validated, no CAMB call); when the grid
    is refused, `fishcast batch` exits 2 with the same located message and writes nothing."""
    from fishcast.pipeline.batch import grid_from_text, plan_batch

    base = recipe_data(recipe, lumratio)

    @settings(max_examples=N_GRID, **FUZZ)
    @given(mutated(base))
    def case(mutant):
        text, op, path = mutant
        grid = tmp_path / "grid.yaml"
        grid.write_text(text, encoding="utf-8")
        out = tmp_path / "out"
        with time_limit(VALIDATE_TIMEOUT):
            try:
                g = grid_from_text(text, str(grid), tmp_path)
            except SurveyError:
                g = None
        if g is None:
            res = invoke(["batch", grid, "-o", out, "--no-cache", "-q", "--workers", "1"], VALIDATE_TIMEOUT)
            check_no_crash(res)
            assert res.exit_code == 2, res.output
            check_bad_input_message(res.output, str(grid), text, op, path)
            assert not out.exists()
            return
        if len(g.designs) > 200:  # a long axis: plan a sample of the designs
            g = type(g)(**{**g.__dict__, "designs": g.designs[:200]})
        with time_limit(VALIDATE_TIMEOUT):
            bp = plan_batch(g)
        for f in bp.failed:  # a design with bad input fails alone, with a located reason
            assert f.exit_code == 2 and f.stage == "validation", f
            assert "Traceback" not in f.reason and f.reason

    case()


# ---------------------------------------------------------------------------- runs
#: cheap runs: CAMB grids reduced, fixed-step derivatives; only survey keys are mutated (not
#: the CAMB accuracy, which would make single cases minutes long)
RUNNABLE = {
    "two-tracer-toy.yaml": ["cosmology.accuracy.n_z=20", "cosmology.accuracy.n_k=100",
                            "cosmology.accuracy.k_max=2", "derivatives.mode=fixed",
                            "derivatives.stencil=3-point", "diagnostics.gaussian_check=false"],
    "lsst-y10-wl.yaml": ["cosmology.accuracy.n_z=30", "cosmology.accuracy.n_k=120",
                         "cosmology.accuracy.k_max=5", "derivatives.mode=fixed",
                         "derivatives.stencil=3-point", "diagnostics.gaussian_check=false",
                         "probes.weak_lensing.ell.n_bands=6", "probes.weak_lensing.integration.n_z=81",
                         "parameters.free=[sigma8, A_IA, eta_IA, m_1, dz_1]",
                         "parameters.priors={m_1: 0.003, dz_1: 0.001}"],
}


#: mostly mild changes (a number scaled by 0.5 .. 2), so that many mutants run
RUN_OPS = ("perturb",) * 6 + ("delete", "range", "nonfinite", "retype", "unknown_key", "long_list")


@pytest.mark.parametrize("name", sorted(RUNNABLE))
def test_mutated_recipe_runs_or_exits_without_output(name, lumratio, tmp_path, cache_dir):
    """`fishcast run` on mutants (through the session cache): either a whole, readable file
    (exit 0, or 3 with the file written by design), or exit 2 / 4 and no file at all."""
    from fishcast.io import read_fisher

    recipe = ROOT / "recipes" / name
    base = recipe_data(recipe, lumratio)
    sets = [a for s in RUNNABLE[name] for a in ("--set", s)]
    counts = {"ran": 0, "refused": 0}

    @settings(max_examples=N_RUN, **FUZZ)
    @given(mutated(base, exclude=(("cosmology", "accuracy"), ("derivatives",), ("diagnostics",)), ops=RUN_OPS))
    def case(mutant):
        text, op, path = mutant
        work = tmp_path / "w"
        work.mkdir(exist_ok=True)
        for p in work.iterdir():
            p.unlink()
        survey = work / "mutant.yaml"
        survey.write_text(text, encoding="utf-8")
        out = work / "out.h5"
        res = invoke(["run", survey, "-o", out, "--cache-dir", cache_dir, "-q", *sets], RUN_TIMEOUT)
        check_no_crash(res)
        assert res.exit_code in (0, 2, 3, 4), res.output
        if res.exit_code in (0, 3):
            fisher, meta = read_fisher(out)
            assert np.all(np.isfinite(fisher.matrix))
            counts["ran"] += 1
        else:
            assert res.output.startswith("error: ") and len(res.output.strip()) > len("error: ")
            assert sorted(p.name for p in work.iterdir()) == ["mutant.yaml"]  # no output, no temporary file
            counts["refused"] += 1

    case()
    assert counts["ran"] > 0 and counts["refused"] > 0


# ======================================================== libyaml's composer and the fallback
_LOADER_CASES = [
    "a: [1, 2\n", "a: b: c\n", "a: 1\na: 2\n", "a: !!python/object:os.system x\n", "- a\nb: 1\n",
    "a: &x 1\nb: *y\n", "a: 'unterminated\n", "a: 1\n---\nb: 2\n", "", "# a comment only\n", "a:\n\tb: 1\n",
    "a: {b: 1, b: 2}\n", "a: &a [*a]\n", "a: " + "[" * 5000 + "]" * 5000 + "\n",
    "a: " + "{b: " * 100 + "1" + "}" * 100 + "\n",
    "x:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(70)) + " " * 72 + "1\n",
    "a: 1\n  b: 2\n", "key: @bad\n", "? [1, 2]\n: x\n", "<<: {a: 1}\n", "a: 2001-12-14\n",
    "%TAG ! tag:x\n--- !foo 1\n", "a: |\n  text\n b: 1\n", "a: [1.0e+400, .nan, 0x1F, ~, yes, '3']\n",
]


def _load_both(text: str, monkeypatch) -> tuple:
    """load_yaml's result (data and line index) or its message, with libyaml's composer and
    with PyYAML's pure-Python one (the fallback when PyYAML was built without libyaml)."""
    from fishcast.yamlio import load_yaml

    out = []
    for with_libyaml in (True, False):
        monkeypatch.setattr(yaml, "__with_libyaml__", with_libyaml)
        try:
            out.append(load_yaml(text, "f.yaml"))
        except SurveyError as exc:
            out.append(str(exc))
    return tuple(out)


@pytest.mark.skipif(not getattr(yaml, "__with_libyaml__", False), reason="PyYAML without libyaml")
@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_libyaml_composes_what_the_pure_python_reader_composes(path, monkeypatch):
    """Surveys are composed by libyaml (yaml.CSafeLoader: the same nodes and line marks,
    ~15x faster than PyYAML's pure-Python reader) when PyYAML has it: every recipe gives the
    same data and the same line of every key with either (the pure-Python reader is the
    reference and the fallback)."""
    c, py = _load_both(path.read_text(), monkeypatch)
    assert c == py
    assert isinstance(c, tuple) and len(c[1]) > 20


@pytest.mark.skipif(not getattr(yaml, "__with_libyaml__", False), reason="PyYAML without libyaml")
@pytest.mark.parametrize("text", _LOADER_CASES, ids=range(len(_LOADER_CASES)))
def test_libyaml_refuses_with_the_pure_python_readers_messages(text, monkeypatch):
    """Syntax errors, tags, duplicate keys, aliases and nesting give the same located message
    whichever composes (a document libyaml refuses is composed again by the pure-Python
    reader, whose messages name the character or alias at fault: 5000 nested brackets pass
    libyaml's limit of 1000 levels and are refused at Python's recursion limit, as without
    libyaml; 100 levels are composed by libyaml and refused at 64 by the conversion)."""
    c, py = _load_both(text, monkeypatch)
    assert c == py
    if "[" * 100 in text or "{b: " * 100 in text or "k69" in text:
        assert "nesting deeper than 64" in c
