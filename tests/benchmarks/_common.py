"""Shared helpers of the benchmarks: time spent inside CAMB, measured in the same run."""

from __future__ import annotations

import contextlib
import pathlib
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]


class CambTimer:
    """Accumulates wall time spent inside CAMB's own functions (Boltzmann runs, spectra,
    interpolators) while active."""

    def __init__(self):
        self.seconds = 0.0
        self.transfer_runs = 0
        self.transfer_seconds = 0.0
        self.spectra = 0

    @contextlib.contextmanager
    def active(self):
        import camb
        from camb import results

        originals = {
            (camb, "get_transfer_functions"): camb.get_transfer_functions,
            (results.CAMBdata, "power_spectra_from_transfer"): results.CAMBdata.power_spectra_from_transfer,
            (results.CAMBdata, "get_matter_power_interpolator"): results.CAMBdata.get_matter_power_interpolator,
            (results.CAMBdata, "get_sigma8"): results.CAMBdata.get_sigma8,
            (results.CAMBdata, "get_fsigma8"): results.CAMBdata.get_fsigma8,
            (results.CAMBdata, "comoving_radial_distance"): results.CAMBdata.comoving_radial_distance,
            (results.CAMBdata, "hubble_parameter"): results.CAMBdata.hubble_parameter,
        }
        timer = self

        def wrap(key, fn):
            def inner(*a, **k):
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    dt = time.perf_counter() - t
                    timer.seconds += dt
                    if key[1] == "get_transfer_functions":
                        timer.transfer_runs += 1
                        timer.transfer_seconds += dt
                    elif key[1] == "power_spectra_from_transfer":
                        timer.spectra += 1
            return inner

        for (obj, name), fn in originals.items():
            setattr(obj, name, wrap((obj, name), fn))
        try:
            yield self
        finally:
            for (obj, name), fn in originals.items():
                setattr(obj, name, fn)


def lumratio_table(tmpdir: pathlib.Path) -> pathlib.Path:
    """The IST:F <L>/L* table that ships in the repository's data/ folder (``tmpdir`` is
    unused; kept so that the benchmarks' calls stay as they are)."""
    return ROOT / "data" / "istf_lumratio.dat"
