"""Benchmark (issue 15): a verified forecast at the price of a blind one. Ratios from one run.

Interleaved, in one process tree (each run a child process of this one, one after the
other, ``--rounds`` times), on the Euclid IST:F WL pessimistic recipe:

  A. the default ``fishcast run`` (derivative sweeps, stability and Gaussian-validity checks,
     default workers = all usable cores);
  B. the same with a fixed 3-point stencil (``derivatives.mode: fixed``, 1% steps, no
     validity check: a blind forecast);
  C. a plain pyccl 3-point Fisher with the same physics: CAMB called directly (halofit
     takahashi, the same k_max and z range as fishcast's default settings), its nonlinear
     P(k, z) handed to pyccl (``Pk2D``), pyccl's own background, pyccl's spline Limber
     integration, the same n_i(z), ell bands, noise and extended NLA intrinsic alignments,
     1% steps (times the same step scales), the Knox Fisher matrix written out here.

It prints, as ratios:
  * wall time default fishcast / pyccl                                   (target <= 1.0)
  * CAMB (Boltzmann) runs default / fixed 3-point                        (target <= 2.5),
    every run of the forecast (the file's ``camb_calls``: worker processes and the
    Gaussian-validity check included), and its breakdown by stage (``camb_calls_derivatives``,
    ``camb_calls_validity``) with the cache hits
  * time per CAMB run with fishcast's default settings (what the probes need) relative to
    the k_max = 30/Mpc, z_max = 4 settings (fiducial point, interleaved repeats, CPU time;
    both with CAMB's dense transfer sampling, which the probes need):
    0.41 at k_max 7.8/Mpc, z_max 3 (K_SHARE 0.045 and the halofit floor at z 3), 0.47 at
    the 10.45/Mpc of K_SHARE 0.02 (0.85, 0.98 and 2.09 CPU s, measured with CAMB 2.0.5, 5
    interleaved repeats; 0.36 since fishcast's default ODE tolerance became IntTolBoost 0.3, the
    reference keeping CAMB's own 1); and the default settings without the dense transfer sampling
    (``cosmology.accuracy.transfer_high_precision: false``) relative to the default (~0.58:
    the largest lever left, not taken: see fishcast.cosmology, *Transfer sampling*)
  * with ``--sparse-transfer``, a fourth run D in each round: the default run without the
    dense transfer sampling (its wall and CPU time against the default's, its Boltzmann
    runs, its FoM)
  * FoM(w0, wa) of all three, and their spread                           (within 2%)
  * how well the default run packs its Boltzmann runs into the cores: its wall time over
    (its Boltzmann runs x the CPU time of one run on one thread / usable cores) -- 1.0 would be
    every core busy with CAMB from start to end (imports, the analysis and idle cores make
    it larger) -- and the CPU time of each run's process tree (user + system, from
    ``getrusage(RUSAGE_CHILDREN)``), less noisy than wall times on a shared machine

Run:  python tests/benchmarks/bench_vs_pyccl.py [--rounds N] [--repeats M]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import ROOT, lumratio_table  # noqa: E402

RECIPE = ROOT / "recipes" / "euclid-wl-pessimistic.yaml"
C_KMS = 299792.458


# ----------------------------------------------------------------------------- fishcast
def fishcast_run(out: pathlib.Path, lum: pathlib.Path, extra: list[str]) -> dict:
    """``fishcast run`` in a child process (no cache): wall time, CAMB runs, FoM(w0, wa)."""
    exe = pathlib.Path(sys.executable).with_name("fishcast")
    cmd = [str(exe) if exe.exists() else "fishcast", "run", str(RECIPE), "-o", str(out), "--no-cache", "-q",
           "--allow-unstable", "--set", f"probes.weak_lensing.intrinsic_alignment.luminosity_ratio_file={lum}", *extra]
    t0 = time.perf_counter()
    cpu0 = _children_cpu()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    if res.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    from fishcast.io import open_forecast

    with open_forecast(out) as f:
        # every Boltzmann run of the forecast (workers included), by stage; cache hits apart
        camb_calls = int(f.attrs["camb_calls"])
        stages = {k: int(f.attrs.get(f"camb_calls_{k}", -1)) for k in ("derivatives", "validity")}
        hits = int(f.attrs.get("cache_hits", -1))
        fom = float(f["constraints"].attrs.get("fom_w0_wa", float("nan")))
        settings = {k: f["cosmology"].attrs[k] for k in ("k_max", "z_max", "n_z") if k in f["cosmology"].attrs}
    if stages["derivatives"] >= 0 and stages["derivatives"] + stages["validity"] != camb_calls:
        raise SystemExit(f"{out}: camb_calls {camb_calls} is not the sum of its stages {stages}")
    return {"wall": wall, "cpu": cpu, "camb": camb_calls, "fom": fom, "settings": settings, "stages": stages,
            "hits": hits}


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes of this one (and theirs).

    A process pool's forkserver is not waited for by the ``fishcast`` process that started
    it (it exits after it): this process is made a child subreaper (Linux), so such orphans
    become its children, and are waited for here, their CPU time counted with the rest."""
    _reap_orphans()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _become_subreaper() -> None:
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):  # pragma: no cover - not Linux: orphans are not counted
        pass


def _reap_orphans() -> None:
    """Wait for every remaining child (orphans of a finished run: they exit on their own)."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


# ----------------------------------------------------------------------------- pyccl
PYCCL_SCRIPT = r'''
import json, sys, time
import numpy as np
import camb, pyccl as ccl

cfg = json.load(open(sys.argv[1]))
fid, steps, free = cfg["fiducial"], cfg["steps"], cfg["free"]
z_nz, nz = np.array(cfg["z"]), np.array(cfg["nz"])
ell, dell, noise, fsky = np.array(cfg["ell"]), np.array(cfg["delta_ell"]), np.array(cfg["noise"]), cfg["f_sky"]
zl, lum = np.array(cfg["lum_z"]), np.array(cfg["lum"])
kmax, zmax, nzs = cfg["k_max"], cfg["z_max"], cfg["n_z"]
COSMO = ("Omega_m", "Omega_b", "h", "n_s", "sigma8", "w0", "wa")
camb_runs = 0

def pk_camb(p):
    """CAMB nonlinear P(k, z) [Mpc^3] at k [1/Mpc] for sigma8-normalized parameters."""
    global camb_runs
    h = p["h"]
    pars = camb.CAMBparams()
    pars.set_cosmology(H0=100 * h, ombh2=p["Omega_b"] * h**2, mnu=p["m_nu"], num_massive_neutrinos=1,
                       omch2=0.0)
    omnuh2 = pars.omnuh2
    pars.set_cosmology(H0=100 * h, ombh2=p["Omega_b"] * h**2, omch2=p["Omega_m"] * h**2 - p["Omega_b"] * h**2 - omnuh2,
                       mnu=p["m_nu"], num_massive_neutrinos=1)
    pars.set_dark_energy(w=p["w0"], wa=p["wa"], dark_energy_model="ppf")
    pars.InitPower.set_params(As=2.1e-9, ns=p["n_s"])
    zs = np.linspace(zmax, 0.0, nzs)
    pars.set_matter_power(redshifts=list(zs), kmax=kmax, nonlinear=True, silent=True)
    pars.NonLinearModel.set_params(halofit_version="takahashi")
    pars.WantCls = False
    pars.Accuracy.IntTolBoost = cfg["int_tol_boost"]  # CAMB's default 1 unless --pyccl-int-tol
    camb_runs += 1
    res = camb.get_transfer_functions(pars)
    res.power_spectra_from_transfer(pars.InitPower, silent=True)
    As = 2.1e-9 * (p["sigma8"] / res.get_sigma8_0()) ** 2
    pars.InitPower.set_params(As=As, ns=p["n_s"])
    res.power_spectra_from_transfer(pars.InitPower, silent=True)
    k = np.geomspace(1e-4, kmax, 300)
    pk = res.get_matter_power_interpolator(nonlinear=True, hubble_units=False, k_hunit=False, log_interp=True).P(zs[::-1], k)
    return zs[::-1], k, pk, As, omnuh2

def cls(p, cache={}):
    key = tuple(p[n] for n in COSMO)
    if key not in cache:
        cache[key] = pk_camb(p)
    z, k, pk, As, omnuh2 = cache[key]
    h = p["h"]
    c = ccl.Cosmology(Omega_c=p["Omega_m"] - p["Omega_b"] - omnuh2 / h**2, Omega_b=p["Omega_b"], h=h, n_s=p["n_s"],
                      A_s=As, m_nu=p["m_nu"], mass_split="single", w0=p["w0"], wa=p["wa"],
                      transfer_function="eisenstein_hu")
    pk2d = ccl.Pk2D(a_arr=1.0 / (1.0 + z[::-1]), lk_arr=np.log(k), pk_arr=np.log(pk[::-1]), is_logp=True,
                    extrap_order_lok=1, extrap_order_hik=1)
    # extended NLA, rescaled from pyccl's C1 rho_crit = 5e-14 rho_crit to C_IA = 0.0134
    amp = p["A_IA"] * (1 + z_nz) ** p["eta_IA"] * np.interp(z_nz, zl, lum) ** p["beta_IA"] \
        * 0.0134 / (5e-14 * ccl.physical_constants.RHO_CRITICAL)
    tr = [ccl.WeakLensingTracer(c, dndz=(z_nz, nz[i]), ia_bias=(z_nz, amp)) for i in range(len(nz))]
    lfac = (ell + 2) * (ell + 1) * ell * (ell - 1) / (ell + 0.5) ** 4  # pyccl's; the recipe has none
    out = np.zeros((ell.size, len(nz), len(nz)))
    for i in range(len(nz)):
        for j in range(i, len(nz)):
            out[:, i, j] = out[:, j, i] = ccl.angular_cl(c, tr[i], tr[j], ell, p_of_k_a=pk2d,
                                                          limber_integration_method="spline") / lfac
    return out

t0 = time.perf_counter()
c0 = cls(fid)
derivs = []
for n in free:
    up, dn = dict(fid), dict(fid)
    up[n] += steps[n]
    dn[n] -= steps[n]
    derivs.append((cls(up) - cls(dn)) / (2 * steps[n]))
F = np.zeros((len(free), len(free)))
for l in range(ell.size):
    cinv = np.linalg.inv(c0[l] + noise)
    m = [cinv @ d[l] for d in derivs]
    for a in range(len(free)):
        for b in range(a, len(free)):
            F[a, b] = F[b, a] = F[a, b] + (2 * ell[l] + 1) * fsky * dell[l] / 2 * np.trace(m[a] @ m[b])
cov = np.linalg.inv(F)
i, j = free.index("w0"), free.index("wa")
fom = 1.0 / np.sqrt(np.linalg.det(cov[np.ix_([i, j], [i, j])]))
print(json.dumps({"camb": camb_runs, "fom": fom, "seconds": time.perf_counter() - t0,
                  "sigma": dict(zip(free, np.sqrt(np.diag(cov)).tolist()))}))
'''


def istf_table(tmp: pathlib.Path) -> pathlib.Path:
    """The recipe's own <L>/L* table (data/, shipped with the repository), else a stand-in."""
    own = ROOT / "data" / "istf_lumratio.dat"
    return own if own.exists() else lumratio_table(tmp)


def pyccl_config(path: pathlib.Path, lum: pathlib.Path, int_tol_boost: float = 1.0) -> dict:
    """The inputs of the pyccl script, read off the recipe (not computed by fishcast's physics:
    n_i(z) on the fixed grid, bands, noise, and the settings of the CAMB table)."""
    from fishcast.survey import load_survey

    sv = load_survey(RECIPE, {"probes.weak_lensing.intrinsic_alignment.luminosity_ratio_file": str(lum)})
    probe = sv.probes[0]
    steps = {}
    for n in sv.free:
        par = sv.parameter(n)
        fid = sv.fiducial[n]
        scale = par.step_scale if (fid == 0.0 or getattr(par, "offset", False)) else abs(fid)
        steps[n] = 0.01 * scale
    lz, lr = np.loadtxt(lum, unpack=True)[:2]
    cfg = {
        "fiducial": dict(sv.fiducial), "free": list(sv.free), "steps": steps,
        "z": probe.z.tolist(), "nz": probe.nz().tolist(), "ell": probe.ell.tolist(),
        "delta_ell": probe.delta_ell.tolist(), "noise": probe.noise().tolist(), "f_sky": probe.f_sky,
        "lum_z": lz.tolist(), "lum": lr.tolist(),
        "k_max": sv.settings.k_max, "z_max": sv.settings.z_max, "n_z": sv.settings.n_z,
        "int_tol_boost": int_tol_boost,
    }
    path.write_text(json.dumps(cfg))
    return cfg


def pyccl_run(script: pathlib.Path, cfg: pathlib.Path) -> dict:
    t0 = time.perf_counter()
    cpu0 = _children_cpu()
    res = subprocess.run([sys.executable, str(script), str(cfg)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    if res.returncode != 0:
        raise SystemExit(f"the pyccl script failed:\n{res.stderr}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return {"wall": wall, "cpu": cpu, "camb": out["camb"], "fom": out["fom"]}


# ----------------------------------------------------------------------------- CAMB cost
def camb_cost(repeats: int) -> tuple[float, float, float, dict]:
    """Median CPU seconds of one CAMB evaluation of the fiducial with fishcast's default
    settings, with the k_max = 30/Mpc, z_max = 4 settings and with the default settings
    without CAMB's dense transfer sampling (interleaved, this process, 1 thread: CPU time, so
    that other work on a shared machine does not enter the ratio)."""
    import dataclasses

    from fishcast.cosmology import compute
    from fishcast.pipeline.execute import configure_worker
    from fishcast.survey import load_survey

    configure_worker(1)
    with tempfile.TemporaryDirectory() as tmp:
        lum = istf_table(pathlib.Path(tmp))
        sv = load_survey(RECIPE, {"probes.weak_lensing.intrinsic_alignment.luminosity_ratio_file": str(lum)})
    default = sv.settings
    # the settings before the probes' requirements were read: CAMB's dense transfer sampling
    # and CAMB's own ODE tolerance too
    reference = dataclasses.replace(default, k_max=30.0, z_max=4.0, transfer_high_precision=True, int_tol_boost=1.0)
    sparse = dataclasses.replace(default, transfer_high_precision=False)
    point = {n: v for n, v in sv.fiducial.items() if n in ("Omega_m", "Omega_b", "h", "n_s", "sigma8", "w0", "wa", "m_nu")}
    times = {"default": [], "reference": [], "sparse": []}
    for _ in range(repeats):
        for name, st in (("default", default), ("reference", reference), ("sparse", sparse)):
            t0 = time.process_time()
            compute(point, st)
            times[name].append(time.process_time() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return med["default"], med["reference"], med["sparse"], dataclasses.asdict(default)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the three runs")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the CAMB cost measurement")
    ap.add_argument("--sparse-transfer", action="store_true",
                    help="also run the default without CAMB's dense transfer sampling (run D)")
    ap.add_argument("--pyccl-int-tol", type=float, default=1.0,
                    help="CAMB's IntTolBoost in the pyccl script (default CAMB's own 1, what a blind script "
                         "uses; 0.3 gives it fishcast's default tolerance too)")
    args = ap.parse_args()
    _become_subreaper()

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = pathlib.Path(tmpdir)
        lum = istf_table(tmp)
        script = tmp / "pyccl_fisher.py"
        script.write_text(PYCCL_SCRIPT)
        cfg = tmp / "pyccl.json"
        pyccl_config(cfg, lum, args.pyccl_int_tol)
        runs = {"default": [], "fixed": [], "pyccl": []}
        if args.sparse_transfer:
            runs["sparse"] = []
        for r in range(args.rounds):
            runs["default"].append(fishcast_run(tmp / f"default{r}.h5", lum, []))
            runs["fixed"].append(fishcast_run(tmp / f"fixed{r}.h5", lum, [
                "--set", "derivatives.mode=fixed", "--set", "derivatives.stencil=3-point",
                "--set", "diagnostics.gaussian_check=false"]))
            runs["pyccl"].append(pyccl_run(script, cfg))
            if args.sparse_transfer:
                runs["sparse"].append(fishcast_run(tmp / f"sparse{r}.h5", lum, [
                    "--set", "cosmology.accuracy.transfer_high_precision=false"]))
            for k, v in runs.items():
                st = v[-1].get("stages")
                split = (f" (derivatives {st['derivatives']}, validity {st['validity']}, cache hits {v[-1]['hits']})"
                         if st else "")
                print(f"round {r + 1}: {k:8s} {v[-1]['wall']:8.1f} s (CPU {v[-1]['cpu']:6.1f} s)  "
                      f"CAMB runs {v[-1]['camb']:4d}{split}  "
                      f"FoM(w0, wa) {v[-1]['fom']:.2f}", flush=True)
        t_def, t_ref, t_sparse, settings = camb_cost(args.repeats)

    def med(name: str, key: str) -> float:
        if key.startswith("stages_"):
            return float(np.median([x["stages"][key[len("stages_"):]] for x in runs[name]]))
        return float(np.median([x[key] for x in runs[name]]))

    print(f"\nrecipe: {RECIPE.name}; cores usable: {len(os.sched_getaffinity(0))}; rounds: {args.rounds}")
    print(f"fishcast default settings: k_max = {settings['k_max']:.3g}/Mpc, z_max = {settings['z_max']:.3g}, "
          f"n_z = {settings['n_z']}, nonlinear {settings['nonlinear_model']} (also given to the pyccl script), "
          f"CAMB's dense transfer sampling {'on' if settings['transfer_high_precision'] else 'off'}, "
          f"CAMB's IntTolBoost {settings['int_tol_boost']:g} (the pyccl script: {args.pyccl_int_tol:g})")
    r1 = med("default", "wall") / med("pyccl", "wall")
    print(f"wall time default fishcast / pyccl 3-point     = {r1:.3f}   (target <= 1.0)  [{'OK' if r1 <= 1.0 else 'OVER'}]")
    print(f"wall time fixed 3-point fishcast / pyccl        = {med('fixed', 'wall') / med('pyccl', 'wall'):.3f}")
    r2 = med("default", "camb") / med("fixed", "camb")
    print(f"CAMB runs default / fixed 3-point              = {r2:.3f}   ({med('default', 'camb'):.0f} / "
          f"{med('fixed', 'camb'):.0f}; pyccl {med('pyccl', 'camb'):.0f})   (target <= 2.5)  [{'OK' if r2 <= 2.5 else 'OVER'}]")
    for name in ("default", "fixed"):
        print(f"CAMB runs of {name:7s} by stage: derivatives (fiducial and sweeps) "
              f"{med(name, 'stages_derivatives'):.0f}, Gaussian-validity check {med(name, 'stages_validity'):.0f}; "
              f"cache hits {med(name, 'hits'):.0f} (--no-cache)")
    print(f"time per CAMB run, default / k_max 30, z_max 4 = {t_def / t_ref:.3f}")
    print(f"time per CAMB run, without / with the dense transfer sampling (default settings) = {t_sparse / t_def:.3f}   "
          f"(not taken: the probes need it, fishcast.cosmology 'Transfer sampling')")
    if args.sparse_transfer:
        print(f"run D (default without the dense transfer sampling) / default: wall {med('sparse', 'wall') / med('default', 'wall'):.3f}, "
              f"CPU {med('sparse', 'cpu') / med('default', 'cpu'):.3f}, CAMB runs {med('sparse', 'camb'):.0f} / "
              f"{med('default', 'camb'):.0f}")
    cores = len(os.sched_getaffinity(0))
    ideal = med("default", "camb") * t_def / cores
    print(f"packing of the default run: wall / (Boltzmann runs x one run's CPU time on 1 thread / {cores} cores) = "
          f"{med('default', 'wall') / ideal:.3f}   ({med('default', 'wall'):.1f} s / {ideal:.1f} s; 1.0 = every "
          f"core busy with CAMB throughout)")
    print(f"CPU time default fishcast / pyccl 3-point      = {med('default', 'cpu') / med('pyccl', 'cpu'):.3f}   "
          f"({med('default', 'cpu'):.1f} s / {med('pyccl', 'cpu'):.1f} s, user + system of the process trees)")
    foms = {k: med(k, "fom") for k in runs}
    spread = max(foms.values()) / min(foms.values()) - 1
    print("FoM(w0, wa): " + ", ".join(f"{k} {v:.2f}" for k, v in foms.items())
          + f"; max/min - 1 = {spread:.4f}   (within 0.02)  [{'OK' if spread <= 0.02 else 'OVER'}]")


if __name__ == "__main__":
    main()
