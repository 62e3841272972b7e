"""Where a file keeps its labels, and checking them as they are read.

ASE's extended XYZ reader turns the keys ``energy``, ``forces`` and ``stress`` into labels.
Files from other codes often use other names (``REF_energy``, ``dft_forces``, ...) or give a
virial instead of a stress. :class:`LabelKeys` names the keys of a file;
:func:`apply_label_keys` moves those values into the structure's labels (ASE's names, the
stress in eV/A^3 in Voigt order, ``stress = -virial / volume``), and :func:`check_labels`
rejects a frame whose labels are not numbers of the right shape, naming file, frame and key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from potlearn_ase.errors import DataFormatError, MissingLabelError

__all__ = ["LabelKeys", "apply_label_keys", "check_labels"]

_VOIGT_FROM_3X3 = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])


@dataclass(frozen=True)
class LabelKeys:
    """The keys that hold a file's labels.

    Attributes
    ----------
    energy : str
        ``info`` key of the total energy (eV).
    forces : str
        Per-atom array of the forces (eV/A).
    stress : str
        ``info`` key of the stress (eV/A^3; 6 Voigt components in ASE's order, or 3 x 3).
    virial : str
        ``info`` key of a virial (eV; 3 x 3 or 9 numbers, or Voigt 6), used when there is no
        stress: ``stress = -virial / volume`` (periodic cells only).
    """

    energy: str = "energy"
    forces: str = "forces"
    stress: str = "stress"
    virial: str = "virial"

    @classmethod
    def from_args(cls, args: Any) -> LabelKeys:
        """The keys given by the ``--energy-key``... options (:mod:`potlearn_ase.cli.common`)."""
        return cls(
            energy=args.energy_key, forces=args.forces_key, stress=args.stress_key,
            virial=args.virial_key,
        )


def _voigt(value: Any, where: str, key: str) -> np.ndarray:
    try:
        v = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise DataFormatError(f"{where}: {key} is not numeric: {value!r}") from None
    if v.size == 9:
        v = v.reshape(3, 3)[_VOIGT_FROM_3X3]
    if v.shape != (6,):
        raise DataFormatError(f"{where}: {key} has {v.size} numbers; expected 6 (Voigt) or 9")
    return v


def _carried(atoms: Atoms, results: dict[str, Any]) -> str:
    keys = sorted(set(atoms.info) | set(atoms.arrays) | set(results))
    keys = [k for k in keys if k not in ("numbers", "positions")]
    return ", ".join(keys) or "none"


def _missing(carried: str, where: str, what: str, key: str) -> None:
    raise MissingLabelError(
        f"{where}: the {what} key {key!r} is not in the frame; it carries: {carried}"
    )


def apply_label_keys(atoms: Atoms, keys: LabelKeys, where: str) -> Atoms:
    """Move the labels named by ``keys`` out of ``info``/``arrays`` into ``atoms``'s labels.

    Labels already present under ASE's own names are kept unless ``keys`` names others.
    Returns ``atoms`` (changed in place).

    Raises
    ------
    MissingLabelError
        A key that ``keys`` names (other than ASE's own name) is absent from the frame: the
        energy or forces key always, the stress or virial key for a cell periodic in x, y
        and z (a misspelled key never falls back to the file's own labels). The message
        names ``where``, the key and the keys the frame carries.
    """
    calc = atoms.calc
    results: dict[str, Any] = dict(getattr(calc, "results", None) or {})
    carried = _carried(atoms, results)
    changed = False
    if keys.energy != "energy":
        if keys.energy in atoms.info:
            results["energy"] = atoms.info.pop(keys.energy)
        elif keys.energy in results:
            results["energy"] = results[keys.energy]
        else:
            _missing(carried, where, "energy", keys.energy)
        results["free_energy"] = results["energy"]  # not the file's own, other energy
        changed = True
    if keys.forces != "forces":
        if keys.forces in atoms.arrays:
            results["forces"] = np.array(atoms.arrays.pop(keys.forces), dtype=float)
        elif keys.forces in results:
            results["forces"] = np.array(results[keys.forces], dtype=float)
        else:
            _missing(carried, where, "forces", keys.forces)
        changed = True
    periodic = bool(atoms.pbc.all())
    if keys.stress != "stress":
        if keys.stress in atoms.info:
            results["stress"] = _voigt(atoms.info.pop(keys.stress), where, keys.stress)
            changed = True
        elif periodic and keys.virial not in atoms.info:
            _missing(carried, where, "stress", keys.stress)
    if "stress" not in results and keys.virial in atoms.info:
        if not periodic:
            raise DataFormatError(f"{where}: a {keys.virial} needs a cell periodic in x, y, z")
        virial = _voigt(atoms.info.pop(keys.virial), where, keys.virial)
        results["stress"] = -virial / atoms.get_volume()
        changed = True
    elif keys.virial != "virial" and "stress" not in results and periodic:
        _missing(carried, where, "virial", keys.virial)
    if changed:
        if "energy" in results and "free_energy" not in results:
            results["free_energy"] = results["energy"]
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def check_labels(atoms: Atoms, where: str) -> None:
    """Raise unless every label the structure carries is finite and of the right shape.

    Raises
    ------
    DataFormatError
        A label that is not a number (or not one number, for the energy), or of the wrong
        shape, naming ``where`` and the key.
    MissingLabelError
        A label that is NaN or infinite, naming ``where``, the key and the first atom.
    """
    results = getattr(atoms.calc, "results", None) or {}
    for key in ("energy", "free_energy"):
        if results.get(key) is None:
            continue
        try:
            value = np.asarray(results[key], dtype=float)
        except (TypeError, ValueError):
            raise DataFormatError(f"{where}: {key} is not a number: {results[key]!r}") from None
        if value.size != 1:
            raise DataFormatError(f"{where}: {key} holds {value.size} numbers, expected one")
        if not np.isfinite(value).all():
            raise MissingLabelError(f"{where}: {key} is not finite ({float(value.ravel()[0])})")
    for key, shape in (("forces", (len(atoms), 3)), ("stress", None)):
        if results.get(key) is None:
            continue
        value = np.asarray(results[key], dtype=float)
        if key == "stress":
            value = _voigt(value, where, key)
        elif value.shape != shape:
            raise DataFormatError(f"{where}: {key} have shape {value.shape}, expected {shape}")
        bad = ~np.isfinite(value)
        if bad.any():
            first = int(np.argwhere(bad)[0][0])
            what = f"atom {first}" if key == "forces" else f"component {first}"
            raise MissingLabelError(f"{where}: {key} are not finite (first at {what})")
