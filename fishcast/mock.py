"""Gaussian mock simulations of a forecast's own data vector (``fishcast mock``).

What the forecast file holds, and what is needed
------------------------------------------------
A forecast file stores the input YAML (``input_yaml``, with any ``--set`` overrides recorded
after it), the chosen derivative of the flat data vector for every free parameter
(``/derivatives/<name>/derivative``, attribute ``chosen_step``) and the Fisher matrix of
every probe (``/fisher/probes/<probe>/matrix``). The probes' Fisher matrices are *trace
forms*: for cosmic shear (Knox) and for multi-tracer clustering alike,

    F_ab = sum_modes w / 2 Tr[Cb^-1 dCb_a Cb^-1 dCb_b]

over modes (ell bands; or shells x k bands x mu nodes) of weight ``w`` (the number of
independent modes: ``(2 ell + 1) f_sky Delta_ell``, or ``V k^2 dk w_mu / (8 pi^2)``), with
``Cb`` the observed covariance of the fields per mode (``C_ell + N``; ``C_ab(k, mu)`` with
shot noise).

The data vector of the mocks
----------------------------
The equivalent Gaussian data vector is the *estimated spectra*: per mode, the ``n(n+1)/2``
distinct entries of ``Cb_hat`` with the Gaussian (Wick) covariance of a sample covariance of
``w`` modes,

    Cov[Cb_ij, Cb_kl] = (Cb_ik Cb_jl + Cb_il Cb_jk) / w,

whose mean-term Fisher ``dCb_a^T Cov^-1 dCb_b`` is exactly the trace form above (Carron 2013,
A&A 551, A88: the field's trace term and the spectra's mean term are the same information;
used once). Modes are independent, so the covariance is block diagonal, one
``n(n+1)/2``-block per mode; probes are independent of each other (as in the forecast).

A probe with no known trace form (one registered by a user, say) is mocked in the generic
form :func:`metric_form`: its Fisher metric ``K`` (``F_ab = d_a^T K d_b``, read off its
``gram``) in its eigen-basis, the data ``B^T x`` with the covariance ``diag(1/lambda)`` --
the same information, in coordinates that are not the probe's own. A probe can instead give
its trace form itself with a method ``trace_form(signal, cosmo) -> (Cb, w)``.

``Cb`` at the fiducial is recomputed from the survey rebuilt from the stored YAML (one
cosmology evaluation at the fiducial point, read from the cache when it is there); the
derivatives are the forecast's own (the file does not store the data vector at the steps).
Realizations at ``theta_a +- delta_a`` (``delta_a`` the forecast's chosen step) have the mean
``mean +- delta_a dCb_a`` -- the linear response whose mean difference is exactly the
forecast's derivative -- and the fiducial covariance. Before anything is written, the Fisher
matrix of this Gaussian model is compared with the file's per-probe matrices (relative
1e-5): a mock that would not reproduce its forecast is refused. ``simfisher`` on the mocks
therefore converges to the forecast's data Fisher matrix (without the priors of the survey).

Seed matching (``seed_matched=True``): derivative simulation k of every parameter reuses the
noise of fiducial simulation k. For this linear Gaussian model the noise then cancels from
every mean difference exactly: the derivatives are noiseless and only the covariance noise
is left. By default the derivative simulations are independent draws (as for a summary whose
response is not linear, where seed matching helps but does not cancel the noise).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .errors import FileFormatError, InputError

__all__ = ["MockModel", "vech_indices", "spectra_covariance", "trace_form", "metric_form", "model_from_forecast",
           "draw", "OVERRIDES_MARKER"]

#: the line after which ``fishcast.survey.survey_from_text`` records the ``--set`` overrides
OVERRIDES_MARKER = "# overrides applied by fishcast:"

#: largest relative difference (in units of sqrt(F_aa F_bb)) between the mock's Fisher matrix
#: and the forecast's per-probe matrices
REPRODUCE_RTOL = 1e-5


@dataclass(frozen=True)
class MockModel:
    """The Gaussian model of a forecast's data: mean (d,), block Cholesky factors (M, m, m)
    of its covariance (the vector is M consecutive blocks of length m per probe part),
    derivatives (p, d) and steps (p,) of the free parameters, and the Fisher matrix of the
    model (p, p), which equals the forecast's data Fisher ``reference``."""

    names: tuple[str, ...]
    values: np.ndarray
    steps: np.ndarray
    units: tuple[str, ...]
    mean: np.ndarray
    blocks: tuple[np.ndarray, ...]  # per probe: Cholesky factors (M, m, m)
    derivatives: np.ndarray
    fisher: np.ndarray
    reference: np.ndarray
    survey_name: str

    @property
    def data_length(self) -> int:
        return int(self.mean.size)


def vech_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the ``n(n+1)/2`` distinct entries (upper triangle)."""
    return np.triu_indices(n)


def spectra_covariance(Cb: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Wick covariance of the distinct entries of a sample covariance of ``w`` modes:
    ``(Cb_ik Cb_jl + Cb_il Cb_jk) / w`` for entries (i,j), (k,l); Cb (M, n, n), w (M,) ->
    (M, m, m), m = n(n+1)/2."""
    Cb = np.asarray(Cb, dtype=float)
    i, j = vech_indices(Cb.shape[-1])
    ik = Cb[:, i[:, None], i[None, :]]
    jl = Cb[:, j[:, None], j[None, :]]
    il = Cb[:, i[:, None], j[None, :]]
    jk = Cb[:, j[:, None], i[None, :]]
    return (ik * jl + il * jk) / np.asarray(w, dtype=float)[:, None, None]


def trace_form(probe, signal: np.ndarray, cosmo) -> tuple[np.ndarray, np.ndarray] | None:
    """``(Cb (M, n, n), w (M,))`` of a probe's trace-form Fisher metric at its fiducial signal
    (:meth:`fishcast.probes.base.Probe.trace_form`), or None for a probe without one."""
    form = probe.trace_form(signal, cosmo)
    if form is None:
        return None
    Cb, w = form
    return np.asarray(Cb, dtype=float), np.asarray(w, dtype=float).reshape(-1)


#: largest flat signal for which the generic form (one eigen-decomposition of the metric) is built
METRIC_FORM_MAX = 6000


def metric_form(probe, signal: np.ndarray, context=None) -> tuple[np.ndarray, np.ndarray]:
    """The generic Gaussian form of any probe's Fisher metric: ``(basis B (n, r), lam (r,))``.

    ``gram`` is a bilinear form on the flat signal space, ``F_ab = d_a^T K d_b``; ``K`` is
    read off by applying ``gram`` to the unit vectors (one call) and decomposed,
    ``K = B diag(lam) B^T`` over its range. The data ``B^T x`` with covariance
    ``diag(1/lam)`` then has exactly the probe's Fisher matrix for every derivative. Used for
    probes with no known trace form (e.g. a probe registered by a user). ``context``: the
    probe's fiducial context (:meth:`fishcast.probes.base.Probe.fiducial_context`)."""
    flat = int(np.asarray(signal).size)
    if flat > METRIC_FORM_MAX:
        raise InputError(f"probe {probe.name!r}: its signal has {flat} elements; fishcast mock builds the Gaussian "
                         f"form of a probe without a known covariance only up to {METRIC_FORM_MAX}")
    eye = np.eye(flat).reshape((flat,) + np.shape(signal))
    K = np.asarray(probe.gram(np.asarray(signal), eye, context), dtype=float)
    lam, V = np.linalg.eigh(0.5 * (K + K.T))
    keep = lam > 1e-12 * max(float(lam[-1]), 0.0)
    if not keep.any():
        raise InputError(f"probe {probe.name!r}: its Fisher metric carries no information")
    return V[:, keep], lam[keep]


def _parse_overrides(text: str) -> tuple[str, dict]:
    """The YAML text as written by the user and the ``--set`` overrides recorded after it."""
    import json

    head, sep, tail = text.partition("\n" + OVERRIDES_MARKER + "\n")
    if not sep:
        return text, {}
    out = {}
    for line in tail.splitlines():
        body = line[1:].strip() if line.startswith("#") else ""
        key, eq, value = body.partition(" = ")
        if eq:
            out[key.strip()] = json.loads(value)
    return head, out


def _read_forecast(path) -> dict:
    from .io import open_forecast, read_fisher

    fisher, meta = read_fisher(path)  # names, units and the per-probe matrices, checked
    names = list(fisher.names)
    probes = {k: (list(F.names), np.asarray(F.matrix, dtype=float)) for k, F in meta["probes"].items()}
    with open_forecast(path) as f:
        text = f.attrs.get("input_yaml")
        if text is None or "derivatives" not in f or not probes:
            raise FileFormatError(f"{path}: not a forecast written by fishcast run (no input YAML, /derivatives "
                                  "or /fisher/probes): fishcast mock needs the forecast's own data")
        text = text.decode() if isinstance(text, bytes) else str(text)
        derivs, steps = [], []
        for n in names:
            key = f"derivatives/{n}"
            if key not in f or "derivative" not in f[key]:
                raise FileFormatError(f"{path}: no /{key}/derivative: the forecast stores no derivative of {n}")
            derivs.append(np.asarray(f[key]["derivative"][()], dtype=float).ravel())
            steps.append(float(f[key].attrs["chosen_step"]))
        units = list(fisher.units)
        input_path = f.attrs.get("input_path", "<survey>")
        input_path = input_path.decode() if isinstance(input_path, bytes) else str(input_path)
    return {"text": text, "names": names, "derivatives": derivs, "steps": np.array(steps), "probes": probes,
            "units": units, "input_path": input_path}


def model_from_forecast(path, cache=None) -> MockModel:
    """Rebuild the Gaussian model of the forecast file ``path`` (see the module docstring).
    ``cache``: a :class:`fishcast.pipeline.cache.Cache` for the fiducial cosmology, or None."""
    from .parameters import is_cosmological
    from .pipeline.cache import cached_evaluator
    from .survey import survey_from_text

    info = _read_forecast(path)
    names = list(info["names"])
    text, overrides = _parse_overrides(info["text"])
    input_path = pathlib.Path(info["input_path"])
    survey = survey_from_text(text, str(input_path), input_path.parent, overrides or None)
    missing = [n for n in names if n not in survey.fiducial]
    if missing:
        raise FileFormatError(f"{path}: the stored survey does not have the parameters {missing} of the file")
    cosmo = cached_evaluator(cache)([{k: v for k, v in survey.fiducial.items() if is_cosmological(k)}],
                                    survey.settings)[0]
    means, blocks, parts, fishers = [], [], [], []
    offset = 0
    D = np.stack(info["derivatives"])  # (p, flat)
    for probe in survey.probes:
        sig = np.asarray(probe.signal(cosmo, survey.fiducial), dtype=float)
        size = sig.size
        if offset + size > D.shape[1]:
            raise FileFormatError(f"{path}: the stored derivatives ({D.shape[1]} values) are shorter than the data "
                                  "vector of the rebuilt survey: the survey or its input tables changed")
        dsig = D[:, offset:offset + size].reshape((len(names),) + sig.shape)
        offset += size
        form = trace_form(probe, sig, cosmo)
        if form is not None:
            Cb, w = form
            n = Cb.shape[-1]
            i, j = vech_indices(n)
            cov = spectra_covariance(Cb, w)
            try:
                chol = np.linalg.cholesky(cov)
            except np.linalg.LinAlgError:
                raise InputError(f"{path}: probe {probe.name}: the Gaussian covariance of its spectra is not "
                                 "positive definite") from None
            dv = dsig.reshape((len(names), -1, n, n))[:, :, i, j]  # (p, M, m)
            # Fisher of the mean term, block by block (batched solves, no loop over modes)
            x = np.linalg.solve(cov[None], dv[..., None])[..., 0]  # Cov^-1 d (p, M, m)
            F = np.einsum("amk,bmk->ab", dv, x)
            mean = Cb[:, i, j].ravel()
        else:  # the generic form: the probe's metric in its eigen-basis, one element per block
            B, lam = metric_form(probe, sig, probe.fiducial_context(cosmo, survey.fiducial))
            dv = dsig.reshape(len(names), -1) @ B  # (p, r)
            F = (dv * lam) @ dv.T
            mean = sig.ravel() @ B
            chol = (1.0 / np.sqrt(lam))[:, None, None]
        means.append(mean)
        blocks.append(chol)
        parts.append(dv.reshape(len(names), -1))
        fishers.append((probe.name, 0.5 * (F + F.T)))
    if offset != D.shape[1]:
        raise FileFormatError(f"{path}: the stored derivatives ({D.shape[1]} values) do not match the data vector "
                              f"of the rebuilt survey ({offset}): the survey or its input tables changed")
    total = np.zeros((len(names), len(names)))
    reference = np.zeros_like(total)
    for pname, F in fishers:
        if pname not in info["probes"]:
            raise FileFormatError(f"{path}: no /fisher/probes/{pname}/matrix to check the mock against")
        pn, Fs = info["probes"][pname]
        idx = [pn.index(n) for n in names]
        Fs = Fs[np.ix_(idx, idx)]
        scale = np.sqrt(np.outer(np.abs(np.diag(Fs)), np.abs(np.diag(Fs))))
        scale = np.where(scale > 0, scale, 1.0)
        dev = float(np.max(np.abs(F - Fs) / scale))
        if dev > REPRODUCE_RTOL:
            raise InputError(
                f"{path}: the Gaussian model rebuilt from the stored survey does not reproduce the forecast's "
                f"{pname} Fisher matrix (relative difference {dev:.3g} > {REPRODUCE_RTOL:g}): the survey, its "
                "input tables or the cosmology settings changed since the run; rerun the forecast")
        total += F
        reference += Fs
    return MockModel(
        names=tuple(names), values=np.array([survey.fiducial[n] for n in names]), steps=info["steps"],
        units=tuple(info["units"]), mean=np.concatenate(means), blocks=tuple(blocks),
        derivatives=np.concatenate(parts, axis=1), fisher=total, reference=reference, survey_name=survey.name,
    )


def _noise(model: MockModel, z: np.ndarray) -> np.ndarray:
    """Correlated noise from standard normals z (..., d), block by block."""
    out, off = [], 0
    for L in model.blocks:
        M, m, _ = L.shape
        zz = z[..., off:off + M * m].reshape(z.shape[:-1] + (M, m))
        out.append(np.einsum("Mab,...Mb->...Ma", L, zz).reshape(z.shape[:-1] + (M * m,)))
        off += M * m
    return np.concatenate(out, axis=-1)


def draw(model: MockModel, n_sims: int, seed: int, n_deriv: int | None = None, seed_matched: bool = False,
         source: str = "<mock>"):
    """Gaussian realizations: ``n_sims`` at the fiducial and ``n_deriv`` (default ``n_sims``)
    at ``theta_a +- step_a`` for every parameter -> :class:`fishcast.simfisher.Simulations`."""
    from .simfisher import Simulations

    n_deriv = n_sims if n_deriv is None else int(n_deriv)
    if n_sims < 1 or n_deriv < 1:
        raise InputError("the numbers of simulations must be positive")
    if seed_matched and n_deriv > n_sims:
        raise InputError(f"seed-matched derivative simulations reuse the fiducial seeds: n_deriv ({n_deriv}) "
                         f"cannot exceed n_sims ({n_sims})")
    rng = np.random.default_rng(seed)
    d, p = model.data_length, len(model.names)
    z_fid = rng.standard_normal((n_sims, d))
    fid = model.mean + _noise(model, z_fid)
    shift = model.steps[:, None] * model.derivatives  # (p, d)
    if seed_matched:
        noise = fid[:n_deriv] - model.mean
        minus = model.mean - shift[:, None, :] + noise[None]
        plus = model.mean + shift[:, None, :] + noise[None]
    else:
        minus = model.mean - shift[:, None, :] + _noise(model, rng.standard_normal((p, n_deriv, d)))
        plus = model.mean + shift[:, None, :] + _noise(model, rng.standard_normal((p, n_deriv, d)))
    return Simulations(names=model.names, values=model.values, steps=model.steps, fiducial=fid, minus=minus,
                       plus=plus, units=model.units, seed_matched=seed_matched, reference=model.reference,
                       source=source)


def describe(model: MockModel) -> Mapping[str, object]:
    """Root attributes of a mock SIMS file."""
    return {"description": f"Gaussian mocks of the data vector of forecast {model.survey_name!r} "
                           "(estimated spectra with the Wick covariance; fishcast mock)",
            "survey_name": model.survey_name}
