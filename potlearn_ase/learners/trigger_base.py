"""The trigger interface, and the wrappers that compose any trigger.

A :class:`Trigger` answers, at every MD step, with a :class:`Decision`: ``SKIP``, ``LABEL``
or ``REJECT`` (see :mod:`potlearn_ase.learners.triggers` for the keys and units of the
results it reads, and for the threshold triggers). Two wrappers work with any trigger:
:class:`TrustWindow` rejects a frame whose force uncertainty is above a ceiling before the
wrapped trigger is asked, and :class:`MinGap` lets at most one label through every
``min_steps`` steps. Every name here is importable from :mod:`potlearn_ase.learners.triggers`.
"""

from __future__ import annotations

import abc
import enum
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase.errors import ConfigError, PotlearnError

__all__ = ["Decision", "MinGap", "Trigger", "TrustWindow"]


class Decision(enum.Enum):
    """What the learner does with an MD frame."""

    SKIP = "skip"
    """Use the committee's prediction; no reference call."""
    LABEL = "label"
    """Call the reference on the frame, store the label and update the model."""
    REJECT = "reject"
    """Too uncertain to trust: do not label it, rewind the MD to the last accepted state."""


def _max_force_std(results: Mapping[str, Any]) -> float:
    """``results["max_force_std"]`` (eV/Angstrom), or computed from ``forces_std``."""
    if results.get("max_force_std") is not None:
        return float(results["max_force_std"])
    if results.get("forces_std") is not None:
        fstd = np.asarray(results["forces_std"], dtype=float).reshape(-1, 3)
        return float(np.linalg.norm(fstd, axis=1).max()) if len(fstd) else 0.0
    raise PotlearnError(
        "the trigger needs 'max_force_std' or 'forces_std' in the calculator results; "
        f"got keys {sorted(results)} (is the calculator a committee?)"
    )


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


class Trigger(abc.ABC):
    """Base class: decides, at every MD step, whether to skip, label or reject the frame.

    Subclasses implement :meth:`decide`, :attr:`threshold` and :meth:`describe`; those with
    mutable state also override :meth:`state_dict` and :meth:`load_state_dict` so a run can
    be resumed exactly.
    """

    kind: str = ""

    @abc.abstractmethod
    def decide(self, step: int, atoms: Atoms | None, results: Mapping[str, Any]) -> Decision:
        """The decision for the frame at learner step ``step``.

        Parameters
        ----------
        step : int
            The learner's step counter (increasing by one per call).
        atoms : ase.Atoms
            The structure of this step.
        results : mapping
            The committee calculator's results (see the module docstring for keys and
            units).
        """

    def notify_labelled(self, step: int, results: Mapping[str, Any]) -> None:
        """Called by the learner after the frame of ``step`` was labelled (no-op here)."""
        return None

    @property
    @abc.abstractmethod
    def threshold(self) -> float:
        """The current threshold in the trigger's physical unit (see :meth:`describe`)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """A JSON-able description: ``kind``, parameters and ``unit`` of the threshold."""

    def state_dict(self) -> dict[str, Any]:
        """The mutable state as JSON-able data, for checkpoints."""
        return {"kind": self.kind}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; an empty mapping leaves the state as is."""
        self._check_kind(state)

    def _check_kind(self, state: Mapping[str, Any]) -> bool:
        """True when ``state`` should be loaded; raises on a state of another trigger."""
        if not state:
            return False
        if state.get("kind") != self.kind:
            raise ConfigError(
                f"trigger state of kind {state.get('kind')!r} cannot be loaded into a "
                f"{self.kind!r} trigger"
            )
        return True

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "kind")
        return f"{type(self).__name__}({params})"


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

    kind = "trust_window"

    def __init__(self, inner: Trigger, reject_above: float):
        if not isinstance(inner, Trigger):
            raise ConfigError(f"TrustWindow needs a Trigger to wrap, got {type(inner).__name__}")
        self.inner = inner
        self.reject_above = _positive("reject_above", reject_above)

    def decide(self, step: int, atoms: Atoms | None, results: Mapping[str, Any]) -> Decision:
        s = _max_force_std(results)
        if not math.isfinite(s) or s >= self.reject_above:
            return Decision.REJECT
        return self.inner.decide(step, atoms, results)

    def notify_labelled(self, step: int, results: Mapping[str, Any]) -> None:
        self.inner.notify_labelled(step, results)

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

    kind = "min_gap"

    def __init__(self, inner: Trigger, min_steps: int):
        if not isinstance(inner, Trigger):
            raise ConfigError(f"MinGap needs a Trigger to wrap, got {type(inner).__name__}")
        if isinstance(min_steps, bool) or int(min_steps) != min_steps or min_steps < 1:
            raise ConfigError(f"min_steps must be an integer >= 1, got {min_steps!r}")
        self.inner = inner
        self.min_steps = int(min_steps)
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
