"""The windows of an on-the-fly learner: label the most informative structure of a few steps.

Two windows choose what is labelled. The **batch window** (``OTFConfig.batch_window``)
gathers the frames the trigger wants over that many steps and labels a diverse subset of
them together (:meth:`WindowMixin.flush` labels what it holds when a run ends). The
**look-ahead window** is the default:

When the trigger first asks for a label, the learner does not call the reference on that
step. The MD goes on with the committee for up to ``lookahead`` steps (a few femtoseconds;
the committee is cheap), each step's structure a candidate with its *priority* (the trigger's
:meth:`~potlearn_ase.learners.triggers.Trigger.priority`: the largest calibrated predicted
error relative to the target, or the extrapolation grade relative to its limit). Then, of the
candidates the trigger asks a label for, the one with the highest priority is labelled, the
model learns from it, and the MD rewinds to that structure's state and continues from it
with the reference's forces: the run goes on from the structure that was labelled, and no
committee step past it is kept.
A step the trigger rejects (outside the trust window), or one whose priority reaches
``lookahead_stop`` (the committee is far out of its depth: the MD is not left to wander on
it), closes the window at once.

The window needs to rewind the dynamics, so it works with ASE dynamics attached through
:meth:`~potlearn_ase.learners.otf_dynamics.DynamicsMixin.attach`; engines that cannot rewind
(LAMMPS, i-PI) label the step that fired. While a window is open no checkpoint is written, so
a killed run resumes from before it and replays it exactly; the trajectory frames of the
window are held back until it closes, and those past the rewind are dropped.

:class:`WindowMixin` holds these methods of :class:`~potlearn_ase.learners.otf.OnTheFlyLearner`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase.data.validate import get_labels
from potlearn_ase.learners.otf_update import pick_diverse
from potlearn_ase.learners.triggers import Decision

__all__ = ["Candidate", "WindowMixin", "reference_results"]


@dataclass
class Candidate:
    """A structure of an open window: what the committee said and its labelling priority."""

    atoms: Atoms
    results: dict[str, Any]
    pred: dict[str, np.ndarray]
    md_step: int
    priority: float
    wanted: bool = True  # the trigger asked for a label of it


def reference_results(results: dict[str, Any], labelled: Atoms) -> dict[str, Any]:
    """``results`` with energy, forces (and stress) replaced by the reference's labels."""
    ref = get_labels(labelled)
    out = dict(results)
    out["energy"] = out["free_energy"] = float(ref["energy"])
    out["forces"] = np.asarray(ref["forces"])
    if "stress" in ref:
        out["stress"] = np.asarray(ref["stress"])
    out["labelled"] = True
    return out


class WindowMixin:
    """How an :class:`~potlearn_ase.learners.otf.OnTheFlyLearner` picks what to label.

    A base of ``OnTheFlyLearner`` only: it uses the learner's ``settings``, ``model``,
    ``_candidates``, ``_window_start``, ``trigger``, ``state``, ``label_batch``,
    ``_accepted``, ``_md_step_now`` and ``_write_held_frames`` (of
    :class:`~potlearn_ase.learners.otf_dynamics.DynamicsMixin`); the window's own state
    (``_window``, ``_window_states``, ``_rewind_to``, ``_fresh``) is set up by
    :meth:`_init_window`.
    """

    def _init_window(self) -> None:
        self._window: list[Candidate] | None = None
        self._window_states: dict[int, dict[str, np.ndarray]] = {}
        # (MD step, its state) the observer rewinds to after a window labelled an earlier step
        self._rewind_to: tuple[int, dict[str, np.ndarray]] | None = None
        self._fresh: tuple[np.ndarray, Atoms] | None = None  # the label to continue from
        self.can_rewind = False  # set by attach(): the dynamics can be rewound
        self._traj: Any = None  # attach() opens the trajectory
        self._held_frames: list[tuple[int, Atoms]] = []  # written when no window is open

    @property
    def window_open(self) -> bool:
        """True while candidates are being gathered (or a rewind to one is pending)."""
        return self._window is not None or self._rewind_to is not None

    def _uses_window(self) -> bool:
        return self.can_rewind and self.settings.lookahead > 0

    def _fresh_label(self, atoms: Atoms, results: dict[str, Any]) -> dict[str, Any] | None:
        """The reference results when ``atoms`` is the structure just labelled and rewound to."""
        if self._fresh is None:
            return None
        positions, labelled = self._fresh
        self._fresh = None
        if atoms.positions.shape != positions.shape or not np.array_equal(
            atoms.positions, positions
        ):
            return None
        return reference_results(results, labelled)

    def _window_step(
        self,
        atoms: Atoms,
        results: dict[str, Any],
        pred: dict[str, np.ndarray],
        decision: Decision,
    ) -> tuple[dict[str, Any], Decision]:
        """A step with the window open (or opening): gather, and close when it is full."""
        if decision is Decision.REJECT:  # (only with a window open, of one or more steps)
            self._close_window()  # outside the trust window: label the best so far
            return results, Decision.LABEL
        if self._window is None:
            self._window = []
            self._window_states = {}
        self._window.append(
            Candidate(
                atoms.copy(), results, pred, self._md_step_now(),
                self.trigger.priority(results), decision is Decision.LABEL,
            )
        )
        full = len(self._window) >= self.settings.lookahead
        if not full and self._window[-1].priority < self.settings.lookahead_stop:
            return results, Decision.SKIP
        labelled = self._close_window()
        if labelled is not None:  # the current structure was the best: its forces drive it
            return reference_results(results, labelled), Decision.LABEL
        return results, Decision.LABEL

    def close_window(self) -> None:
        """Label the best candidate of an open window without rewinding (the run ends)."""
        self._close_window(rewind=False)

    def _close_window(self, rewind: bool = True) -> Atoms | None:
        """Label the window's best candidate and ask the observer to rewind to it.

        Returns the labelled structure when there is no state to rewind to (the best
        candidate is the structure of the current step, whose state the observer has not
        kept yet, or ``rewind`` is off), else None.
        """
        cands, self._window = self._window or [], None
        if not cands:
            return None
        # of the structures the trigger asked for, the one of highest priority
        best = max(cands, key=lambda c: (c.wanted, c.priority))
        state = self._window_states.get(best.md_step) if rewind else None
        # the window's trajectory frames up to the structure labelled are kept: on disk
        # before the label's checkpoint, so that a resume from it has all of them
        self._write_held_frames(upto=best.md_step if state is not None else None)
        if state is not None:
            # the checkpoint written with the label records the state the MD continues from
            self._accepted = state
            self.state.md_step = best.md_step
        labelled = self.label_batch([best.atoms], [best.results], [best.pred], [best.md_step])[0]
        self._window_states = {}
        if state is None:
            return labelled  # the current step (or a state not kept): no rewind
        self._rewind_to = (best.md_step, state)
        if labelled is not None:
            self._fresh = (best.atoms.positions.copy(), labelled)
        return None

    def _keep_window_state(self, md_step: int, accepted: dict[str, np.ndarray]) -> None:
        """Remember the state after ``md_step`` while the window is open (for the rewind)."""
        if self._window is not None:
            self._window_states[md_step] = accepted

    def flush(self) -> None:
        """Label what a batch or look-ahead window still holds; engines call it when the run
        ends."""
        self._flush_batch()
        self.close_window()

    def _flush_batch(self) -> None:
        """Label a diverse subset of the gathered candidates (batch mode)."""
        self._window_start = self.state.step + 1
        cands, self._candidates = self._candidates, []
        if not cands:
            return
        k = min(self.settings.batch_size, len(cands))
        if k < len(cands):
            pick = pick_diverse(
                self.model.descriptor,
                [c[0] for c in cands],
                [c[1].get("max_force_std", 0.0) for c in cands],
                k,
            )
            cands = [cands[i] for i in pick]
        self.label_batch([c[0] for c in cands], [c[1] for c in cands], [c[2] for c in cands],
                         [c[3] for c in cands])
