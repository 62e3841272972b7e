"""The rows of a linear fit's weighted least-squares problem: energies, forces and stress of
each labelled structure against the descriptor's design-matrix rows (the descriptor's
``linear_terms``, less the baseline a descriptor may carry, such as a core repulsion)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

from potlearn_ase.data.validate import get_labels, require_labels
from potlearn_ase.descriptors.base import Descriptor

if TYPE_CHECKING:
    from potlearn_ase.models.linear import LinearFitConfig

__all__ = ["LABEL_BLOCKS", "design_rows", "design_rows_by_type"]

#: the label types, in the order of a row's block index
LABEL_BLOCKS = ("energy", "forces", "stress")

_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def design_rows(
    descriptor: Descriptor,
    frames: Sequence[Atoms],
    config: LinearFitConfig,
    *,
    first_index: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted-least-squares rows ``(A, y, w)`` of a few labelled structures.

    Weights left at ``None`` take their fixed defaults (:meth:`LinearFitConfig.fixed`).

    Parameter layout: for each element ``s``, ``[b_s, w_s (K)]`` (the ``pair_style snap``
    coefficient layout). Energy rows are per atom; force rows hold ``dE/dx`` against ``-F``;
    stress rows hold the virial per atom. ``first_index`` is the position of ``frames[0]``
    among the training structures, so that an error names the right one.
    """
    A, y, w, _ = design_rows_by_type(descriptor, frames, config.fixed(), first_index)
    return A, y, w


def design_rows_by_type(
    descriptor: Descriptor, frames: Sequence[Atoms], config: LinearFitConfig, first_index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`design_rows` and each row's index in :data:`LABEL_BLOCKS`."""
    assert config.energy_weight is not None and config.force_weight is not None
    assert config.stress_weight is not None
    S, K = len(descriptor.elements), descriptor.n_features
    n_par = S * (K + 1)
    rows_A, rows_y, rows_w, rows_b = [], [], [], []
    all_labels = [get_labels(atoms) for atoms in frames]
    for idx, (atoms, labels) in enumerate(zip(frames, all_labels)):
        where = f"training structure {first_index + idx}"
        stress = config.stress_weight > 0 and atoms.pbc.all() and "stress" in labels
        require_labels(
            atoms, energy=True, forces=config.force_weight > 0, stress=bool(stress), where=where
        )
    outputs = _linear_terms(descriptor, frames)
    for atoms, labels, (e_row, dEdx, dEde, species, core) in zip(frames, all_labels, outputs):
        n = len(atoms)
        # a baseline outside the linear part (a core repulsion) is subtracted from the labels
        e_core, dx_core, de_core = core if core is not None else (0.0, 0.0, np.zeros((3, 3)))
        counts = np.bincount(species, minlength=S).astype(np.float64)
        A_e = np.zeros(n_par)
        for s in range(S):
            A_e[s * (K + 1)] = counts[s]
            A_e[s * (K + 1) + 1 : (s + 1) * (K + 1)] = e_row[s]
        rows_A.append(A_e[None] / n)
        rows_y.append(np.array([(labels["energy"] - e_core) / n]))
        rows_w.append(np.array([config.energy_weight**2]))
        rows_b.append(np.zeros(1, dtype=np.int64))
        if config.force_weight > 0:
            A_f = np.zeros((n * 3, n_par))
            for s in range(S):
                A_f[:, s * (K + 1) + 1 : (s + 1) * (K + 1)] = dEdx[:, :, s, :].reshape(n * 3, K)
            rows_A.append(A_f)
            rows_y.append(-(np.asarray(labels["forces"]) + dx_core).reshape(-1))
            rows_w.append(np.full(n * 3, config.force_weight**2))
            rows_b.append(np.ones(n * 3, dtype=np.int64))
        if config.stress_weight > 0 and "stress" in labels and atoms.pbc.all():
            V = abs(atoms.cell.volume)
            A_s = np.zeros((6, n_par))
            for v, (a, b) in enumerate(_VOIGT):
                sym = 0.5 * (dEde[a, b] + dEde[b, a])
                for s in range(S):
                    A_s[v, s * (K + 1) + 1 : (s + 1) * (K + 1)] = sym[s] / n
            rows_A.append(A_s)
            core_virial = np.array([0.5 * (de_core[a, b] + de_core[b, a]) for a, b in _VOIGT])
            rows_y.append((np.asarray(labels["stress"]).reshape(6) * V - core_virial) / n)
            rows_w.append(np.full(6, config.stress_weight**2))
            rows_b.append(np.full(6, 2, dtype=np.int64))
    return (
        np.concatenate(rows_A),
        np.concatenate(rows_y),
        np.concatenate(rows_w),
        np.concatenate(rows_b),
    )


def _linear_terms(
    descriptor: Descriptor, frames: Sequence[Atoms]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any]]:
    """``linear_terms`` of each structure, from one batched descriptor pass, and its baseline
    ``(energy, dE/dx, dE/dstrain)`` when the descriptor carries one (else None)."""
    if not frames:
        return []
    out = descriptor.compute_batch(frames)
    e_rows, dEdx, dEde = (t.cpu().numpy() for t in out.linear_terms())
    species = out.species.cpu().numpy()
    cores = _baseline_parts(out, [len(a) for a in frames])
    result = []
    start = 0
    for b, atoms in enumerate(frames):
        n = len(atoms)
        result.append(
            (e_rows[b], dEdx[start : start + n], dEde[b], species[start : start + n], cores[b])
        )
        start += n
    return result


def _baseline_parts(out: Any, sizes: list[int]) -> list[Any]:
    """Per structure ``(energy, dE/dx, dE/dstrain)`` of a descriptor output's baseline."""
    e_atoms = getattr(out, "baseline_energies", None)
    if e_atoms is None:
        return [None] * len(sizes)
    e = e_atoms.cpu().numpy()
    dx = out.baseline_dx.cpu().numpy()
    de = out.baseline_dstrain.cpu().numpy().reshape(len(sizes), 3, 3)
    bounds = np.cumsum([0, *sizes])
    return [
        (float(e[a:b].sum()), dx[a:b], de[k]) for k, (a, b) in enumerate(zip(bounds, bounds[1:]))
    ]
