"""The exact counts-in-cells Fisher as a survey probe (``probes.counts_in_cells`` with
``fisher_method: exact_cells``).

Per redshift shell, a small volume-limited box: a cube of ``n_side^3`` cubic cells of side
``side`` [Mpc/h] at the shell's effective redshift, holding the shell's tracers with their
(fiducial-frame) densities and biases.  The data are the counts of every tracer in every cell;
they are Gaussian with mean n_a V_c and covariance (physics.md section 2; Abramo 2012)

    Cov[N_ai, N_bj] = u_a u_b Xi_ij + delta_ab delta_ij n_a V_c,   u_a = n_a V_c b_a,

Xi the cell-averaged correlation of the matter field (:mod:`fishcast.exact_cells`), computed
from the observed power spectrum of the cosmology at hand (real space; with
``alcock_paczynski`` the observed power is anisotropic, line of sight along the third axis).
The signal is that covariance (n_shell, N M, N M) [counts^2]; the Fisher metric is the exact
trace formula ``F_ij = 1/2 Tr[Cov^-1 Cov_,i Cov^-1 Cov_,j]`` summed over shells (the mean
does not depend on the parameters).  The output records the method and, per shell, the exact
box Fisher of (ln A, ln b_a) against the Fourier-space Fisher of the same box volume
(:func:`fishcast.exact_cells.fourier_fisher`) and their largest normalized difference.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fishcast import exact_cells as cells
from fishcast.errors import ComputationError
from fishcast.probes import rsd_model
from fishcast.probes.base import CosmologyRequirements
from fishcast.probes.multitracer_clustering import CountsInCellsProbe, ObservedFrame, _h_of, fisher_trace


class ExactCellsProbe(CountsInCellsProbe):
    """Counts in the cells of a box per shell; see the module docstring.  Parameters,
    densities, biases and the observed frame are those of :class:`CountsInCellsProbe`."""

    def __init__(self, config, density_tables):
        super().__init__(config, density_tables)
        self.cells = config.cells
        self.n_cells = config.cells.n_side ** 3
        self.cell_volume = config.cells.side ** 3  # (Mpc/h)^3
        self.box_volume = self.n_cells * self.cell_volume

    def requirements(self) -> CosmologyRequirements:
        """k up to the last aliased image of the cell power [h/Mpc, <= 1/Mpc for h <= 1]; the
        linear P(k) with CAMB's dense transfer sampling (the cells resolve BAO scales)."""
        c = self.cells
        kmax = np.pi / c.side * (2 * c.n_images + 1) * np.sqrt(3.0)
        return CosmologyRequirements(z_max=float(self.z_edges[-1]), k_max=float(kmax), nonlinear=False,
                                     transfer_high_precision=True)

    # --- the cell correlation of each shell ------------------------------------------------
    def _cell_matrices(self, cosmo: Cosmology, frame: ObservedFrame) -> list[np.ndarray]:
        """Xi (M x M) per shell at this cosmology, from its observed power spectrum."""
        c = self.cells
        out = []
        ap = self.config.alcock_paczynski
        if ap:
            qperp, qpar = self.ap_factors(cosmo, frame)
            r = self._k_ratio(cosmo, frame)
            amp = rsd_model.ap_volume_factor(qperp, qpar) * (frame.h / _h_of(cosmo)) ** 3
        for s, z in enumerate(self.z_eff):
            if ap:
                def pk(k, mu, s=s, z=z):
                    kt, _ = rsd_model.ap_true_wavevector(r * k, mu, qperp[s], qpar[s])
                    return np.asarray(cosmo.pk_h(z, kt, nonlinear=False)) * amp[s]
            else:
                def pk(k, z=z):
                    return np.asarray(cosmo.pk_h(z, k, nonlinear=False))
            xi = cells.cell_correlation(pk, c.side, c.n_side, c.oversample, c.n_images, anisotropic=ap)
            out.append(cells.cell_correlation_matrix(xi, c.n_side))
        return out

    def signal(self, cosmo: Cosmology, params: Mapping[str, float], context: ObservedFrame | None = None) -> np.ndarray:
        """Covariance of the counts per shell, (n_shell, N M, N M) [counts^2], tracer-major, in
        the observed frame ``context`` (None: the cosmology at hand's own)."""
        frame = self._frame(cosmo, context)
        Xis = self._cell_matrices(cosmo, frame)
        b = self.biases(cosmo, params)
        N, M, Vc = len(self.tracers), self.n_cells, self.cell_volume
        out = np.empty((self.n_shell, N * M, N * M))
        for s in range(self.n_shell):
            m = self.present[s]
            n = np.where(m, frame.densities[s], 0.0)
            u = n * Vc * np.where(m, b[s], 0.0)
            noise = np.where(m, n * Vc, 1.0)
            out[s] = np.kron(np.outer(u, u), Xis[s]) + np.kron(np.diag(noise), np.eye(M))
        if not np.all(np.isfinite(out)):
            raise ComputationError("counts_in_cells (exact_cells): non-finite count covariance at this point")
        return out

    def band_parameters(self, cosmo: Cosmology, params, context=None, geometry=False):  # pragma: no cover - not defined
        raise ComputationError("exact_cells has no band powers (position space)")

    def gram(self, fiducial_signal: np.ndarray, derivs: np.ndarray, context=None) -> np.ndarray:
        """``1/2 sum_shells Tr[Cov^-1 dCov_p Cov^-1 dCov_q]`` (exact, dense; the count
        covariance carries the volume: the context is not needed)."""
        C = np.asarray(fiducial_signal)
        return fisher_trace(C, np.asarray(derivs), np.full(C.shape[:1], 0.5))

    def gram_by_tracer(self, fiducial_signal: np.ndarray, derivs: np.ndarray, context=None) -> np.ndarray:
        """Each tracer alone: the trace over its own counts (its diagonal block), (N, p, p)."""
        C = np.asarray(fiducial_signal)
        d = np.asarray(derivs)
        M = self.n_cells
        out = []
        for a in range(len(self.tracers)):
            sl = slice(a * M, (a + 1) * M)
            out.append(fisher_trace(C[:, sl, sl], d[:, :, sl, sl], np.full(C.shape[:1], 0.5)))
        return np.array(out)

    def band_power_report(self, cosmo: Cosmology, params, *args, **kwargs) -> dict[str, tuple[np.ndarray, str]]:
        """No band powers in position space: nothing."""
        return {}

    def trace_form(self, signal: np.ndarray, cosmo: Cosmology) -> tuple[np.ndarray, np.ndarray]:
        """(Cb, w) of the trace-form metric F = sum w/2 Tr[Cb^-1 dC Cb^-1 dC] (fishcast.mock):
        the count covariance of each shell, one realization each."""
        C = np.asarray(signal)
        return C, np.ones(C.shape[0])

    def products(self, cosmo: Cosmology, params: Mapping[str, float]) -> dict[str, tuple[np.ndarray, str]]:
        """The method, the box, and per shell the exact box Fisher of (ln A, ln b_present)
        against the Fourier Fisher of the same volume at this (fiducial) cosmology."""
        frame = self.observed_frame(cosmo, params)
        b = self.biases(cosmo, params)
        c = self.cells
        cfg = self.config
        out: dict[str, tuple[np.ndarray, str]] = {
            "tracers": (np.array(self.tracers, dtype="S"), ""),
            "z_edges": (self.z_edges, ""),
            "z_eff": (self.z_eff, ""),
            "density": (frame.densities, "(h/Mpc)^3"),
            "bias": (b, ""),
            "cell_side": (np.array(c.side), "Mpc/h"),
            "cells_per_side": (np.array(c.n_side), ""),
            "box_volume": (np.array(self.box_volume), "(Mpc/h)^3"),
            "model": (np.array([
                "fisher_method=exact_cells (exact position-space counts-in-cells Fisher of a box of "
                f"{c.n_side}^3 cells of side {c.side:g} Mpc/h per shell; real space)",
                f"observed frame: alcock_paczynski={str(cfg.alcock_paczynski).lower()}, observed_h={cfg.observed_h}",
            ], dtype="S"), ""),
        }
        mism = np.full(self.n_shell, np.nan)
        for s, z in enumerate(self.z_eff):
            m = self.present[s]
            if not m.any():
                continue

            def pk(k, z=z):
                return np.asarray(cosmo.pk_h(z, k * self._k_ratio(cosmo, frame), nonlinear=False))

            n, bb = frame.densities[s, m], b[s, m]
            F_box = cells.box_fisher(pk, c.side, c.n_side, bb, n, c.oversample, c.n_images)
            F_four = cells.fourier_fisher(pk, c.side, self.box_volume, bb, n, n_images=c.n_images)
            dg = np.sqrt(np.diag(F_four))
            mism[s] = float(np.max(np.abs(F_box - F_four) / np.outer(dg, dg)))
            pre = f"fourier_comparison/{s + 1}/"
            names = ["lnA"] + [f"lnb_{t}" for t, here in zip(self.tracers, m) if here]
            out[pre + "parameter_names"] = (np.array(names, dtype="S"), "")
            out[pre + "exact_box"] = (F_box, "")
            out[pre + "fourier"] = (F_four, "")
        out["fourier_comparison/max_normalized_difference"] = (mism, "")
        return out
