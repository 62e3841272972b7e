"""Wrappers that compose with any trigger: a trust window and a minimum gap between labels.

:class:`TrustWindow` rejects a frame whose force uncertainty is above a ceiling before the
wrapped trigger is asked; :class:`MinGap` lets at most one label through every ``min_steps``
steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ase import Atoms

from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.triggers.base import (
    Decision,
    Trigger,
    check_count,
    check_positive,
    max_force_std,
)

__all__ = ["MinGap", "TrustWindow"]


@dataclass(eq=False)
class TrustWindow(Trigger):
    """Reject frames whose force uncertainty is too large to trust, else ask ``inner``.

    ``REJECT`` when ``results["max_force_std"] >= reject_above`` (or is not finite); the
    inner trigger is then not consulted (the frame is not part of the trajectory).

    Parameters
    ----------
    inner : Trigger
        The trigger deciding between skip and label inside the window.
    reject_above : float
        Ceiling on the max per-atom force standard deviation, eV/Angstrom.
    """

    inner: Trigger
    reject_above: float

    kind = "trust_window"

    def __post_init__(self) -> None:
        if not isinstance(self.inner, Trigger):
            raise ConfigError(
                f"TrustWindow needs a Trigger to wrap, got {type(self.inner).__name__}"
            )
        self.reject_above = check_positive("reject_above", self.reject_above)

    def decide(self, step: int, atoms: Atoms | None, results: Mapping[str, Any]) -> Decision:
        s = max_force_std(results)
        if not math.isfinite(s) or s >= self.reject_above:
            return Decision.REJECT
        return self.inner.decide(step, atoms, results)

    def notify_labelled(self, step: int, results: Mapping[str, Any]) -> None:
        self.inner.notify_labelled(step, results)

    def priority(self, results: Mapping[str, Any]) -> float:
        return self.inner.priority(results)

    @property
    def threshold(self) -> float:
        """The inner trigger's threshold (in its unit)."""
        return self.inner.threshold

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reject_above": self.reject_above,
            "unit": "eV/A",
            "inner": self.inner.describe(),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "inner": self.inner.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self._check_kind(state):
            self.inner.load_state_dict(state.get("inner", {}))


@dataclass(eq=False)
class MinGap(Trigger):
    """Never label within ``min_steps`` steps of the previous label.

    The inner trigger is asked at every step (so running statistics stay current); a
    ``LABEL`` at a step ``s`` with ``s - last_label < min_steps`` becomes ``SKIP``. The last
    label is the latest step this trigger answered ``LABEL`` for or was told about through
    :meth:`notify_labelled` (a label the learner took on its own, e.g. after a rewind).

    Parameters
    ----------
    inner : Trigger
        The trigger to throttle.
    min_steps : int
        Smallest number of steps between two labels (>= 1).
    """

    inner: Trigger
    min_steps: int

    kind = "min_gap"

    def __post_init__(self) -> None:
        if not isinstance(self.inner, Trigger):
            raise ConfigError(f"MinGap needs a Trigger to wrap, got {type(self.inner).__name__}")
        self.min_steps = check_count("min_steps", self.min_steps)
        self.last_label: int | None = None

    def decide(self, step: int, atoms: Atoms | None, results: Mapping[str, Any]) -> Decision:
        d = self.inner.decide(step, atoms, results)
        if d is Decision.LABEL:
            if self.last_label is not None and step - self.last_label < self.min_steps:
                return Decision.SKIP
            self.last_label = int(step)
        return d

    def notify_labelled(self, step: int, results: Mapping[str, Any]) -> None:
        if self.last_label is None or step > self.last_label:
            self.last_label = int(step)
        self.inner.notify_labelled(step, results)

    def priority(self, results: Mapping[str, Any]) -> float:
        return self.inner.priority(results)

    @property
    def threshold(self) -> float:
        """The inner trigger's threshold (in its unit)."""
        return self.inner.threshold

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "min_steps": self.min_steps, "inner": self.inner.describe()}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "last_label": self.last_label, "inner": self.inner.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not self._check_kind(state):
            return
        last = state.get("last_label")
        self.last_label = None if last is None else int(last)
        self.inner.load_state_dict(state.get("inner", {}))
