"""Radial distribution function of a short MD, every member's by Boltzmann reweighting."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms, units

from potlearn_ase.analysis.qoi.base import (
    QoI,
    Source,
    mean_calculator,
    member_predictor,
    repeat_for,
)

__all__ = ["RDFResult", "rdf"]


@dataclass(frozen=True)
class RDFResult:
    """Radial distribution function of every member (Boltzmann-reweighted MD frames).

    Attributes
    ----------
    r : np.ndarray
        ``(n_bins,)`` bin centres (A).
    g : np.ndarray
        ``(M, n_bins)``.
    ess : np.ndarray
        ``(M,)`` effective number of frames behind each member's RDF (Kish).
    n_frames : int
        Frames sampled from the MD.
    """

    r: np.ndarray
    g: np.ndarray
    ess: np.ndarray
    n_frames: int

    def qois(self) -> list[QoI]:
        """Position (A) and height of the first peak, from a parabola through the top bins."""
        pos, height = [], []
        for g in self.g:
            k = int(np.argmax(g))
            k = min(max(k, 1), len(g) - 2)
            y0, y1, y2 = g[k - 1], g[k], g[k + 1]
            den = y0 - 2 * y1 + y2
            off = 0.5 * (y0 - y2) / den if den != 0 else 0.0
            dr = self.r[1] - self.r[0]
            pos.append(self.r[k] + off * dr)
            height.append(y1 - 0.25 * (y0 - y2) * off)
        return [
            QoI("rdf_peak_position", "A", np.array(pos)),
            QoI("rdf_peak_height", "", np.array(height)),
        ]


def rdf(
    source: Source,
    atoms: Atoms,
    *,
    temperature_K: float = 300.0,
    steps: int = 300,
    equilibration: int = 100,
    every: int = 5,
    timestep_fs: float = 2.0,
    r_max: float | None = None,
    n_bins: int = 80,
    min_atoms: int = 32,
    rng: np.random.Generator | int | None = None,
) -> RDFResult:
    """Radial distribution function of a short Langevin MD, per member by reweighting.

    The MD runs with the committee mean (or the calculator). Each frame's member energies
    ``E_m`` give member ``m`` the weight ``exp(-(E_m - E_mean) / kT)``, normalised over frames;
    a member's RDF is the weighted average of the frames' histograms. ``ess`` reports the
    effective number of frames behind each member (low values: the members disagree by more
    than ``kT`` and the reweighted spread is noisy).
    """
    from ase.md.langevin import Langevin
    from ase.neighborlist import neighbor_list

    from potlearn_ase.data.generate import thermalize

    gen = np.random.default_rng(rng)
    cell = repeat_for(atoms, min_atoms)
    cell.calc = mean_calculator(source)
    predict = member_predictor(source)
    if r_max is None:
        # half the smallest perpendicular width: no double counting of periodic images
        c = cell.cell.array
        widths = cell.get_volume() / np.linalg.norm(np.cross(c[[1, 2, 0]], c[[2, 0, 1]]), axis=1)
        r_max = 0.5 * float(widths.min())
    thermalize(cell, temperature_K, gen)
    dyn = Langevin(
        cell,
        timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=0.02,
        rng=gen,
        fixcm=False,
    )
    dyn.run(equilibration)
    edges = np.linspace(0.0, r_max, n_bins + 1)
    hists, energies = [], []
    for _ in range(max(1, (steps - equilibration) // every)):
        dyn.run(every)
        d = neighbor_list("d", cell, r_max)
        hists.append(np.histogram(d, bins=edges)[0])
        energies.append(predict(cell)["energy"])
    H = np.array(hists, dtype=float)  # (F, n_bins)
    E = np.array(energies)  # (F, M)
    beta = 1.0 / (units.kB * temperature_K)
    logw = -beta * (E - E.mean(axis=1, keepdims=True))
    logw -= logw.max(axis=0, keepdims=True)
    w = np.exp(logw)
    w /= w.sum(axis=0, keepdims=True)
    n = len(cell)
    rho = n / cell.get_volume()
    r = 0.5 * (edges[1:] + edges[:-1])
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = (w.T @ H) / (n * rho * shell)
    return RDFResult(r=r, g=g, ess=1.0 / np.sum(w**2, axis=0), n_frames=len(H))
