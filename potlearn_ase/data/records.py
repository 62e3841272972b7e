"""What one record of the label store holds: a structure, its labels and its provenance.

A :class:`Record` is built from labelled ``ase.Atoms`` by :func:`make_record`, which checks the
labels (energy and forces present, finite, not stale; stress in ASE Voigt order), keeps the
JSON scalars of ``atoms.info``, fills in the standard provenance keys (:data:`PROVENANCE_KEYS`)
and names the structure by its content hash (:func:`structure_hash`). Records come in two
kinds: ``labels`` (energy, forces, optional stress) and ``failures`` (reference calls that
failed, with the error). The journal and the HDF5 file store records; :class:`FailureRecord`
is what :meth:`LabelStore.failures <potlearn_ase.data.store.LabelStore.failures>` returns.
"""

from __future__ import annotations

import copy
import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from potlearn_ase.errors import DataFormatError, InvalidStructureError, MissingLabelError

__all__ = [
    "FAILURES",
    "KINDS",
    "LABELS",
    "PROVENANCE_KEYS",
    "FailureRecord",
    "Record",
    "make_record",
    "reference_of",
    "structure_hash",
]

PROVENANCE_KEYS = (
    "reference",
    "reference_params",
    "engine",
    "md_step",
    "uncertainty",
    "wall_time",
    "timestamp",
)
"""Keys every stored provenance holds (missing ones are filled with ``None`` or ``{}``)."""

LABELS, FAILURES = "labels", "failures"
KINDS = (LABELS, FAILURES)
"""The two kinds (tables) of records: labelled structures and failed reference calls."""
_GRID = 1e8  # structure_hash rounds lengths to 1e-8 Angstrom


def _grid(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(np.abs(values) > 1e10):
        raise InvalidStructureError(f"{what} are not finite (or beyond 1e10 Angstrom)")
    return np.rint(values * _GRID).astype("<i8")


def _hash_arrays(
    numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray
) -> str:
    h = hashlib.sha256(b"potlearn-ase structure v1\0")
    h.update(struct.pack("<q", len(numbers)))
    h.update(np.asarray(numbers, dtype="<i8").tobytes())
    h.update(_grid(positions, "positions").tobytes())
    h.update(_grid(cell, "cell vectors").tobytes())
    h.update(np.asarray(pbc, dtype=bool).astype("u1").tobytes())
    return h.hexdigest()


def structure_hash(atoms: Atoms) -> str:
    """Content hash of a structure: sha256 of species, positions, cell and pbc.

    Positions and cell are rounded to 1e-8 Angstrom first, so the hash survives a round trip
    through any file format that keeps 8 decimals. Atom order matters, and positions are not
    wrapped: the hash names exactly the structure a reference calculator saw.

    Raises
    ------
    InvalidStructureError
        If positions or cell are not finite.
    """
    return _hash_arrays(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)


@dataclass(frozen=True)
class FailureRecord:
    """A reference call that failed: the structure, the error message and its provenance."""

    index: int
    atoms: Atoms
    error: str
    provenance: dict[str, Any]


@dataclass
class Record:
    """A structure with its labels (or, for a failure, its error) and its provenance."""

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    info: dict[str, Any]
    provenance: dict[str, Any]
    hash: str
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    error: str | None = None

    def to_atoms(self) -> Atoms:
        """The structure, ``info["provenance"]`` and a SinglePointCalculator of its labels."""
        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        atoms.info.update(self.info)
        atoms.info["provenance"] = copy.deepcopy(self.provenance)
        if self.energy is not None:
            atoms.calc = SinglePointCalculator(
                atoms, energy=self.energy, forces=self.forces, stress=self.stress
            )
        return atoms


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _provenance(provenance: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    if provenance is not None and not isinstance(provenance, Mapping):
        raise DataFormatError(
            f"provenance of {what} must be a mapping, not {type(provenance).__name__}"
        )
    out: dict[str, Any] = {
        "reference": None,
        "reference_params": {},
        "engine": None,
        "md_step": None,
        "uncertainty": {},
        "wall_time": None,
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }
    out.update(provenance or {})
    for key in ("reference_params", "uncertainty"):
        out[key] = {} if out[key] is None else out[key]
        if not isinstance(out[key], Mapping):
            raise DataFormatError(f"provenance key {key!r} of {what} must be a mapping")
    try:
        out["uncertainty"] = {str(k): float(v) for k, v in out["uncertainty"].items()}
    except (TypeError, ValueError) as exc:
        raise DataFormatError(
            f"provenance key 'uncertainty' of {what} must map names to floats: {exc}"
        ) from None
    for key, value in out.items():
        try:
            out[key] = json.loads(json.dumps(value, default=_json_default))
        except (TypeError, ValueError) as exc:
            raise DataFormatError(f"provenance key {key!r} of {what} is not JSON: {exc}") from None
    return out


def reference_of(
    provenance: Mapping[str, Any] | None, params: Mapping[str, Any] | None = None
) -> tuple[str | None, str]:
    """The reference a label came from: its name and its parameters as canonical JSON.

    With ``params`` given, ``provenance`` is the reference's name instead of a provenance.
    """
    if params is not None or not isinstance(provenance, Mapping):
        name, p = provenance, params
    else:
        name, p = provenance.get("reference"), provenance.get("reference_params")
    return (
        None if name is None else str(name),
        json.dumps(p or {}, sort_keys=True, default=_json_default),
    )


def _info_scalars(info: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, np.generic):
            value = value.item()
        if (
            isinstance(key, str)
            and key != "provenance"
            and (value is None or isinstance(value, (str, bool, int, float)))
        ):
            out[key] = value
    return out


def make_record(
    atoms: Atoms, provenance: Mapping[str, Any] | None, *, labelled: bool, error: str | None = None
) -> Record:
    """The record of ``atoms``: its labels (``labelled``) or the ``error`` of a failed call.

    Raises
    ------
    MissingLabelError
        ``labelled`` and no calculator, no energy or forces, non-finite or stale labels.
    DataFormatError
        Forces or stress of the wrong shape, or a provenance that is not JSON.
    """
    what = f"structure {atoms.get_chemical_formula() or '(empty)'}"
    rec = Record(
        numbers=np.array(atoms.numbers, dtype=np.int64),
        positions=np.array(atoms.positions, dtype=np.float64),
        cell=np.array(atoms.cell.array, dtype=np.float64),
        pbc=np.array(atoms.pbc, dtype=bool),
        info=_info_scalars(atoms.info),
        provenance=_provenance(provenance, what),
        hash=structure_hash(atoms),
        error=error,
    )
    if not labelled:
        return rec
    calc = atoms.calc
    if calc is None:
        raise MissingLabelError(f"{what} has no calculator: energy and forces are required")
    if getattr(calc, "atoms", None) is not None and calc.check_state(atoms):
        raise MissingLabelError(f"{what} changed since its calculation: its labels are stale")
    results = getattr(calc, "results", {})
    for key in ("energy", "forces"):
        if results.get(key) is None:
            raise MissingLabelError(f"{what} has no {key!r} label")
    rec.energy = float(results["energy"])
    rec.forces = np.array(results["forces"], dtype=np.float64)
    if rec.forces.shape != (len(atoms), 3):
        raise DataFormatError(
            f"forces of {what} have shape {rec.forces.shape}, expected ({len(atoms)}, 3)"
        )
    if not (np.isfinite(rec.energy) and np.all(np.isfinite(rec.forces))):
        raise MissingLabelError(f"{what} has a non-finite energy or force label")
    stress = results.get("stress")
    if stress is not None:
        stress = np.array(stress, dtype=np.float64)
        if stress.shape == (3, 3):
            stress = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        if stress.shape != (6,):
            raise DataFormatError(f"stress of {what} has shape {stress.shape}, expected (6,)")
        rec.stress = stress
    return rec
