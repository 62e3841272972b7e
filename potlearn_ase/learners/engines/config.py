"""What every engine's ``--learn`` configuration holds: reference, trigger, run directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from potlearn_ase.learners.otf import OTFSettings

__all__ = ["EngineLearnConfig"]


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
    settings : OTFSettings
        The learner's other settings (``checkpoint_every`` counts force evaluations).
    """

    reference: str | dict[str, Any] = "emt"
    trigger: dict[str, Any] = field(
        default_factory=lambda: {"kind": "adaptive", "factor": 1.2, "min_gap": 5}
    )
    run_dir: str = "otf-run"
    settings: OTFSettings = field(default_factory=OTFSettings)
