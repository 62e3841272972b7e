"""An accuracy target: label only where the model is predicted to miss the error you accept.

The user states the force error they accept, ``force_error`` in eV/Angstrom, in the unit of
the force RMSE they would measure on test data (the root mean square over the Cartesian
components). For every atom the committee predicts that error as
``|sigma_F_i| / sqrt(3)``, the root mean square of the atom's three calibrated force sigmas;
the frame is labelled when some atom's predicted error passes the target, or when the
extrapolation grade says the structure lies outside the training data. As the model improves
its predicted errors fall below the target everywhere the MD goes, and labelling stops,
however long the run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase.learners.triggers.base import Decision, Trigger, check_positive, max_force_std

__all__ = ["TargetError", "predicted_force_error"]


def predicted_force_error(results: Mapping[str, Any]) -> float:
    """The largest per-atom predicted force error (eV/Angstrom): ``max_i |sigma_F_i|/sqrt(3)``,
    the root mean square of each atom's calibrated component sigmas."""
    return max_force_std(results) / math.sqrt(3.0)


@dataclass(eq=False)
class TargetError(Trigger):
    """Label when the predicted force error of some atom exceeds the accepted one.

    Parameters
    ----------
    force_error : float
        Accepted force error, eV/Angstrom (root mean square over components, as a force
        RMSE). Default 0.05.
    max_grade : float or None
        Also label when the largest per-atom extrapolation grade passes this (models with an
        active set; dimensionless, 1 is the edge of the training span). None: sigma only.
    """

    force_error: float = 0.05
    max_grade: float | None = 5.0

    kind = "target"

    def __post_init__(self) -> None:
        self.force_error = check_positive("force_error", self.force_error)
        if self.max_grade is not None:
            self.max_grade = check_positive("max_grade", self.max_grade)

    def decide(self, step: int, atoms: Atoms | None, results: Mapping[str, Any]) -> Decision:
        err = predicted_force_error(results)
        if not math.isfinite(err) or err > self.force_error:
            return Decision.LABEL
        grade = results.get("max_extrapolation_grade")
        if self.max_grade is not None and grade is not None:
            g = float(np.asarray(grade))
            if not math.isfinite(g) or g > self.max_grade:
                return Decision.LABEL
        return Decision.SKIP

    @property
    def threshold(self) -> float:
        """The accepted force error (eV/Angstrom)."""
        return self.force_error

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "force_error": self.force_error,
            "max_grade": self.max_grade,
            "unit": "eV/A",
        }
