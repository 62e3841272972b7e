"""Triggers that compare one uncertainty of the frame with a fixed threshold.

:class:`FixedThreshold` (force sigma, eV/Angstrom), :class:`RelativeThreshold` (force sigma
over force, dimensionless), :class:`EnergyThreshold` (energy sigma per atom, eV/atom) and
:class:`ExtrapolationThreshold` (the extrapolation grade of models with an active set,
optionally with a force-sigma threshold too). A non-finite uncertainty is never trusted:
each answers ``LABEL``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase.errors import PotlearnError
from potlearn_ase.learners.triggers.base import (
    Decision,
    Trigger,
    check_positive,
    max_force_std,
)

__all__ = [
    "EnergyThreshold",
    "ExtrapolationThreshold",
    "FixedThreshold",
    "RelativeThreshold",
    "max_extrapolation_grade",
]


def _label_above(value: float, threshold: float) -> Decision:
    return Decision.LABEL if not math.isfinite(value) or value > threshold else Decision.SKIP


@dataclass(eq=False)
class FixedThreshold(Trigger):
    """Label when the largest per-atom force uncertainty exceeds a fixed value.

    ``LABEL`` when ``results["max_force_std"] > max_force_std``, else ``SKIP``.

    Parameters
    ----------
    max_force_std : float
        Threshold on the max over atoms of the norm of the force standard deviation,
        in eV/Angstrom.
    """

    max_force_std: float

    kind = "fixed"

    def __post_init__(self) -> None:
        self.max_force_std = check_positive("max_force_std", self.max_force_std)

    def decide(self, step: int, atoms: Atoms | None, results: Mapping[str, Any]) -> Decision:
        return _label_above(max_force_std(results), self.max_force_std)

    @property
    def threshold(self) -> float:
        """The threshold in eV/Angstrom."""
        return self.max_force_std

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "max_force_std": self.max_force_std, "unit": "eV/A"}


@dataclass(eq=False)
class RelativeThreshold(Trigger):
    """Label when some atom's force uncertainty is large compared with its force.

    For each atom i, ``r_i = |sigma_F_i| / max(|F_i|, floor)`` (norms of the 3-vectors,
    eV/Angstrom over eV/Angstrom); ``LABEL`` when ``max_i r_i > ratio``. The floor keeps
    atoms with nearly zero force (near equilibrium) from triggering on tiny uncertainties;
    with ``floor=0`` an atom with exactly zero force and nonzero uncertainty always triggers.

    Parameters
    ----------
    ratio : float
        Threshold on the dimensionless ratio.
    floor : float
        Smallest force norm used in the denominator, eV/Angstrom.
    """

    ratio: float
    floor: float = 0.0

    kind = "relative"

    def __post_init__(self) -> None:
        self.ratio = check_positive("ratio", self.ratio)
        self.floor = check_positive("floor", self.floor, allow_zero=True)

    def relative_uncertainty(self, results: Mapping[str, Any]) -> float:
        """``max_i |sigma_F_i| / max(|F_i|, floor)`` (dimensionless) for these results."""
        for key in ("forces", "forces_std"):
            if results.get(key) is None:
                raise PotlearnError(f"RelativeThreshold needs {key!r} in the calculator results")
        f = np.linalg.norm(np.asarray(results["forces"], dtype=float).reshape(-1, 3), axis=1)
        s = np.linalg.norm(np.asarray(results["forces_std"], dtype=float).reshape(-1, 3), axis=1)
        if len(s) == 0:
            return 0.0
        denom = np.maximum(f, self.floor)
        safe = np.where(denom > 0, denom, 1.0)
        r = np.where(denom > 0, s / safe, np.where(s > 0, np.inf, 0.0))
        r = np.where(np.isnan(s) | np.isnan(f), np.inf, r)
        return float(r.max())

    def decide(self, step: int, atoms: Atoms | None, results: Mapping[str, Any]) -> Decision:
        return _label_above(self.relative_uncertainty(results), self.ratio)

    @property
    def threshold(self) -> float:
        """The ratio (dimensionless)."""
        return self.ratio

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "ratio": self.ratio, "floor": self.floor, "unit": "1"}


@dataclass(eq=False)
class EnergyThreshold(Trigger):
    """Label when the energy uncertainty per atom exceeds a fixed value.

    ``LABEL`` when ``results["energy_std"] / len(atoms) > energy_std_per_atom``.

    Parameters
    ----------
    energy_std_per_atom : float
        Threshold in eV/atom.
    """

    energy_std_per_atom: float

    kind = "energy"

    def __post_init__(self) -> None:
        self.energy_std_per_atom = check_positive("energy_std_per_atom", self.energy_std_per_atom)

    def decide(self, step: int, atoms: Atoms | None, results: Mapping[str, Any]) -> Decision:
        if results.get("energy_std") is None:
            raise PotlearnError("EnergyThreshold needs 'energy_std' in the calculator results")
        if atoms is not None:
            n = len(atoms)
        elif results.get("forces") is not None:
            n = len(np.asarray(results["forces"]).reshape(-1, 3))
        else:
            raise PotlearnError("EnergyThreshold needs the atoms (or 'forces') to count atoms")
        return _label_above(float(results["energy_std"]) / max(n, 1), self.energy_std_per_atom)

    @property
    def threshold(self) -> float:
        """The threshold in eV/atom."""
        return self.energy_std_per_atom

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "energy_std_per_atom": self.energy_std_per_atom,
            "unit": "eV/atom",
        }


def max_extrapolation_grade(results: Mapping[str, Any]) -> float:
    """``results["max_extrapolation_grade"]``, or a clear error when the model has none."""
    value = results.get("max_extrapolation_grade")
    if value is None:
        raise PotlearnError(
            "the extrapolation trigger needs 'max_extrapolation_grade' in the calculator "
            "results: the model carries no active set (potlearn otf attaches one; in Python "
            "use potlearn_ase.models.attach_active_set(model, training_frames))"
        )
    return float(value)


@dataclass(eq=False)
class ExtrapolationThreshold(Trigger):
    """Label when the largest per-atom extrapolation grade passes ``max_grade``.

    The extrapolation grade ``gamma`` (:mod:`potlearn_ase.models.active_set`) flags
    environments outside the span of the training atoms, which the committee spread can miss
    when every member agrees on an extrapolation.

    Parameters
    ----------
    max_grade : float
        Threshold on ``max_extrapolation_grade`` (dimensionless; 1 is the edge of the
        training span, 2 a common choice).
    max_force_std : float, optional
        Also label when ``max_force_std`` (eV/Angstrom) passes this.
    """

    max_grade: float = 2.0
    max_force_std: float | None = None

    kind = "extrapolation"

    def __post_init__(self) -> None:
        self.max_grade = check_positive("max_grade", self.max_grade)
        if self.max_force_std is not None:
            self.max_force_std = check_positive("max_force_std", self.max_force_std)

    def decide(self, step: int, atoms: Atoms | None, results: Mapping[str, Any]) -> Decision:
        if _label_above(max_extrapolation_grade(results), self.max_grade) is Decision.LABEL:
            return Decision.LABEL
        if self.max_force_std is not None:
            return _label_above(max_force_std(results), self.max_force_std)
        return Decision.SKIP

    def priority(self, results: Mapping[str, Any]) -> float:
        """The grade over its threshold (or sigma over its own, if larger)."""
        p = max_extrapolation_grade(results) / self.max_grade
        if self.max_force_std is not None:
            p = max(p, max_force_std(results) / self.max_force_std)
        return p

    @property
    def threshold(self) -> float:
        """The grade threshold (dimensionless)."""
        return self.max_grade

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "max_grade": self.max_grade, "unit": "1"}
        if self.max_force_std is not None:
            out["max_force_std"] = self.max_force_std
        return out
