"""An accuracy target: label only where the model is predicted to miss the error you accept.

The user states the force error they accept, ``force_error`` in eV/Angstrom, in the unit of
the force RMSE they would measure on test data (the root mean square over atoms and
Cartesian components). The learner predicts a structure's error in two parts:

* the **reducible** part: the committee spread of each atom's force (what the model does not
  know yet; labels shrink it), scaled by the factor that the labels' prequential errors give
  it once the misfit is set apart;
* the **misfit** ``noise``: the error the model keeps however many labels it gets (fitted to
  the prequential errors together with the factor, or the posterior's noise level before the
  first label).

The structure's predicted force RMSE is ``sqrt(reducible_rms^2 + noise^2)``. It is labelled
when its reducible RMS passes what the target leaves for it, ``sqrt(force_error^2 -
noise^2)``, and at least the misfit (when the misfit alone nearly fills or passes the target,
more labels cannot bring the error under the target: they are then spent only where the
reducible part is as large as the misfit, so that a label removes at least half the squared
error); when one atom's reducible error passes ``atom_factor`` times that (a
local defect the average hides); or when the extrapolation grade says the structure lies far
outside the training data. As the model improves its reducible error falls below that
everywhere the MD goes, and labelling stops however long the run. Without the learner's keys
(``epistemic_rms_force_std``, ``epistemic_max_force_std``, ``force_noise``) the calibrated
``max_force_std`` stands for both reducible measures and the misfit is 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase.learners.triggers.base import Decision, Trigger, check_positive, max_force_std

__all__ = ["TargetError", "labelling_threshold", "predicted_force_error", "reducible_force_error"]


def reducible_force_error(results: Mapping[str, Any], *, atom: bool = False) -> float:
    """The structure's reducible force error (eV/Angstrom), as a root mean square over its
    atoms and components; with ``atom``, that of its most uncertain atom (over components)."""
    key = "epistemic_max_force_std" if atom else "epistemic_rms_force_std"
    if results.get(key) is not None:
        return float(results[key]) / math.sqrt(3.0)
    return max_force_std(results) / math.sqrt(3.0)


def predicted_force_error(results: Mapping[str, Any]) -> float:
    """The structure's predicted force RMSE (eV/Angstrom), misfit included:
    ``sqrt(reducible^2 + noise^2)``."""
    noise = float(results.get("force_noise") or 0.0)
    return math.hypot(reducible_force_error(results), noise)


def labelling_threshold(force_error: float, noise: float) -> float:
    """The reducible error (eV/A) above which a frame is labelled for a target ``force_error``
    and a misfit ``noise``: ``sqrt(force_error^2 - noise^2)``, but at least ``noise``.

    So a frame is labelled when its predicted error passes both the target and ``sqrt(2)``
    times the misfit: a label is spent only where it can remove at least half of the squared
    error, never to chase a misfit that labels cannot remove."""
    return max(math.sqrt(max(force_error**2 - noise**2, 0.0)), noise)


@dataclass(eq=False)
class TargetError(Trigger):
    """Label when the predicted force error of some atom exceeds the accepted one.

    Parameters
    ----------
    force_error : float
        Accepted force error, eV/Angstrom (root mean square over atoms and components, as a
        force RMSE). Default 0.05.
    max_grade : float or None
        Also label when the largest per-atom extrapolation grade passes this (models with an
        active set; dimensionless, 1 is the edge of the training span). Default 100: grades
        of tens are common where the model is already accurate (in the demo, up to 80 with
        predicted errors under 0.04 eV/A), so only structures far outside the data are
        labelled on the grade alone. None: sigma only.
    atom_factor : float
        Also label when one atom's reducible error passes this many times the labelling
        threshold of the structure's RMS. Default 3.
    """

    force_error: float = 0.05
    max_grade: float | None = 100.0
    atom_factor: float = 3.0

    kind = "target"

    def __post_init__(self) -> None:
        self.force_error = check_positive("force_error", self.force_error)
        self.atom_factor = check_positive("atom_factor", self.atom_factor)
        if self.max_grade is not None:
            self.max_grade = check_positive("max_grade", self.max_grade)

    def decide(self, step: int, atoms: Atoms | None, results: Mapping[str, Any]) -> Decision:
        return Decision.LABEL if self.priority(results) > 1.0 else Decision.SKIP

    def priority(self, results: Mapping[str, Any]) -> float:
        """The largest of: the reducible RMS over its labelling threshold, the most uncertain
        atom's reducible error over ``atom_factor`` times it, the grade over its limit
        (dimensionless; above 1 means the structure is labelled)."""
        noise = float(results.get("force_noise") or 0.0)
        threshold = labelling_threshold(self.force_error, noise)
        p = max(
            reducible_force_error(results) / threshold,
            reducible_force_error(results, atom=True) / (self.atom_factor * threshold),
        )
        grade = results.get("max_extrapolation_grade")
        if self.max_grade is not None and grade is not None:
            p = max(p, float(np.asarray(grade)) / self.max_grade)
        return p if math.isfinite(p) else math.inf

    @property
    def threshold(self) -> float:
        """The accepted force error (eV/Angstrom)."""
        return self.force_error

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "force_error": self.force_error,
            "max_grade": self.max_grade,
            "atom_factor": self.atom_factor,
            "unit": "eV/A",
        }
