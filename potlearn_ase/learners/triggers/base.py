"""The trigger interface: a :class:`Decision` at every MD step, from the committee's results.

Every trigger is a dataclass whose fields are its parameters, in physical units; a
configuration mapping is parsed into one by :func:`potlearn_ase.config.from_mapping` (unknown
keys, wrong types and out-of-range values are :class:`~potlearn_ase.errors.ConfigError`
naming the key). State that a run accumulates (running means, the last label) lives beside
the fields and is saved by :meth:`Trigger.state_dict`.
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

__all__ = ["Decision", "Trigger", "check_positive", "max_force_std"]


class Decision(enum.Enum):
    """What the learner does with an MD frame."""

    SKIP = "skip"
    """Use the committee's prediction; no reference call."""
    LABEL = "label"
    """Call the reference on the frame, store the label and update the model."""
    REJECT = "reject"
    """Too uncertain to trust: do not label it, rewind the MD to the last accepted state."""


def max_force_std(results: Mapping[str, Any]) -> float:
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


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """``value`` as a float, or a :class:`ConfigError` naming ``name`` unless finite and > 0
    (>= 0 with ``allow_zero``)."""
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


def check_count(name: str, value: int, low: int = 1) -> int:
    """``value`` as an int, or a :class:`ConfigError` unless an integer >= ``low``."""
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class Trigger(abc.ABC):
    """Base class: decides, at every MD step, whether to skip, label or reject the frame.

    Subclasses are dataclasses (``eq=False``: a trigger is an object with state, compared
    by identity); they implement :meth:`decide`, :attr:`threshold` and :meth:`describe`;
    those with mutable state also override :meth:`state_dict` and :meth:`load_state_dict`
    so a run can be resumed exactly.
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
            The committee calculator's results (see :mod:`potlearn_ase.learners.triggers`
            for keys and units).
        """

    def notify_labelled(self, step: int, results: Mapping[str, Any]) -> None:
        """Called by the learner after the frame of ``step`` was labelled (no-op here)."""
        return None

    def priority(self, results: Mapping[str, Any]) -> float:
        """How much a structure is worth labelling, to rank the candidates of a window:
        here its largest calibrated per-atom force sigma (eV/Angstrom)."""
        return max_force_std(results)

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
