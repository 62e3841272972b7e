"""Triggers: turn the committee's uncertainty at an MD step into skip, label or reject.

At every step the on-the-fly learner calls ``trigger.decide(step, atoms, results)``, where
``results`` is the committee calculator's results dict (ASE names):

* ``forces`` (N x 3, eV/Angstrom): committee mean;
* ``forces_std`` (N x 3, eV/Angstrom): calibrated standard deviation of each component;
* ``max_force_std`` (eV/Angstrom): max over atoms of the Euclidean norm of the atom's
  ``forces_std`` row;
* ``energy`` and ``energy_std`` (eV, per structure).

The answer is a :class:`Decision`: ``SKIP`` (trust the committee), ``LABEL`` (call the
reference on this frame and learn from it) or ``REJECT`` (the frame is too uncertain to
trust at all: the MD rewinds to the last accepted state).

Basic triggers compare one uncertainty with a threshold in physical units:
:class:`FixedThreshold` (eV/Angstrom), :class:`RelativeThreshold` (dimensionless ratio of
force uncertainty to force), :class:`EnergyThreshold` (eV/atom) and
:class:`AdaptiveThreshold` (eV/Angstrom, following the recent uncertainty), and
:class:`ExtrapolationThreshold` (the extrapolation grade of models with an active set). Two wrappers
compose with any of them: :class:`TrustWindow` (reject above a ceiling) and :class:`MinGap`
(at most one label every ``min_steps`` steps). :func:`trigger_from_config` builds the
composition from a flat mapping. The interface (:class:`Trigger`, :class:`Decision`) and the
wrappers live in :mod:`potlearn_ase.learners.trigger_base` and are importable from here.

A non-finite uncertainty (NaN or inf: the committee diverged) is never trusted: the basic
triggers answer ``LABEL`` and :class:`TrustWindow` answers ``REJECT``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase.errors import ConfigError, PotlearnError
from potlearn_ase.learners.extrapolation_trigger import ExtrapolationThreshold
from potlearn_ase.learners.trigger_base import (
    Decision,
    MinGap,
    Trigger,
    TrustWindow,
    _max_force_std,
    _positive,
)

__all__ = [
    "AdaptiveThreshold",
    "Decision",
    "EnergyThreshold",
    "ExtrapolationThreshold",
    "FixedThreshold",
    "MinGap",
    "RelativeThreshold",
    "Trigger",
    "TrustWindow",
    "trigger_from_config",
]


class FixedThreshold(Trigger):
    """Label when the largest per-atom force uncertainty exceeds a fixed value.

    ``LABEL`` when ``results["max_force_std"] > max_force_std``, else ``SKIP``.

    Parameters
    ----------
    max_force_std : float
        Threshold on the max over atoms of the norm of the force standard deviation,
        in eV/Angstrom.
    """

    kind = "fixed"

    def __init__(self, max_force_std: float):
        self._threshold = _positive("max_force_std", max_force_std)

    def decide(self, step: int, atoms: Atoms | None, results: Mapping[str, Any]) -> Decision:
        s = _max_force_std(results)
        return Decision.LABEL if not math.isfinite(s) or s > self._threshold else Decision.SKIP

    @property
    def threshold(self) -> float:
        """The threshold in eV/Angstrom."""
        return self._threshold

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "max_force_std": self._threshold, "unit": "eV/A"}


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

    kind = "relative"

    def __init__(self, ratio: float, floor: float = 0.0):
        self.ratio = _positive("ratio", ratio)
        self.floor = _positive("floor", floor, allow_zero=True)

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
        r = self.relative_uncertainty(results)
        return Decision.LABEL if not math.isfinite(r) or r > self.ratio else Decision.SKIP

    @property
    def threshold(self) -> float:
        """The ratio (dimensionless)."""
        return self.ratio

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "ratio": self.ratio, "floor": self.floor, "unit": "1"}


class EnergyThreshold(Trigger):
    """Label when the energy uncertainty per atom exceeds a fixed value.

    ``LABEL`` when ``results["energy_std"] / len(atoms) > energy_std_per_atom``.

    Parameters
    ----------
    energy_std_per_atom : float
        Threshold in eV/atom.
    """

    kind = "energy"

    def __init__(self, energy_std_per_atom: float):
        self._threshold = _positive("energy_std_per_atom", energy_std_per_atom)

    def decide(self, step: int, atoms: Atoms | None, results: Mapping[str, Any]) -> Decision:
        if results.get("energy_std") is None:
            raise PotlearnError("EnergyThreshold needs 'energy_std' in the calculator results")
        if atoms is not None:
            n = len(atoms)
        elif results.get("forces") is not None:
            n = len(np.asarray(results["forces"]).reshape(-1, 3))
        else:
            raise PotlearnError("EnergyThreshold needs the atoms (or 'forces') to count atoms")
        e = float(results["energy_std"]) / max(n, 1)
        return Decision.LABEL if not math.isfinite(e) or e > self._threshold else Decision.SKIP

    @property
    def threshold(self) -> float:
        """The threshold in eV/atom."""
        return self._threshold

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "energy_std_per_atom": self._threshold, "unit": "eV/atom"}


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

    kind = "adaptive"

    def __init__(
        self,
        factor: float = 1.2,
        window: int = 50,
        initial: float = 0.1,
        min_threshold: float = 0.05,
        max_threshold: float = 1.0,
        warmup: int = 5,
    ):
        self.factor = _positive("factor", factor)
        if self.factor < 1.0:
            raise ConfigError(
                f"factor must be >= 1 (the threshold sits above the mean), got {factor!r}"
            )
        if isinstance(window, bool) or int(window) != window or window < 1:
            raise ConfigError(f"window must be an integer >= 1, got {window!r}")
        if isinstance(warmup, bool) or int(warmup) != warmup or not 1 <= warmup <= window:
            raise ConfigError(f"warmup must be an integer in [1, window={window}], got {warmup!r}")
        self.window = int(window)
        self.warmup = int(warmup)
        self.min_threshold = _positive("min_threshold", min_threshold, allow_zero=True)
        self.max_threshold = _positive("max_threshold", max_threshold)
        if self.min_threshold > self.max_threshold:
            raise ConfigError(
                f"min_threshold ({min_threshold}) is larger than max_threshold ({max_threshold})"
            )
        self.initial = _positive("initial", initial)
        self._values: deque[float] = deque(maxlen=self.window)  # raw (uncalibrated) spreads
        self._current = self._next_threshold(1.0)

    def _next_threshold(self, calibration: float) -> float:
        if len(self._values) < self.warmup:
            value = self.initial
        else:
            value = self.factor * calibration * float(np.mean(self._values))
        return float(min(max(value, self.min_threshold), self.max_threshold))

    def decide(self, step: int, atoms: Atoms | None, results: Mapping[str, Any]) -> Decision:
        s = _max_force_std(results)
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


# kind -> (class, {key: type}, required keys)
_KINDS: dict[str, tuple[type[Trigger], dict[str, type], tuple[str, ...]]] = {
    "fixed": (FixedThreshold, {"max_force_std": float}, ("max_force_std",)),
    "relative": (RelativeThreshold, {"ratio": float, "floor": float}, ("ratio",)),
    "energy": (EnergyThreshold, {"energy_std_per_atom": float}, ("energy_std_per_atom",)),
    "adaptive": (
        AdaptiveThreshold,
        {
            "factor": float,
            "window": int,
            "initial": float,
            "min_threshold": float,
            "max_threshold": float,
            "warmup": int,
        },
        (),
    ),
    "extrapolation": (
        ExtrapolationThreshold,
        {"max_grade": float, "max_force_std": float},
        ("max_grade",),
    ),
}
_WRAPPERS: dict[str, type] = {"min_gap": int, "reject_above": float}


def _typed(key: str, value: Any, tp: type) -> Any:
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"trigger.{key}: expected int, got {type(value).__name__} {value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"trigger.{key}: expected a number, got {type(value).__name__} {value!r}")
    return float(value)


def trigger_from_config(cfg: Mapping[str, Any] | Trigger) -> Trigger:
    """Build a trigger, with its optional wrappers, from a flat mapping.

    Parameters
    ----------
    cfg : mapping
        ``kind`` is one of ``"fixed"`` (key ``max_force_std``, eV/Angstrom), ``"relative"``
        (``ratio``, ``floor`` in eV/Angstrom), ``"energy"`` (``energy_std_per_atom``,
        eV/atom) or ``"adaptive"`` (``factor``, ``window``, ``initial``, ``min_threshold``,
        ``max_threshold`` in eV/Angstrom, ``warmup``) or ``"extrapolation"`` (``max_grade``,
        dimensionless, and optionally ``max_force_std``); the keys are the constructor's
        arguments. Optional for every kind: ``min_gap`` (int, steps; wraps in
        :class:`MinGap`) and ``reject_above`` (eV/Angstrom; wraps in :class:`TrustWindow`,
        outermost, so a rejection never waits for the gap). A :class:`Trigger` is returned
        as is.

    Examples
    --------
    ``{"kind": "adaptive", "factor": 1.5, "min_gap": 5, "reject_above": 2.0}`` gives
    ``TrustWindow(MinGap(AdaptiveThreshold(factor=1.5), 5), reject_above=2.0)``.

    Raises
    ------
    ConfigError
        For a missing or unknown ``kind``, an unknown key, a value of the wrong type or out of
        range; the message names the key.
    """
    if isinstance(cfg, Trigger):
        return cfg
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"trigger: expected a mapping, got {type(cfg).__name__} {cfg!r}")
    if "kind" not in cfg:
        raise ConfigError(f"trigger.kind is missing; one of {', '.join(_KINDS)}")
    kind = cfg["kind"]
    if kind not in _KINDS:
        raise ConfigError(f"trigger.kind: unknown kind {kind!r}; known kinds: {', '.join(_KINDS)}")
    cls, keys, required = _KINDS[kind]
    known = {"kind", *keys, *_WRAPPERS}
    for key in cfg:
        if key not in known:
            raise ConfigError(
                f"unknown key trigger.{key} for kind {kind!r}; "
                f"known keys: {', '.join(sorted(known))}"
            )
    for key in required:
        if key not in cfg:
            raise ConfigError(f"trigger.{key} is required for kind {kind!r}")
    kwargs = {k: _typed(k, v, keys[k]) for k, v in cfg.items() if k in keys}
    wrap = {k: _typed(k, v, _WRAPPERS[k]) for k, v in cfg.items() if k in _WRAPPERS}
    if "min_gap" in wrap and wrap["min_gap"] < 1:
        raise ConfigError(f"trigger.min_gap must be >= 1 step, got {wrap['min_gap']}")
    try:
        trigger: Trigger = cls(**kwargs)
        if "min_gap" in wrap:
            trigger = MinGap(trigger, wrap["min_gap"])
        if "reject_above" in wrap:
            trigger = TrustWindow(trigger, wrap["reject_above"])
    except ConfigError as exc:
        raise ConfigError(f"trigger: {exc}") from None
    return trigger
