"""Settings of a hyperparameter search: the search space and the configuration file.

:class:`SearchSpace` holds what each hyperparameter may take (a list of choices, a
:class:`FloatRange` or an :class:`IntRange`); :class:`HyperoptConfig` the whole configuration
(data files, searcher, number of trials, cost weight, fit settings). Both are importable from
:mod:`potlearn_ase.analysis.hyperopt`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from potlearn_ase.errors import ConfigError

__all__ = ["FloatRange", "HyperoptConfig", "IntRange", "SearchSpace"]

Method = Literal["grid", "random", "lhs", "tpe"]


@dataclass(frozen=True)
class FloatRange:
    """A continuous interval ``[low, high]``, sampled uniformly or (``log``) log-uniformly."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.high >= self.low or (self.log and self.low <= 0):
            raise ValueError(f"bad range [{self.low}, {self.high}] (log={self.log})")


@dataclass(frozen=True)
class IntRange:
    """The integers ``low, low + 1, ..., high``."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if self.high < self.low:
            raise ValueError(f"bad integer range [{self.low}, {self.high}]")


@dataclass(frozen=True)
class SearchSpace:
    """What each hyperparameter may take: a list of choices or a range.

    In YAML: ``cutoff: {low: 4.0, high: 5.5}``, ``l_max: [1, 2]``,
    ``energy_weight: {low: 1, high: 100, log: true}``, ``lam: [evidence, 1.0e-6]``.
    """

    cutoff: tuple[float, ...] | FloatRange = FloatRange(4.0, 5.5)
    n_radial: tuple[int, ...] | IntRange = IntRange(4, 8)
    l_max: tuple[int, ...] | IntRange = IntRange(1, 3)
    body_order: tuple[int, ...] = (3,)
    lam: tuple[float | str, ...] | FloatRange = ("evidence",)
    energy_weight: tuple[float, ...] | FloatRange = FloatRange(1.0, 100.0, log=True)
    force_weight: tuple[float, ...] | FloatRange = (1.0,)

    def __post_init__(self) -> None:
        if isinstance(self.lam, tuple):
            for v in self.lam:
                if isinstance(v, str) and v != "evidence":
                    try:
                        float(v)
                    except ValueError:
                        raise ValueError(
                            f"lam: {v!r} is neither 'evidence' nor a number"
                        ) from None
        for name in ("energy_weight", "force_weight", "cutoff"):
            spec = getattr(self, name)
            low = spec.low if isinstance(spec, FloatRange) else min(spec, default=0.0)
            if low < 0 or (name == "cutoff" and low <= 0):
                raise ValueError(f"{name}: values must be positive, got {spec!r}")

    def dimensions(self) -> list[tuple[str, Any]]:
        """``(name, spec)`` of every hyperparameter, in a fixed order."""
        dims = [(k, getattr(self, k)) for k in self.__dataclass_fields__]
        for name, spec in dims:
            if isinstance(spec, tuple) and not spec:
                raise ConfigError(f"space.{name}: empty list of choices")
        return dims


@dataclass(frozen=True)
class HyperoptConfig:
    """Settings of a hyperparameter search (the ``potlearn hyperopt`` configuration file).

    Attributes
    ----------
    train, val : str, optional
        Labelled structure files (extxyz ...), read by :func:`run_hyperopt`.
    output_dir : str, optional
        Where :func:`run_hyperopt` writes ``trials.json`` and ``pareto.png``.
    space : SearchSpace
    method : {"grid", "random", "lhs", "tpe"}
    n_trials : int
        Trials to run (a larger grid is subsampled evenly to this size).
    cost_weight : float
        Loss per microsecond per atom.
    energy_error_weight : float
        Weight of the energy RMSE (eV/atom) next to the force RMSE (eV/A) in the error.
    grid_points : int
        Values per continuous range in a grid search.
    n_members : int
        Committee size of every fit (it enters the cost).
    stress_weight : float
        Weight of stress rows in every fit (fixed).
    timing_repeats : int
        Timing runs over the validation structures; the fastest counts.
    seed : int
    time_budget_s : float, optional
        Wall time (s) after which no new trial starts (the running one finishes); counted
        from the start of this search, or of its resumption.
    """

    train: str | None = None
    val: str | None = None
    output_dir: str | None = None
    space: SearchSpace = field(default_factory=SearchSpace)
    method: Method = "tpe"
    n_trials: int = 20
    cost_weight: float = 0.0
    energy_error_weight: float = 10.0
    grid_points: int = 3
    n_members: int = 8
    stress_weight: float = 1.0
    timing_repeats: int = 3
    seed: int = 0
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        if self.method not in ("grid", "random", "lhs", "tpe"):
            raise ValueError(f"method must be grid, random, lhs or tpe, got {self.method!r}")
        if self.n_trials < 1:
            raise ValueError(f"n_trials must be at least 1, got {self.n_trials}")
        for name in ("grid_points", "n_members", "timing_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time_budget_s must be positive, got {self.time_budget_s}")
        for name in ("cost_weight", "energy_error_weight", "stress_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
