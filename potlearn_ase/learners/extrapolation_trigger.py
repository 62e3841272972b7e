"""A trigger on the extrapolation grade, alone or together with the committee's force sigma.

The extrapolation grade ``gamma`` (:mod:`potlearn_ase.models.active_set`) flags environments
outside the span of the training atoms, which the committee spread can miss when every member
agrees on an extrapolation. :class:`ExtrapolationThreshold` labels a frame when its largest
per-atom grade passes ``max_grade`` or, when ``max_force_std`` is given, when the calibrated
force sigma passes that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ase import Atoms

from potlearn_ase.errors import PotlearnError
from potlearn_ase.learners.trigger_base import Decision, Trigger, _max_force_std, _positive

__all__ = ["ExtrapolationThreshold"]


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


class ExtrapolationThreshold(Trigger):
    """Label when the largest per-atom extrapolation grade passes ``max_grade``.

    Parameters
    ----------
    max_grade : float
        Threshold on ``max_extrapolation_grade`` (dimensionless; 1 is the edge of the
        training span, 2 a common choice).
    max_force_std : float, optional
        Also label when ``max_force_std`` (eV/Angstrom) passes this.
    """

    kind = "extrapolation"

    def __init__(self, max_grade: float = 2.0, max_force_std: float | None = None):
        self._threshold = _positive("max_grade", max_grade)
        self._force = None if max_force_std is None else _positive("max_force_std", max_force_std)

    def decide(self, step: int, atoms: Atoms | None, results: Mapping[str, Any]) -> Decision:
        g = max_extrapolation_grade(results)
        if not math.isfinite(g) or g > self._threshold:
            return Decision.LABEL
        if self._force is not None:
            s = _max_force_std(results)
            if not math.isfinite(s) or s > self._force:
                return Decision.LABEL
        return Decision.SKIP

    @property
    def threshold(self) -> float:
        """The grade threshold (dimensionless)."""
        return self._threshold

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "max_grade": self._threshold, "unit": "1"}
        if self._force is not None:
            out["max_force_std"] = self._force
        return out
