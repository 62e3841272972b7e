"""Checks of structures and their labels, shared by every reader and model.

A structure is valid when its positions and cell are finite and the cell vectors along its
periodic directions span a non-degenerate lattice. Labels follow ASE's convention: a
calculator attached to the atoms (usually a
:class:`~ase.calculators.singlepoint.SinglePointCalculator`) holds ``energy`` (eV, per
structure), ``forces`` (N x 3, eV/Angstrom) and optionally ``stress`` (Voigt 6, ASE sign,
eV/Angstrom^3) in its ``results``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase.errors import (
    DataFormatError,
    InvalidStructureError,
    MissingLabelError,
    UnknownElementError,
)

__all__ = ["check_structure", "get_labels", "require_labels", "species_indices"]

#: Smallest accepted volume (area, length) spanned by the periodic cell vectors, in Angstrom^k.
MIN_MEASURE = 1e-8
#: Smallest accepted ratio of that measure to the product of the vectors' lengths (the sine of
#: the angle between two vectors, or its three-dimensional analogue).
MIN_RELATIVE_MEASURE = 1e-8

LABEL_KEYS = ("energy", "forces", "stress")


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def check_structure(atoms: Atoms, *, where: str = "") -> None:
    """Raise if a structure cannot be handled by any descriptor.

    Parameters
    ----------
    atoms
        The structure.
    where
        Where the structure comes from (e.g. ``"train.xyz, frame 3"``); starts the message.

    Raises
    ------
    InvalidStructureError
        For a structure without atoms, non-finite positions, a non-finite cell, or periodic
        cell vectors that are (nearly) zero or linearly dependent. With ``k`` periodic
        directions the ``k``-dimensional volume they span must exceed :data:`MIN_MEASURE`
        (Angstrom^k) and its ratio to the product of their lengths must exceed
        :data:`MIN_RELATIVE_MEASURE`.
    """
    pre = _prefix(where)
    if not isinstance(atoms, Atoms):
        raise InvalidStructureError(f"{pre}expected ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise InvalidStructureError(f"{pre}the structure holds no atoms")
    pos = atoms.positions
    bad = ~np.isfinite(pos).all(axis=1)
    if bad.any():
        idx = np.flatnonzero(bad)
        shown = ", ".join(str(i) for i in idx[:10]) + (", ..." if len(idx) > 10 else "")
        raise InvalidStructureError(
            f"{pre}non-finite positions (NaN or inf) at atom index {shown} "
            f"({len(idx)} of {len(atoms)} atoms)"
        )
    cell = np.asarray(atoms.cell.array, dtype=float)
    if not np.isfinite(cell).all():
        raise InvalidStructureError(f"{pre}non-finite cell (NaN or inf): {cell.tolist()}")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    k = int(pbc.sum())
    if k == 0:
        return
    vecs = cell[pbc]
    lengths = np.linalg.norm(vecs, axis=1)
    axes = "xyz"
    for ax, length in zip(np.flatnonzero(pbc), lengths, strict=True):
        if length <= 1e-12:
            raise InvalidStructureError(
                f"{pre}singular cell: periodic cell vector {axes[ax]} has length {length:.3g} "
                f"Angstrom"
            )
    gram = vecs @ vecs.T
    measure = float(np.sqrt(max(np.linalg.det(gram), 0.0)))
    relative = measure / float(np.prod(lengths))
    names = ", ".join(axes[i] for i in np.flatnonzero(pbc))
    kind = {1: "length", 2: "area", 3: "volume"}[k]
    if measure <= MIN_MEASURE or relative <= MIN_RELATIVE_MEASURE:
        raise InvalidStructureError(
            f"{pre}singular cell: the periodic cell vectors ({names}) are linearly dependent "
            f"({kind} {measure:.3g} Angstrom^{k}, relative {relative:.3g}); cell = "
            f"{cell.tolist()}"
        )


def get_labels(atoms: Atoms) -> dict[str, Any]:
    """The labels a structure carries, without triggering a calculation.

    Parameters
    ----------
    atoms
        The structure; its labels are read from ``atoms.calc.results``.

    Returns
    -------
    dict
        Among ``energy`` (float, eV), ``forces`` (``(N, 3)`` float array, eV/Angstrom) and
        ``stress`` (``(6,)`` float array in ASE's Voigt order, eV/Angstrom^3), those present.
        Arrays are copies. A 3 x 3 stress is converted to Voigt order. Empty when the atoms
        have no calculator or it has no results.
    """
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None) or {}
    out: dict[str, Any] = {}
    if results.get("energy") is not None:
        out["energy"] = float(np.asarray(results["energy"]).reshape(()))
    if results.get("forces") is not None:
        out["forces"] = np.array(results["forces"], dtype=float)
    if results.get("stress") is not None:
        s = np.array(results["stress"], dtype=float)
        if s.shape == (3, 3):
            s = s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        out["stress"] = s
    return out


def require_labels(
    atoms: Atoms,
    *,
    energy: bool = True,
    forces: bool = True,
    stress: bool = False,
    where: str = "",
) -> None:
    """Raise unless a structure carries the requested, finite, well-shaped labels.

    Parameters
    ----------
    atoms
        The structure.
    energy, forces, stress
        Which labels are required.
    where
        Where the structure comes from; starts the message.

    Raises
    ------
    MissingLabelError
        Naming every required label that is absent or not finite.
    DataFormatError
        When forces are not ``(N, 3)`` or stress is not Voigt 6 (or 3 x 3).
    """
    pre = _prefix(where)
    labels = get_labels(atoms)
    wanted = [k for k, w in zip(LABEL_KEYS, (energy, forces, stress), strict=True) if w]
    missing = [k for k in wanted if k not in labels]
    if "forces" in labels and labels["forces"].shape != (len(atoms), 3):
        raise DataFormatError(
            f"{pre}forces have shape {labels['forces'].shape}, expected ({len(atoms)}, 3)"
        )
    if "stress" in labels and labels["stress"].shape != (6,):
        raise DataFormatError(
            f"{pre}stress has shape {labels['stress'].shape}, expected (6,) or (3, 3)"
        )
    nonfinite = [k for k in wanted if k in labels and not np.isfinite(labels[k]).all()]
    if missing or nonfinite:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if nonfinite:
            parts.append(f"non-finite {', '.join(nonfinite)}")
        present = ", ".join(labels) or "none"
        msg = f"{pre}{'; '.join(parts)} (labels present: {present})"
        if missing:
            other = [k for k in atoms.info] + [
                k for k in atoms.arrays if k not in ("numbers", "positions")
            ]
            if other:
                msg += (
                    f"; the structure also carries {', '.join(sorted(other))}: name the label "
                    "keys (--energy-key, --forces-key, ... or LabelKeys) if they hold them"
                )
        raise MissingLabelError(msg)


def species_indices(numbers: Sequence[int] | np.ndarray, elements: Sequence[str]) -> np.ndarray:
    """Map atomic numbers to indices into ``elements``.

    Raises
    ------
    UnknownElementError
        Naming the first element that is not in ``elements``.
    """
    from ase.data import atomic_numbers, chemical_symbols

    table = {atomic_numbers[s]: k for k, s in enumerate(elements)}
    numbers = np.asarray(numbers, dtype=np.int64)
    out = np.empty(len(numbers), dtype=np.int64)
    for k, z in enumerate(numbers):
        try:
            out[k] = table[int(z)]
        except KeyError:
            raise UnknownElementError(chemical_symbols[int(z)], list(elements)) from None
    return out
