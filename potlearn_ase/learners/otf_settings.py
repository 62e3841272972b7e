"""Settings of the on-the-fly learner, and the state it checkpoints.

:class:`OTFSettings` holds what is configured besides the trigger (rejections allowed in a
row, calibration, neural fine-tunes, checkpoints, batch mode); :class:`LearnerState` the
counters and records a run accumulates (steps, reference calls, calibration ratios, the
history of :class:`StepRecord`), written at every checkpoint (the history to
``history.jsonl``, the rest to ``state.json``) and read back on resume. Both are importable
from :mod:`potlearn_ase.learners.otf`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["LearnerState", "OTFSettings", "StepRecord"]


@dataclass(frozen=True)
class OTFSettings:
    """Settings of the learner that are not the trigger's.

    Attributes
    ----------
    max_consecutive_rejects : int
        Stop with an error after this many rejections in a row (the MD keeps leaving the trust
        window even after relabelling).
    min_calibration_labels : int
        Labels with an out-of-sample error needed before ``alpha`` is estimated (1.0 before).
    neural_finetune_epochs : int
        Epochs of the short fine-tune of a neural committee after each label.
    neural_max_frames : int
        At most this many stored labels (the newest first, then a random sample) are used for
        a fine-tune, so its cost stays bounded as labels grow.
    checkpoint_every : int
        Steps between checkpoints of the MD state (there is always one after each label).
    batch_window : int
        Batch mode when > 0: frames the trigger wants labelled are gathered over this many
        steps (the MD goes on with the committee's forces), then at most ``batch_size`` of
        them, chosen by farthest-point sampling of their mean descriptor (diverse, not
        redundant), are labelled in parallel through the reference's executor, and the model
        is updated once.
    batch_size : int
        Labels per batch window.
    seed : int
        Seeds committee draws after each update.
    """

    max_consecutive_rejects: int = 20
    min_calibration_labels: int = 1
    neural_finetune_epochs: int = 30
    neural_max_frames: int = 200
    checkpoint_every: int = 20
    batch_window: int = 0
    batch_size: int = 4
    seed: int = 0


@dataclass
class StepRecord:
    """What the learner saw and decided at one step (an entry of ``learner.history``)."""

    step: int
    max_force_std: float
    energy_std: float
    threshold: float
    decision: str
    temperature: float | None = None
    max_extrapolation_grade: float | None = None


@dataclass
class LearnerState:
    """The learner's counters and records: what a checkpoint saves and a resume restores."""

    step: int = 0  # learner steps evaluated (one per force call, rewound steps included)
    md_step: int = 0  # steps the dynamics has completed and kept
    n_reference_calls: int = 0
    n_reused_labels: int = 0
    n_failures: int = 0
    n_rejects: int = 0
    consecutive_rejects: int = 0
    consecutive_failures: int = 0  # reference calls failed in a row
    ratios: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    label_steps: list[int] = field(default_factory=list)
    reference_seconds: float = 0.0
