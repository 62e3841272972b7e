"""Configuration of an on-the-fly learning run (the ``potlearn otf`` configuration file).

:class:`OTFRunConfig` holds the whole configuration: the starting structure
(:class:`StructureConfig`), the reference, the committee (:class:`ModelConfig`), the dynamics
(:class:`MDConfig`), the trigger, the starting data (:class:`InitialConfig`) and the final
validation (:class:`ValidationConfig`). All are importable from :mod:`potlearn_ase.learners.run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from potlearn_ase.config import from_mapping, load_config

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


@dataclass(frozen=True)
class ModelConfig:
    """Descriptor and committee settings."""

    kind: Literal["linear", "neural"] = "linear"
    cutoff: float = 5.0
    n_radial: int = 8
    l_max: int = 2
    body_order: int = 3
    n_members: int = 8
    energy_weight: float = 30.0
    force_weight: float = 1.0
    stress_weight: float = 1.0
    hidden: tuple[int, ...] = (32, 32)
    epochs: int = 200
    device: str = "auto"

    def __post_init__(self) -> None:
        _positive(cutoff=self.cutoff)
        _at_least(1, n_radial=self.n_radial, n_members=self.n_members,
                  epochs=self.epochs)
        _at_least(0, l_max=self.l_max)
        _at_least(0.0, energy_weight=self.energy_weight,
                  force_weight=self.force_weight, stress_weight=self.stress_weight)


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
    """Starting data: the first structure, rattled by ``rattle`` A, labelled ``n_labels`` times."""

    n_labels: int = 1
    rattle: float = 0.05

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
    """The whole configuration of ``potlearn otf`` (see docs/otf.md for every key)."""

    structure: StructureConfig = field(default_factory=StructureConfig)
    reference: str | dict[str, Any] = "emt"
    model: ModelConfig = field(default_factory=ModelConfig)
    md: MDConfig = field(default_factory=MDConfig)
    trigger: dict[str, Any] = field(
        default_factory=lambda: {"kind": "adaptive", "factor": 1.2, "min_gap": 5}
    )
    initial: InitialConfig = field(default_factory=InitialConfig)
    validation: ValidationConfig | None = field(default_factory=ValidationConfig)
    run_dir: str = "otf-run"
    progress: bool = True

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
