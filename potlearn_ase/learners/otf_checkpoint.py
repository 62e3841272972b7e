"""The checkpoints of an on-the-fly learner: write them, and restore a learner from them.

:class:`CheckpointMixin` holds these methods of
:class:`~potlearn_ase.learners.otf.OnTheFlyLearner`. A checkpoint writes the model
(``model.pt``), appends the steps since the previous checkpoint to ``history.jsonl`` and
rewrites the small ``state.json`` atomically. A restore reads them back, cuts the history to
the checkpointed step and rebuilds the counters of reference calls from the label store,
which also holds the labels made after the last checkpoint.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase.learners.checkpoint import (
    LearnerState,
    counters_from_store,
    read_state,
    write_json_atomic,
)

__all__ = ["CheckpointMixin"]


class CheckpointMixin:
    """How an :class:`~potlearn_ase.learners.otf.OnTheFlyLearner` checkpoints and resumes.

    A base of ``OnTheFlyLearner`` only: it uses the learner's ``run_dir``, ``committee``,
    ``state``, ``store``, ``trigger``, ``_rng``, ``_accepted``, ``checkpoint_extra`` and
    ``_history_log``; ``_ratios_in_store`` is its own.
    """

    def checkpoint(
        self, atoms: Atoms | None = None, *, extra: dict[str, Any] | None = None
    ) -> None:
        """Write the learner state (and the model) atomically to ``run_dir``."""
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.committee.save(self.run_dir / "model.pt")
        assert self._history_log is not None
        self._history_log.append(self.state.history[self._history_saved :])
        self._history_saved = len(self.state.history)
        # not asdict(self.state): it would copy the whole history at every checkpoint
        skip = {"history"}  # streamed to history.jsonl
        if getattr(self, "_ratios_in_store", True):
            skip.update(("ratios", "spreads"))  # each label's are in its provenance
        state = {f.name: getattr(self.state, f.name) for f in fields(self.state)
                 if f.name not in skip}
        state["history_file"] = self._history_log.path.name
        state["trigger"] = self.trigger.state_dict()
        state["rng"] = self._rng.bit_generator.state
        state["n_labels"] = len(self.store)
        state["calibration"] = self.committee.calibration
        if atoms is not None:
            acc = self._accepted or {
                "positions": atoms.positions,
                "momenta": atoms.get_momenta(),
                "cell": atoms.cell.array,
            }
            state["atoms"] = {
                "numbers": atoms.numbers.tolist(),
                "pbc": atoms.pbc.tolist(),
                "cell": np.asarray(acc["cell"]).tolist(),
                "positions": np.asarray(acc["positions"]).tolist(),
                "momenta": np.asarray(acc["momenta"]).tolist(),
            }
        if self.checkpoint_extra is not None:
            state.update(self.checkpoint_extra())
        if extra:
            state.update(extra)
        write_json_atomic(self.run_dir / "state.json", state)

    def load_checkpoint(self) -> dict[str, Any]:
        """Restore the learner from ``run_dir``; returns the whole checkpoint record.

        The state comes from ``state.json``, the history from ``history.jsonl`` (cut back to
        the checkpointed step; an old ``state.json`` holding the history is read too) and the
        counters of reference calls, failures and label steps from the label store, which
        holds labels made after the last checkpoint too.

        Raises
        ------
        FileNotFoundError
            No ``state.json`` in ``run_dir``.
        CheckpointError
            ``state.json`` or ``history.jsonl`` is damaged (naming the file).
        """
        if self.run_dir is None:
            raise ValueError("the learner has no run_dir")
        state = read_state(self.run_dir / "state.json")
        known = set(LearnerState.__dataclass_fields__)
        self.state = LearnerState(**{k: v for k, v in state.items() if k in known})
        self.restore_history(int(state["step"]), state.get("history"))
        self.sync_counters()
        self.trigger.load_state_dict(state.get("trigger", {}))
        if "rng" in state:
            self._rng.bit_generator.state = state["rng"]
        return state

    def restore_history(self, step: int, old: list[dict[str, Any]] | None = None) -> None:
        """The history of learner steps before ``step`` (from ``history.jsonl``, or ``old``
        from a ``state.json`` of an earlier version, then moved to ``history.jsonl``)."""
        assert self._history_log is not None
        if old is not None:
            history = [h for h in old if int(h["step"]) < step]
            self._history_log.rewrite(history)
        else:
            history = self._history_log.read(before_step=step)
        self.state.history = history
        self._history_saved = len(history)

    def sync_counters(self) -> None:
        """Counters of reference calls, failures, label steps and calibration ratios from the
        label store (the ratios stay those of ``state.json`` for labels of earlier versions,
        which did not store them)."""
        counts = counters_from_store(self.store)
        # labels of earlier versions have no ratios: those stay in state.json
        self._ratios_in_store = counts["ratios_complete"]
        if counts["ratios_complete"]:
            self.state.ratios = counts["ratios"]
            self.state.spreads = counts["spreads"]
        self.state.n_reference_calls = counts["n_reference_calls"]
        self.state.n_failures = counts["n_failures"]
        self.state.label_steps = counts["label_steps"]
        self.state.reference_seconds = counts["reference_seconds"]
        self.state.consecutive_failures = 0
