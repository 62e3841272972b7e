"""Configuration of an on-the-fly learning run (the ``potlearn otf`` configuration file).

:class:`OTFRunConfig` holds the whole configuration: the starting structure
(:class:`StructureConfig`), the reference, the committee (:class:`ModelConfig`), the dynamics
(:class:`MDConfig`), the trigger, the starting data (:class:`InitialConfig`) and the final
validation (:class:`ValidationConfig`). All are importable from :mod:`potlearn_ase.learners.run`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from potlearn_ase.config import from_mapping, load_config
from potlearn_ase.descriptors.ace import ACEConfig
from potlearn_ase.errors import ConfigError
from potlearn_ase.models.linear import LinearFitConfig
from potlearn_ase.training.trainer import NeuralTrainConfig

__all__ = [
    "InitialConfig",
    "MDConfig",
    "ModelConfig",
    "OTFRunConfig",
    "StructureConfig",
    "ValidationConfig",
]


@dataclass(frozen=True)
class StructureConfig:
    """The starting structure: a file (``file``, ``index``) or ``ase.build.bulk`` arguments."""

    file: str | None = None
    index: int = 0
    bulk: str | None = None
    crystalstructure: str | None = None
    a: float | None = None
    cubic: bool = False
    repeat: tuple[int, int, int] = (1, 1, 1)

    def __post_init__(self) -> None:
        if any(int(n) < 1 for n in self.repeat):
            raise ValueError(f"repeat: each factor must be at least 1, got {self.repeat}")
        if self.a is not None and not self.a > 0:
            raise ValueError(f"a: must be positive (Angstrom), got {self.a}")


#: flat ``model`` keys of release 0.1 -> where they live now (``section.key``)
_LEGACY_MODEL_KEYS = {
    "cutoff": ("descriptor.cutoff",),
    "n_radial": ("descriptor.n_radial",),
    "l_max": ("descriptor.l_max",),
    "body_order": ("descriptor.body_order",),
    "energy_weight": ("fit.energy_weight",),
    "force_weight": ("fit.force_weight",),
    "stress_weight": ("fit.stress_weight",),
    "n_members": ("fit.n_members", "neural.n_members"),
    "hidden": ("neural.hidden",),
    "epochs": ("neural.epochs",),
    "device": ("neural.device",),
}


@dataclass(frozen=True)
class ModelConfig:
    """The committee: its kind, its descriptor and how each kind is fitted.

    Attributes
    ----------
    kind : {"linear", "neural"}
        A linear committee drawn from its Bayesian posterior, or a neural one.
    descriptor : ACEConfig
        The descriptor's hyperparameters (``cutoff`` in Angstrom, ``n_radial``, ``l_max``,
        ``body_order``).
    fit : LinearFitConfig
        How a linear committee is fitted (weights, ``lam``, ``n_members``).
    neural : NeuralTrainConfig
        How a neural committee is trained (``n_members``, ``hidden``, ``epochs``,
        ``device``, ...); 200 epochs by default here.
    """

    kind: Literal["linear", "neural"] = "linear"
    descriptor: ACEConfig = field(default_factory=ACEConfig)
    fit: LinearFitConfig = field(default_factory=LinearFitConfig)
    neural: NeuralTrainConfig = field(default_factory=lambda: NeuralTrainConfig(epochs=200))

    @property
    def n_members(self) -> int:
        """The committee size of this kind."""
        return self.fit.n_members if self.kind == "linear" else self.neural.n_members

    @classmethod
    def upgrade_mapping(cls, data: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Nest the flat keys of release 0.1 (``model: {cutoff: 5, n_members: 8}``), with a
        :class:`DeprecationWarning` naming where each key goes now."""
        flat = [k for k in data if k in _LEGACY_MODEL_KEYS]
        if not flat:
            return dict(data)
        out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v)
                               for k, v in data.items() if k not in _LEGACY_MODEL_KEYS}
        moved = []
        for key in flat:
            for target in _LEGACY_MODEL_KEYS[key]:
                section, name = target.split(".")
                out.setdefault(section, {})
                if not isinstance(out[section], dict):
                    raise ConfigError(f"{where}.{section}: expected a mapping")
                if name in out[section]:
                    raise ConfigError(
                        f"{where}.{key} and {where}.{target} both given: keep the nested one"
                    )
                out[section][name] = data[key]
            moved.append(f"{key} -> {'/'.join(_LEGACY_MODEL_KEYS[key])}")
        warnings.warn(
            f"flat keys under '{where}' are deprecated; nest them ({', '.join(moved)})",
            DeprecationWarning,
            stacklevel=3,
        )
        return out


@dataclass(frozen=True)
class MDConfig:
    """Dynamics: ensemble, time step (fs), steps and temperature (K, or [start, end] ramp)."""

    ensemble: Literal["langevin", "nve", "npt-berendsen"] = "langevin"
    timestep_fs: float = 2.0
    steps: int = 1000
    temperature_K: float | tuple[float, float] = 300.0
    friction: float = 0.02
    pressure_bar: float = 1.0
    seed: int = 0
    trajectory_interval: int = 10

    def __post_init__(self) -> None:
        _positive(timestep_fs=self.timestep_fs)
        _at_least(0, steps=self.steps)
        _at_least(1, trajectory_interval=self.trajectory_interval)
        _at_least(0.0, friction=self.friction)
        temps = self.temperature_K if isinstance(self.temperature_K, tuple) else (
            self.temperature_K,)
        if any(t < 0 for t in temps):
            raise ValueError(f"temperature_K: must not be negative, got {self.temperature_K}")


@dataclass(frozen=True)
class InitialConfig:
    """Starting data: the first structure, rattled by ``rattle`` A, labelled ``n_labels`` times.

    The default rattle, 0.1 A (the standard deviation of each Cartesian displacement), is
    about the thermal displacement of atoms in a solid at room temperature and above (0.08 A
    in Cu at 300 K), so the first label spans the start of the MD: in a 108-atom Cu run,
    heating 300 -> 1200 K, one label rattled by 0.1 A left 1 further call where 0.05 A left 3
    (``benchmarks/otf_peers.py``)."""

    n_labels: int = 1
    rattle: float = 0.1

    def __post_init__(self) -> None:
        _at_least(1, n_labels=self.n_labels)
        _at_least(0.0, rattle=self.rattle)


@dataclass(frozen=True)
class ValidationConfig:
    """Independent reference MD for the final evaluation (calls not counted as learning)."""

    temperatures_K: tuple[float, ...] = (300.0, 700.0, 1200.0)
    frames: int = 10
    every: int = 20
    seed: int = 1000

    def __post_init__(self) -> None:
        _at_least(0, frames=self.frames)
        _at_least(1, every=self.every)


@dataclass(frozen=True)
class OTFRunConfig:
    """The whole configuration of ``potlearn otf`` (see docs/otf.md for every key).

    ``lookahead_fs`` is the look-ahead window of the learner in femtoseconds (0 labels the
    step the trigger fires on): 60 fs is about the period of the fastest vibrations of most
    solids (Si's optical phonon, 15.5 THz, 65 fs), so the window sees an oscillation through
    and labels its most uncertain structure.
    """

    structure: StructureConfig = field(default_factory=StructureConfig)
    reference: str | dict[str, Any] = "emt"
    model: ModelConfig = field(default_factory=ModelConfig)
    md: MDConfig = field(default_factory=MDConfig)
    trigger: dict[str, Any] = field(
        default_factory=lambda: {"kind": "target", "force_error": 0.05}
    )
    initial: InitialConfig = field(default_factory=InitialConfig)
    validation: ValidationConfig | None = field(default_factory=ValidationConfig)
    run_dir: str = "otf-run"
    progress: bool = True
    lookahead_fs: float = 60.0

    def __post_init__(self) -> None:
        _at_least(0.0, lookahead_fs=self.lookahead_fs)

    @classmethod
    def from_file(cls, path: str | Path) -> OTFRunConfig:
        return load_config(cls, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OTFRunConfig:
        return from_mapping(cls, data)


def _positive(**values: float) -> None:
    for key, v in values.items():
        if not v > 0:
            raise ValueError(f"{key}: must be positive, got {v}")


def _at_least(low: float, **values: float) -> None:
    for key, v in values.items():
        if v < low:
            raise ValueError(f"{key}: must be at least {low}, got {v}")
