"""The on-disk cache of cosmology evaluations: content addresses, whole entries under
concurrent writers, damaged entries, and `fishcast cache info/clear`. No CAMB call here:
the entries are synthetic CosmologyResults."""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import pytest
from click.testing import CliRunner

from fishcast.pipeline.cache import Cache, cached_evaluator, default_cache_dir
from fishcast.cli.main import cli
from fishcast.cosmology import CosmologyResult, CosmologySettings, point_key

POINT = {"Omega_m": 0.32, "Omega_b": 0.05, "h": 0.67, "n_s": 0.96, "sigma8": 0.815583}
#: the settings of the synthetic entries (a cache entry is verified against its settings)
S = CosmologySettings(n_z=60, z_max=3.0, k_max=10.0, n_k=400)


def key_of(point=POINT, settings=S) -> str:
    return point_key(point, settings)


def fake_result(seed: int = 0, point=POINT, settings=S) -> CosmologyResult:
    """A synthetic result of ~0.4 MB (big enough that a write is not one syscall), on the
    grids of ``settings``, for the parameters ``point``."""
    rng = np.random.default_rng(seed)
    z = settings.z_grid()
    k = settings.k_grid()
    pk = np.exp(rng.normal(size=(settings.n_z, settings.n_k)))
    return CosmologyResult(params=dict(point), z=z, k=k, pk_lin=pk, pk_nl=pk * 1.5, chi=z * 3000.0,
                           hubble=67.0 + z, growth=1.0 / (1.0 + z), growth_rate=0.5 + 0.0 * z,
                           sigma8_z=0.8 / (1.0 + z), derived={"h": 0.67, "sigma8": 0.815583})


def same(a: CosmologyResult, b: CosmologyResult) -> bool:
    return all(np.array_equal(getattr(a, n), getattr(b, n)) for n in CosmologyResult.ARRAYS) \
        and dict(a.params) == dict(b.params) and dict(a.derived) == dict(b.derived)


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def test_key_is_content_address():
    s = CosmologySettings(n_z=60, k_max=10.0, n_k=200)
    k0 = point_key(POINT, s)
    assert k0 == point_key(dict(reversed(list(POINT.items()))), s)  # order does not matter
    assert k0 == point_key({**POINT, "w0": -1.0}, s)  # defaults filled in
    bumped = dict(POINT, Omega_m=np.nextafter(0.32, 1.0))
    assert point_key(bumped, s) != k0  # one ulp is another point
    assert point_key(POINT, CosmologySettings(n_z=61, k_max=10.0, n_k=200)) != k0
    assert point_key(POINT, CosmologySettings(n_z=60, k_max=10.0, n_k=200, accuracy_boost=2.0)) != k0


def test_an_entry_of_other_transfer_sampling_is_not_reused(tmp_path):
    """CAMB's dense transfer sampling (transfer_high_precision) moves P(k) by ~1e-3: an entry
    computed with it is never served for a point without it, nor the other way round -- not
    under its own name (another key), nor copied under the other's name (its stored settings
    do not hash to that name: a CacheWarning, a miss)."""
    import dataclasses
    import shutil

    from fishcast.pipeline.cache import CacheWarning

    dense, sparse = S, dataclasses.replace(S, transfer_high_precision=False)
    assert dense.transfer_high_precision and point_key(POINT, dense) != point_key(POINT, sparse)
    cache = Cache(tmp_path)
    cache.put(point_key(POINT, dense), fake_result(1), dense)
    assert cache.get(point_key(POINT, sparse)) is None
    assert same(cache.get(point_key(POINT, dense)), fake_result(1))
    forged = cache.path(point_key(POINT, sparse))
    forged.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(cache.path(point_key(POINT, dense)), forged)
    with pytest.warns(CacheWarning, match="not those of its name"):
        assert cache.get(point_key(POINT, sparse)) is None


def test_an_entry_of_another_ode_tolerance_is_not_reused(tmp_path):
    """CAMB's ODE tolerance (int_tol_boost) is part of the key: an entry computed with one
    value is never served for a point asked with another."""
    import dataclasses

    tight, loose = dataclasses.replace(S, int_tol_boost=1.0), dataclasses.replace(S, int_tol_boost=0.3)
    assert point_key(POINT, tight) != point_key(POINT, loose)
    cache = Cache(tmp_path)
    cache.put(point_key(POINT, tight), fake_result(1), tight)
    assert cache.get(point_key(POINT, loose)) is None
    assert same(cache.get(point_key(POINT, tight)), fake_result(1))


def test_an_entry_of_an_older_scheme_is_not_reused(tmp_path, monkeypatch):
    """The key carries fishcast.cosmology.CACHE_SCHEME, raised when the same inputs give other
    results (3: the growth rate of baryons + CDM): an entry written by scheme 2 is a miss."""
    from fishcast import cosmology

    assert cosmology.CACHE_SCHEME >= 3
    c = Cache(tmp_path)
    now = key_of()
    with monkeypatch.context() as m:
        m.setattr(cosmology, "CACHE_SCHEME", 2)
        old = key_of()
        c.put(old, fake_result(), S)
        assert same(c.get(old), fake_result())
    assert old != now
    assert c.get(now) is None  # the same point and settings: not the old entry
    with pytest.warns(UserWarning, match="not used"):  # nor under its old name: its content
        assert c.get(old) is None                      # hashes to today's key


def test_round_trip_is_exact_and_damage_is_a_miss(tmp_path):
    c = Cache(tmp_path)
    r = fake_result()
    c.put(key_of(), r, S)
    assert same(c.get(key_of()), r)
    path = c.path(key_of())
    path.write_bytes(path.read_bytes()[:1000])  # a torn file (not possible with rename, but)
    with pytest.warns(UserWarning, match="not used"):
        assert c.get(key_of()) is None
    assert c.stats.damaged == 1 and not path.exists()


def test_cached_evaluator_computes_only_misses(tmp_path):
    c = Cache(tmp_path)
    s = S
    p2 = dict(POINT, n_s=0.97)
    c.put(point_key(POINT, s), fake_result(1), s)
    asked = []

    def compute(points, settings, on_done):
        asked.extend(points)
        for i, p in enumerate(points):
            on_done(i, fake_result(2, p))

    out = cached_evaluator(c, compute=compute)([POINT, p2], s)
    assert asked == [p2]
    assert same(out[0], fake_result(1)) and same(out[1], fake_result(2, p2))
    assert same(c.get(point_key(p2, s)), fake_result(2, p2))


def _writer(root: str, key: str, n: int, seed: int) -> None:
    c = Cache(root)
    r = fake_result(seed)
    for _ in range(n):
        c.put(key, r, S)


def test_concurrent_writers_leave_whole_entries(tmp_path):
    """Four processes write the same entry 25 times each while this process reads it:
    every read is a whole entry (never a damaged one), and nothing temporary is left."""
    key = key_of()
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), key, 25, 7)) for _ in range(4)]
    for p in procs:
        p.start()
    reader = Cache(tmp_path)
    expected = fake_result(7)
    reads = 0
    while any(p.is_alive() for p in procs):
        got = reader.get(key)
        if got is not None:
            assert same(got, expected)
            reads += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert reader.stats.damaged == 0
    assert reads > 0
    assert same(reader.get(key), expected)
    assert list(tmp_path.glob("*/.*.tmp")) == []
    assert len(reader.entries()) == 1


def test_cli_info_and_clear(tmp_path):
    c = Cache(tmp_path / "c")
    k3, k4 = key_of(dict(POINT, n_s=0.93)), key_of(dict(POINT, n_s=0.94))
    c.put(k3, fake_result(3, dict(POINT, n_s=0.93)), S)
    c.put(k4, fake_result(4, dict(POINT, n_s=0.94)), S)
    (c.root / k3[:2] / ".leftover.npz.123.tmp").write_bytes(b"partial")  # from a killed run
    size = sum(p.stat().st_size for p in c.entries())
    r = run("cache", "info", "--cache-dir", c.root)
    assert r.exit_code == 0, r.output
    assert f"path:    {c.root}" in r.output and "entries: 2" in r.output and f"({size} bytes)" in r.output
    r = run("cache", "info", env={"FISHCAST_CACHE_DIR": str(c.root)})  # the environment variable
    assert "entries: 2" in r.output
    r = run("cache", "clear", "--cache-dir", c.root)
    assert r.exit_code == 0 and f"removed 2 entries from {c.root}" in r.output
    assert c.entries() == [] and list(c.root.glob("*/.*.tmp")) == []
    assert "entries: 0" in run("cache", "info", "--cache-dir", c.root).output


def test_default_location(monkeypatch, tmp_path):
    monkeypatch.setenv("FISHCAST_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("FISHCAST_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if os.name == "posix" and os.uname().sysname == "Linux":
        assert default_cache_dir() == tmp_path / "xdg" / "fishcast"
