"""A force-uncertainty threshold that follows the recent uncertainty of the potential."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.triggers.base import (
    Decision,
    Trigger,
    check_count,
    check_positive,
    max_force_std,
)

__all__ = ["AdaptiveThreshold"]


@dataclass(eq=False)
class AdaptiveThreshold(Trigger):
    """A force-uncertainty threshold that follows the recent uncertainty of the potential.

    The idea of VASP's ``ML_CTIFOR`` update (``ML_ICRITERIA=1``): the threshold is set from
    an average of recent uncertainties instead of being fixed by hand. Here::

        threshold = clip(factor * mean(last `window` max_force_std values), min, max)

    in eV/Angstrom, where the average runs over the max_force_std of the last ``window``
    *steps* (every frame the trigger saw, skipped or labelled), taken before the current
    step; ``LABEL`` when the current max_force_std exceeds it. Until ``warmup`` steps have
    been seen the threshold is ``initial``.

    Why recent steps and not recent label events: a label is only taken when the uncertainty
    is above the threshold, so an average over label events always lies above the threshold
    that produced them and, times ``factor >= 1``, can only ratchet upward. The average over
    steps instead tracks the uncertainty of the trajectory as it is: it falls after labels
    have improved the model and rises when the MD reaches new temperatures or phases. A
    frame is labelled when its uncertainty stands out (by ``factor``) from the recent ones, so
    labels keep coming where the uncertainty jumps (a new region of configuration space)
    while the threshold catches up within about ``window`` steps. The clip bounds make it
    safe at both ends: ``min_threshold`` is the accuracy below which no label is wanted (so
    labelling stops once the potential is good enough everywhere the MD goes), and
    ``max_threshold`` keeps a slow, steady rise of the uncertainty (which a running average
    would follow) from ever going unlabelled beyond that value.

    The running mean is kept of the *raw* committee spread (``max_force_std`` divided by the
    ``calibration`` it was reported with) and scaled by the current calibration: a new
    calibration after a label rescales threshold and uncertainty alike, so it does not by
    itself make every following step look uncertain.

    Parameters
    ----------
    factor : float
        Multiplier (>= 1) of the running mean; larger means fewer labels.
    window : int
        Number of recent steps in the running mean.
    initial : float
        Threshold during the first ``warmup`` steps, eV/Angstrom.
    min_threshold, max_threshold : float
        Bounds of the threshold, eV/Angstrom.
    warmup : int
        Steps to see before the running mean is used (1 <= warmup <= window).
    """

    factor: float = 1.2
    window: int = 50
    initial: float = 0.1
    min_threshold: float = 0.05
    max_threshold: float = 1.0
    warmup: int = 5

    kind = "adaptive"

    def __post_init__(self) -> None:
        self.factor = check_positive("factor", self.factor)
        if self.factor < 1.0:
            raise ConfigError(
                f"factor must be >= 1 (the threshold sits above the mean), got {self.factor!r}"
            )
        self.window = check_count("window", self.window)
        if (isinstance(self.warmup, bool) or int(self.warmup) != self.warmup
                or not 1 <= self.warmup <= self.window):
            raise ConfigError(
                f"warmup must be an integer in [1, window={self.window}], got {self.warmup!r}"
            )
        self.warmup = int(self.warmup)
        self.min_threshold = check_positive("min_threshold", self.min_threshold, allow_zero=True)
        self.max_threshold = check_positive("max_threshold", self.max_threshold)
        if self.min_threshold > self.max_threshold:
            raise ConfigError(
                f"min_threshold ({self.min_threshold}) is larger than max_threshold "
                f"({self.max_threshold})"
            )
        self.initial = check_positive("initial", self.initial)
        self._values: deque[float] = deque(maxlen=self.window)  # raw (uncalibrated) spreads
        self._current = self._next_threshold(1.0)

    def _next_threshold(self, calibration: float) -> float:
        if len(self._values) < self.warmup:
            value = self.initial
        else:
            value = self.factor * calibration * float(np.mean(self._values))
        return float(min(max(value, self.min_threshold), self.max_threshold))

    def decide(self, step: int, atoms: Atoms | None, results: Mapping[str, Any]) -> Decision:
        s = max_force_std(results)
        alpha = float(results.get("calibration", 1.0)) or 1.0
        self._current = self._next_threshold(alpha)
        if not math.isfinite(s):
            return Decision.LABEL
        self._values.append(s / alpha)
        return Decision.LABEL if s > self._current else Decision.SKIP

    @property
    def threshold(self) -> float:
        """The threshold (eV/Angstrom) applied by the latest :meth:`decide` call.

        Before the first call, the one the first call will apply.
        """
        return self._current

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "factor": self.factor,
            "window": self.window,
            "initial": self.initial,
            "min_threshold": self.min_threshold,
            "max_threshold": self.max_threshold,
            "warmup": self.warmup,
            "unit": "eV/A",
        }

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "raw_values": list(self._values), "current": self._current}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not self._check_kind(state):
            return
        # checkpoints before raw spreads were kept hold calibrated "values": close enough
        values = state.get("raw_values", state.get("values", []))
        self._values = deque((float(v) for v in values), maxlen=self.window)
        self._current = float(state.get("current", self._next_threshold(1.0)))
