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
    dos_sigma: float | None = None,
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
        DOS on a ``mesh``: by the tetrahedron method (default; zero outside the range of the
        phonon frequencies), or with Gaussian smearing of width ``dos_sigma`` (THz), which
        spreads states about ``2 * dos_sigma`` beyond it. The DOS grid spans the frequencies
        of the first member's mesh, widened by 3 % (by ``3 * dos_sigma`` when smearing).
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
    grid: tuple[float, float] | None = None  # DOS frequency range, shared by every member
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
            if grid is None:  # the first member's range, 3 % wider for the other members
                f_mesh = ph.mesh.frequencies
                pad = 3.0 * dos_sigma if dos_sigma else 0.03 * float(np.max(f_mesh))
                grid = (min(0.0, float(np.min(f_mesh))) - pad, float(np.max(f_mesh)) + pad)
            ph.run_total_dos(
                sigma=dos_sigma,
                freq_min=grid[0],
                freq_max=grid[1],
                freq_pitch=(grid[1] - grid[0]) / 200,
                use_tetrahedron_method=dos_sigma is None,
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
    """Phonon bands with their sigma, and the DOS, saved as PNG.

    Top left: the committee-mean bands inside a ``+-n_sigma`` band (shaded, with its edges
    drawn, so that a narrow band still shows); below them, sigma of every branch along the
    path (THz), next to ``|mean - reference|`` when a reference is given; top right: the DOS
    (mean and ``+-n_sigma``) on the bands' frequency axis, which spans the bands and their
    sigma band only. A ``reference`` (e.g. the reference calculator's phonons) is drawn as
    dashed lines.
    """
    from potlearn_ase.analysis.plots import save_figure

    fig = _band_figure(result, reference=reference, n_sigma=n_sigma, title=title)
    return save_figure(fig, path)


def _band_figure(
    result: PhononResult,
    *,
    reference: PhononResult | None = None,
    n_sigma: float = 1.0,
    title: str | None = None,
) -> Any:
    """The matplotlib Figure of :func:`phonon_band_plot`."""
    from potlearn_ase.analysis.plots import new_figure

    if not result.bands.size:
        raise ValueError("phonon_band_plot needs bands: compute phonons(..., bands=True)")
    fig = new_figure((7.2, 5.2))
    has_dos = bool(result.dos.size)
    gs = fig.add_gridspec(2, 2 if has_dos else 1, height_ratios=(3, 1),
                          width_ratios=(3, 1) if has_dos else None)
    ax = fig.add_subplot(gs[0, 0])
    ax_sig = fig.add_subplot(gs[1, 0], sharex=ax)
    mean, std = result.bands.mean(0), result.bands.std(0)
    x = result.path_x
    ref_bands = None
    if reference is not None and reference.bands.shape[1:] == result.bands.shape[1:]:
        ref_bands = reference.bands.mean(0)
    band_label = f"$\\pm${n_sigma:g} sigma (up to {n_sigma * std.max():.2g} THz)"
    for b in range(mean.shape[1]):
        lo, hi = mean[:, b] - n_sigma * std[:, b], mean[:, b] + n_sigma * std[:, b]
        ax.fill_between(x, lo, hi, color="tab:orange", alpha=0.45, lw=0,
                        label=band_label if b == 0 else None)
        ax.plot(x, lo, color="tab:orange", lw=0.5)
        ax.plot(x, hi, color="tab:orange", lw=0.5)
        ax.plot(x, mean[:, b], color="tab:blue", lw=0.9, label="committee mean" if b == 0 else None)
        ax_sig.plot(x, std[:, b], color="tab:orange", lw=1.0, label="sigma" if b == 0 else None)
        if ref_bands is not None:
            ax.plot(x, ref_bands[:, b], color="k", lw=0.9, ls="--",
                    label="reference" if b == 0 else None)
            ax_sig.plot(x, np.abs(mean[:, b] - ref_bands[:, b]), color="k", lw=0.8, ls="--",
                        label="|mean - reference|" if b == 0 else None)
    top = float((mean + n_sigma * std).max())
    if ref_bands is not None:
        top = max(top, float(ref_bands.max()))
    bottom = min(0.0, float((mean - n_sigma * std).min()))
    pad = 0.04 * (top - bottom)
    ax.set_ylim(bottom - pad, top + pad)
    for a in (ax, ax_sig):
        for lx in result.label_x:
            a.axvline(lx, color="0.7", lw=0.6)
    ax_sig.set_xticks(result.label_x)
    ax_sig.set_xticklabels(["$\\Gamma$" if s == "G" else s for s in result.path_labels])
    ax.tick_params(labelbottom=False)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylabel("frequency (THz)")
    ax_sig.set_ylabel("sigma, error (THz)")
    ax_sig.set_ylim(bottom=0.0)
    ax.legend(fontsize=7, loc="lower right")
    ax_sig.legend(fontsize=7, loc="upper right")
    ax.set_title(title or f"phonons, committee mean $\\pm$ {n_sigma:g} sigma", fontsize=10)
    if has_dos:
        ax2 = fig.add_subplot(gs[0, 1], sharey=ax)
        f, dm, ds = result.dos_frequencies, result.dos.mean(0), result.dos.std(0)
        ax2.fill_betweenx(f, np.maximum(dm - n_sigma * ds, 0), dm + n_sigma * ds,
                          color="tab:orange", alpha=0.45, lw=0)
        ax2.plot(dm, f, color="tab:blue", lw=0.9)
        if reference is not None and reference.dos.size:
            ax2.plot(reference.dos.mean(0), reference.dos_frequencies, color="k", lw=0.9, ls="--")
        ax2.set_xlabel("DOS (states/THz)")
        ax2.set_xlim(left=0.0)
        ax2.tick_params(labelleft=False)
    return fig
