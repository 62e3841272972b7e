"""Harmonic phonons of every member (phonopy): special points, bands, DOS, and their plot."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase.analysis.qoi.base import QoI, Source, member_predictor

__all__ = ["PhononResult", "phonon_band_plot", "phonons"]


@dataclass(frozen=True)
class PhononResult:
    """Phonons of every member: frequencies at special points, band structure and DOS (THz).

    Attributes
    ----------
    labels : tuple of str
        Special points, e.g. ``("G", "X", "W", "K", "L")``.
    special_frequencies : np.ndarray
        ``(M, n_points, n_bands)`` sorted frequencies at the special points.
    path_labels : tuple of str
        Labels along the band path; ``path_x`` their positions ``label_x``.
    path_x : np.ndarray
        ``(n_q,)`` distance along the band path (1/A).
    label_x : np.ndarray
        Positions of ``path_labels`` on ``path_x``.
    bands : np.ndarray
        ``(M, n_q, n_bands)``; empty when bands were not asked for.
    dos_frequencies : np.ndarray
        ``(n_f,)`` frequency grid of the DOS; ``dos`` ``(M, n_f)`` states per THz per cell.
    dos : np.ndarray
    """

    labels: tuple[str, ...]
    special_frequencies: np.ndarray
    path_labels: tuple[str, ...] = ()
    path_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    label_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bands: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    dos_frequencies: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dos: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def qois(self) -> list[QoI]:
        """Scalar QoIs ``phonon_<point>_<band>`` (band 1 the lowest) at each special point.

        The three acoustic branches at Gamma (zero by translation invariance) are left out.
        """
        out = []
        for k, lab in enumerate(self.labels):
            for b in range(self.special_frequencies.shape[2]):
                if lab == "G" and b < 3:
                    continue
                out.append(QoI(f"phonon_{lab}_{b + 1}", "THz", self.special_frequencies[:, k, b]))
        return out


def _phonopy_atoms(atoms: Atoms) -> Any:
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=atoms.cell.array,
        scaled_positions=atoms.get_scaled_positions(),
    )


def phonons(
    source: Source,
    atoms: Atoms,
    *,
    supercell: int | Sequence[int] | None = None,
    min_atoms: int = 48,
    displacement: float = 0.01,
    bands: bool = True,
    dos: bool = True,
    npoints: int = 60,
    mesh: Sequence[int] = (12, 12, 12),
    dos_sigma: float = 0.15,
) -> PhononResult:
    """Harmonic phonons (phonopy, finite displacements) of every member.

    The displaced supercells are predicted once each; every member's forces give its own
    force constants. Special points and the band path follow ASE's Bravais-lattice
    conventions (:meth:`ase.cell.Cell.bandpath`) on phonopy's primitive cell.

    Parameters
    ----------
    source : CommitteeModel or ASE Calculator
    atoms : ase.Atoms
        The unit cell (primitive or conventional).
    supercell : int or 3 ints, optional
        Diagonal supercell multipliers of ``atoms``; by default the smallest cube of copies
        with at least ``min_atoms`` atoms.
    displacement : float
        Finite displacement (A).
    bands, dos : bool
        Also compute the band structure along the path (``npoints`` q-points) and the total
        DOS on a ``mesh`` with Gaussian smearing ``dos_sigma`` (THz).
    """
    from ase.cell import Cell
    from phonopy import Phonopy

    predict = member_predictor(source)
    if supercell is None:
        supercell = max(1, int(np.ceil((min_atoms / len(atoms)) ** (1.0 / 3.0) - 1e-9)))
    sc = [int(supercell)] * 3 if np.ndim(supercell) == 0 else [int(s) for s in supercell]
    ph = Phonopy(_phonopy_atoms(atoms), supercell_matrix=np.diag(sc), primitive_matrix="auto")
    ph.generate_displacements(distance=displacement)
    forces = []
    for cell in ph.supercells_with_displacements:
        a = Atoms(cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)
        F = predict(a)["forces"]
        forces.append(F - F.mean(axis=1, keepdims=True))  # remove drift
    F_all = np.stack(forces, axis=1)  # (M, n_disp, N, 3)
    path = Cell(ph.primitive.cell).bandpath(npoints=npoints)
    labels = tuple(path.special_points)
    special_q = np.array([path.special_points[k] for k in labels])
    x, label_x, path_labels = path.get_linear_kpoint_axis()
    M = F_all.shape[0]
    spec, band_list, dos_list = [], [], []
    fmax_dos = None
    for m in range(M):
        ph.forces = F_all[m]
        ph.produce_force_constants(show_drift=False)
        ph.run_qpoints(special_q)
        spec.append(np.sort(ph.qpoints.frequencies, axis=1))
        if bands:
            ph.run_qpoints(path.kpts)
            band_list.append(ph.qpoints.frequencies)
        if dos:
            ph.run_mesh(list(mesh), is_gamma_center=True)
            if fmax_dos is None:
                fmax_dos = 1.3 * float(np.max(ph.mesh.frequencies)) + 1.0
            ph.run_total_dos(
                sigma=dos_sigma,
                freq_min=-1.0,
                freq_max=fmax_dos,
                freq_pitch=0.05,
                use_tetrahedron_method=False,
            )
            dos_f = np.array(ph.total_dos.frequency_points)
            dos_list.append(np.array(ph.total_dos.dos))
    return PhononResult(
        labels=labels,
        special_frequencies=np.array(spec),
        path_labels=tuple(path_labels),
        path_x=np.asarray(x),
        label_x=np.asarray(label_x),
        bands=np.array(band_list) if bands else np.zeros((0, 0, 0)),
        dos_frequencies=np.asarray(dos_f) if dos else np.zeros(0),
        dos=np.array(dos_list) if dos else np.zeros((0, 0)),
    )


def phonon_band_plot(
    result: PhononResult,
    path: str | os.PathLike,
    *,
    reference: PhononResult | None = None,
    n_sigma: float = 1.0,
    title: str | None = None,
) -> Path:
    """Phonon bands (mean line, ``+-n_sigma`` band) and DOS side by side, saved as PNG.

    A ``reference`` (e.g. the reference calculator's phonons) is drawn as dashed lines.
    """
    from potlearn_ase.analysis.plots import new_figure, save_figure

    if not result.bands.size:
        raise ValueError("phonon_band_plot needs bands: compute phonons(..., bands=True)")
    fig = new_figure((7.0, 4.0))
    has_dos = bool(result.dos.size)
    gs = fig.add_gridspec(1, 2, width_ratios=(3, 1)) if has_dos else fig.add_gridspec(1, 1)
    ax = fig.add_subplot(gs[0, 0])
    mean, std = result.bands.mean(0), result.bands.std(0)
    x = result.path_x
    for b in range(mean.shape[1]):
        ax.fill_between(
            x,
            mean[:, b] - n_sigma * std[:, b],
            mean[:, b] + n_sigma * std[:, b],
            color="tab:blue",
            alpha=0.3,
            lw=0,
        )
        ax.plot(x, mean[:, b], color="tab:blue", lw=1.2, label="committee mean" if b == 0 else None)
        if reference is not None and reference.bands.size:
            ax.plot(
                reference.path_x,
                reference.bands.mean(0)[:, b],
                color="k",
                lw=1,
                ls="--",
                label="reference" if b == 0 else None,
            )
    for lx in result.label_x:
        ax.axvline(lx, color="0.7", lw=0.6)
    ax.set_xticks(result.label_x)
    ax.set_xticklabels(["$\\Gamma$" if s == "G" else s for s in result.path_labels])
    ax.set_xlim(x[0], x[-1])
    ax.set_ylabel("frequency (THz)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or f"phonons, mean $\\pm$ {n_sigma:g} sigma")
    if has_dos:
        ax2 = fig.add_subplot(gs[0, 1], sharey=ax)
        f, dm, ds = result.dos_frequencies, result.dos.mean(0), result.dos.std(0)
        ax2.fill_betweenx(f, dm - n_sigma * ds, dm + n_sigma * ds, color="tab:blue", alpha=0.3)
        ax2.plot(dm, f, color="tab:blue", lw=1.0)
        if reference is not None and reference.dos.size:
            ax2.plot(reference.dos.mean(0), reference.dos_frequencies, color="k", lw=1, ls="--")
        ax2.set_xlabel("DOS")
        ax2.tick_params(labelleft=False)
    return save_figure(fig, path)
