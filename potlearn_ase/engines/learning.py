"""What every engine's ``--learn`` configuration holds: reference, trigger, run directory."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.otf import OTFConfig

__all__ = ["EngineLearnConfig", "prepare_run_dir"]


@dataclass(frozen=True)
class EngineLearnConfig:
    """The keys shared by ``potlearn ipi --learn`` and ``potlearn lammps --learn``.

    Attributes
    ----------
    reference : str or mapping
        The reference calculator (:meth:`Reference.from_spec`).
    trigger : mapping
        The trigger (:func:`trigger_from_config`); thresholds in eV/Angstrom.
    run_dir : str
        Where labels, checkpoints, the updated model and the summary go.
    settings : OTFConfig
        The learner's other settings (``checkpoint_every`` counts force evaluations).
    """

    reference: str | dict[str, Any] = "emt"
    trigger: dict[str, Any] = field(
        default_factory=lambda: {"kind": "target", "force_error": 0.05}
    )
    run_dir: str = "otf-run"
    settings: OTFConfig = field(default_factory=OTFConfig)


def prepare_run_dir(run_dir: str | os.PathLike, resume: bool) -> Path:
    """``run_dir``, created; a run already there needs ``resume`` (and resuming needs one).

    Raises
    ------
    FileNotFoundError
        ``resume`` without a ``state.json`` in ``run_dir``.
    ConfigError
        A new run in a directory that holds one (its labels and counters would be mixed).
    """
    path = Path(run_dir)
    state_file = path / "state.json"
    if resume:
        if not state_file.exists():
            raise FileNotFoundError(f"no run to resume in {path} (state.json missing)")
    elif state_file.exists():
        raise ConfigError(f"run_dir {path} holds a run already; use --resume or another run_dir")
    path.mkdir(parents=True, exist_ok=True)
    return path
