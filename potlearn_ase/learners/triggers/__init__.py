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

Basic triggers compare one uncertainty with a threshold in physical units
(:mod:`.thresholds`: :class:`FixedThreshold`, :class:`RelativeThreshold`,
:class:`EnergyThreshold`, :class:`ExtrapolationThreshold`) or follow the recent uncertainty
(:mod:`.adaptive`: :class:`AdaptiveThreshold`), or label only where the predicted force error
passes the accuracy the user asks for (:mod:`.target`: :class:`TargetError`, kind
``"target"``). Two wrappers compose with any of them
(:mod:`.wrappers`): :class:`TrustWindow` (reject above a ceiling) and :class:`MinGap` (at most
one label every ``min_steps`` steps). Every trigger is a dataclass of its parameters;
:func:`trigger_from_config` builds the composition from a flat mapping with the project's one
configuration parser (:func:`potlearn_ase.config.from_mapping`).

A non-finite uncertainty (NaN or inf: the committee diverged) is never trusted: the basic
triggers answer ``LABEL`` and :class:`TrustWindow` answers ``REJECT``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from potlearn_ase.config import from_mapping
from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.triggers.adaptive import AdaptiveThreshold
from potlearn_ase.learners.triggers.base import Decision, Trigger, max_force_std
from potlearn_ase.learners.triggers.target import (
    TargetError,
    labelling_threshold,
    predicted_force_error,
    reducible_force_error,
)
from potlearn_ase.learners.triggers.thresholds import (
    EnergyThreshold,
    ExtrapolationThreshold,
    FixedThreshold,
    RelativeThreshold,
    max_extrapolation_grade,
)
from potlearn_ase.learners.triggers.wrappers import MinGap, TrustWindow

__all__ = [
    "KINDS",
    "AdaptiveThreshold",
    "Decision",
    "EnergyThreshold",
    "ExtrapolationThreshold",
    "FixedThreshold",
    "MinGap",
    "RelativeThreshold",
    "TargetError",
    "Trigger",
    "TrustWindow",
    "max_extrapolation_grade",
    "max_force_std",
    "labelling_threshold",
    "predicted_force_error",
    "reducible_force_error",
    "trigger_from_config",
]

#: ``kind`` of a configuration -> the trigger class whose fields are its keys
KINDS: dict[str, type[Trigger]] = {
    "fixed": FixedThreshold,
    "relative": RelativeThreshold,
    "energy": EnergyThreshold,
    "adaptive": AdaptiveThreshold,
    "extrapolation": ExtrapolationThreshold,
    "target": TargetError,
}
#: keys a configuration must state although the class has a default (a grade threshold is a
#: choice the user makes, not one the learner guesses)
_REQUIRED_IN_CONFIG = {"extrapolation": ("max_grade",)}


@dataclass(frozen=True)
class _Wrapping:
    """The wrapper keys any trigger configuration may carry."""

    min_gap: int | None = None
    reject_above: float | None = None


def trigger_from_config(cfg: Mapping[str, Any] | Trigger) -> Trigger:
    """Build a trigger, with its optional wrappers, from a flat mapping.

    Parameters
    ----------
    cfg : mapping
        ``kind`` is one of ``"fixed"`` (key ``max_force_std``, eV/Angstrom), ``"relative"``
        (``ratio``, ``floor`` in eV/Angstrom), ``"energy"`` (``energy_std_per_atom``,
        eV/atom) or ``"adaptive"`` (``factor``, ``window``, ``initial``, ``min_threshold``,
        ``max_threshold`` in eV/Angstrom, ``warmup``), ``"extrapolation"`` (``max_grade``,
        dimensionless, and optionally ``max_force_std``) or ``"target"`` (``force_error``,
        eV/Angstrom, and ``max_grade``); the keys are the fields of the
        trigger's dataclass. Optional for every kind: ``min_gap`` (int, steps; wraps in
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
        raise ConfigError(f"trigger.kind is missing; one of {', '.join(KINDS)}")
    kind = cfg["kind"]
    if kind not in KINDS:
        raise ConfigError(f"trigger.kind: unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")
    cls = KINDS[kind]
    for key in _REQUIRED_IN_CONFIG.get(kind, ()):
        if key not in cfg:
            raise ConfigError(f"trigger.{key} is required for kind {kind!r}")
    wrapper_keys = {"min_gap", "reject_above"}
    own = {k: v for k, v in cfg.items() if k != "kind" and k not in wrapper_keys}
    wrap = from_mapping(_Wrapping, {k: v for k, v in cfg.items() if k in wrapper_keys},
                        where="trigger")
    if wrap.min_gap is not None and wrap.min_gap < 1:
        raise ConfigError(f"trigger.min_gap must be >= 1 step, got {wrap.min_gap}")
    try:
        trigger: Trigger = from_mapping(cls, own, where="trigger", kind=kind)
        if wrap.min_gap is not None:
            trigger = MinGap(trigger, wrap.min_gap)
        if wrap.reject_above is not None:
            trigger = TrustWindow(trigger, wrap.reject_above)
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith("trigger") else f"trigger: {msg}") from None
    return trigger
