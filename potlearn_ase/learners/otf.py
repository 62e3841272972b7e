"""On-the-fly learning: run MD on the committee, label only where it is unsure.

The learner sits between an MD engine and the committee potential. At every step it asks the
committee for energy, forces and their calibrated spread; a :class:`~.triggers.Trigger` turns
the spread into *skip*, *label* or *reject*:

* **skip** - the step uses the committee's mean forces;
* **label** - the reference (DFT, xTB, EMT, ...) is called, its energy and forces drive this step
  (the trajectory stays physical), the label is stored durably, the model is updated (closed
  form for linear models, a short fine-tune for neural ones), the calibration factor is
  re-estimated and the new model is swapped in without restarting the dynamics;
* **reject** - the structure is outside the trust window: it is not labelled (the reference may
  fail or be wasted there); the MD rewinds to the last accepted state, and that state is
  labelled if it was not yet, so the model learns where the trajectory was heading.

Two ways to use it with ASE dynamics:

1. as the calculator: ``atoms.calc = learner.calculator`` (every ``get_forces`` is a step);
2. attached: ``learner.attach(dyn)`` does 1. and also registers an observer that counts steps,
   rewinds after a rejection, writes the trajectory and checkpoints for resume.

Calibration is prequential: each label compares the reference forces with the committee's
prediction *before* the update, so every label is also an honest validation point, and
``alpha`` is the 68.3 % quantile of ``|error| / spread`` over all of them.

The learner's settings are :class:`OTFConfig`, its checkpointed state is in
:mod:`~potlearn_ase.learners.checkpoint`,
how it learns from labels in :mod:`~potlearn_ase.learners.otf_update`, how it checkpoints and
resumes in :mod:`~potlearn_ase.learners.otf_checkpoint`, its calculator in
:mod:`~potlearn_ase.learners.otf_calculator` and how it attaches to ASE dynamics in
:mod:`~potlearn_ase.learners.otf_dynamics`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase._moved import RENAMED_CONFIGS, moved_attribute
from potlearn_ase.calculators.committee import CommitteeCalculator, committee_results
from potlearn_ase.data.store import LabelStore
from potlearn_ase.errors import PotlearnError, ReferenceFailure
from potlearn_ase.learners.checkpoint import HistoryLog, LearnerState, StepRecord, checkpoint_atoms
from potlearn_ase.learners.otf_calculator import OTFCalculator
from potlearn_ase.learners.otf_checkpoint import CheckpointMixin
from potlearn_ase.learners.otf_dynamics import DynamicsMixin
from potlearn_ase.learners.otf_update import (
    calibration_factor,
    error_model,
    force_noise,
    prequential_ratios,
    prequential_spreads,
    update_model,
)
from potlearn_ase.learners.otf_window import WindowMixin, reference_results
from potlearn_ase.learners.reference import Reference
from potlearn_ase.learners.triggers import Decision, Trigger, predicted_force_error

__all__ = ["OTFConfig", "OnTheFlyLearner", "OTFCalculator", "checkpoint_atoms"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OTFConfig:
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
    lookahead : int
        When the trigger asks for a label, the MD goes on with the committee for up to this
        many steps; the structure with the highest priority (predicted error or
        extrapolation grade) of that window is labelled and the MD rewinds to it
        (:mod:`~potlearn_ase.learners.otf_window`; only with ASE dynamics attached).
    lookahead_stop : float
        A candidate of at least this priority closes the window at once.
    seed : int
        Seeds committee draws after each update.
    trust_factor : float
        With reference workers (:mod:`~potlearn_ase.learners.otf_async`): while labels are
        pending, a step whose predicted force error passes this times the trigger's
        threshold waits for them and rewinds to the last accepted state.
    """

    max_consecutive_rejects: int = 20
    min_calibration_labels: int = 1
    neural_finetune_epochs: int = 30
    neural_max_frames: int = 200
    checkpoint_every: int = 20
    batch_window: int = 0
    batch_size: int = 4
    lookahead: int = 10
    lookahead_stop: float = 3.0
    seed: int = 0
    trust_factor: float = 3.0


class OnTheFlyLearner(CheckpointMixin, DynamicsMixin, WindowMixin):
    """On-the-fly active learner around a committee calculator.

    Parameters
    ----------
    calculator : CommitteeCalculator
        The potential being learned; its model is replaced after every label.
    reference : Reference
        The reference calculator wrapper (never raises into the MD).
    store : LabelStore
        Durable store of every label; structures already stored are never labelled again.
    trigger : Trigger
        Decides skip / label / reject from the calibrated uncertainty.
    run_dir : path, optional
        Where checkpoints, the trajectory and the model go (resume needs it).
    settings : OTFConfig
        Other settings.
    engine : str
        Name of the MD engine, recorded in the provenance of each label.
    executor : concurrent.futures.Executor, optional
        Where batch-mode reference calls run (default: a thread pool); e.g. an
        ``mpi4py.futures.MPIPoolExecutor`` spreads them over MPI ranks.
    """

    def __init__(
        self,
        calculator: CommitteeCalculator,
        reference: Reference,
        store: LabelStore,
        trigger: Trigger,
        *,
        run_dir: str | os.PathLike | None = None,
        settings: OTFConfig | None = None,
        engine: str = "ase",
        executor: Any = None,
    ):
        self.committee = calculator
        self.executor = executor
        self._candidates: list[tuple[Atoms, dict[str, Any], dict[str, np.ndarray], int]] = []
        # the MD step being evaluated (ASE evaluates step n + 1 before step n is counted)
        self.geometry_step: int | None = None
        self._window_start = 0
        self.reference = reference
        self.store = store
        self.trigger = trigger
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.settings = settings or OTFConfig()
        self.engine = engine
        self.state = LearnerState()
        self._rng = np.random.default_rng(self.settings.seed)
        self._calculator = OTFCalculator(self)
        self._accepted: dict[str, Any] | None = None
        self._rewind = False
        self._init_window()
        # (factor, misfit) cross-validated on the starting labels: the error model until
        # enough prequential errors are known (set by run_otf)
        self.initial_error_model: tuple[float, float] | None = None
        self.refresh_uncertainty()  # sets epistemic_calibration and force_noise
        self.on_label: list[Callable[[OnTheFlyLearner, Atoms], None]] = []
        self.checkpoint_extra: Callable[[], dict[str, Any]] | None = None
        self._history_log = (
            HistoryLog(self.run_dir / "history.jsonl") if self.run_dir is not None else None
        )
        self._history_saved = 0  # entries of state.history already in the history log

    # ------------------------------------------------------------------ properties
    @property
    def calculator(self) -> OTFCalculator:
        """An ASE calculator that runs the learner at every force call."""
        return self._calculator

    @property
    def model(self):
        return self.committee.model

    n_labels = property(lambda self: len(self.store), doc="Labels in the store.")

    @property
    def n_reference_calls(self) -> int:
        return self.state.n_reference_calls

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state.history

    # ------------------------------------------------------------------ core
    def evaluate(self, atoms: Atoms) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Committee results (calibrated) and the raw per-member prediction.

        Uses the committee calculator's neighbour list, reused between MD steps (its skin).
        """
        nl = self.committee.neighbour_list()
        pred = self.model.predict(
            atoms,
            forces=True,
            stress=bool(atoms.pbc.all()),
            neighbours=None if nl is None else nl.update(atoms),
        )
        results = committee_results(pred, self.committee.calibration)
        per_atom = np.linalg.norm(pred["forces"].std(0), axis=-1)  # raw spread, (N,)
        a = self.epistemic_calibration
        results["force_noise"] = self.force_noise
        results["epistemic_max_force_std"] = a * float(per_atom.max(initial=0.0))
        results["epistemic_rms_force_std"] = a * float(np.sqrt(np.mean(per_atom**2)))
        return results, pred

    def refresh_uncertainty(self) -> None:
        """Re-estimate the committee's error model from the model and the labels so far:
        the spread's factor with the misfit set apart (``epistemic_calibration``) and the
        misfit of a force component (``force_noise``, eV/A)."""
        prior = self.initial_error_model or (
            float(self.committee.calibration), force_noise(self.model)
        )
        self.epistemic_calibration, self.force_noise = error_model(
            self.state.ratios, self.state.spreads, prior
        )

    def step(
        self, atoms: Atoms, *, temperature: float | None = None
    ) -> tuple[dict[str, Any], Decision]:
        """One MD step's worth of learning: returns the results the engine should use.

        Every engine adapter calls this once per step with the current structure.
        """
        try:
            return self._step(atoms, temperature)
        finally:
            self.state.step += 1

    def _step(self, atoms: Atoms, temperature: float | None) -> tuple[dict[str, Any], Decision]:
        results, decision = self._decide(atoms, temperature)
        self.state.history[-1]["decision"] = decision.name.lower()  # what was done
        return results, decision

    def _decide(
        self, atoms: Atoms, temperature: float | None
    ) -> tuple[dict[str, Any], Decision]:
        results, pred = self.evaluate(atoms)
        decision = self.trigger.decide(self.state.step, atoms, results)
        self.record_step(results, decision, temperature)
        fresh = self._fresh_label(atoms, results)
        if fresh is not None:  # the structure a window labelled, rewound to
            return fresh, Decision.SKIP
        if self._uses_window() and self.settings.batch_window == 0 and (
            self._window is not None or decision is Decision.LABEL
        ):
            if decision is Decision.REJECT:
                self.state.n_rejects += 1
            return self._window_step(atoms, results, pred, decision)
        if decision is Decision.REJECT:
            self.count_reject()
            self._rewind = True
            return results, decision
        self.state.consecutive_rejects = 0
        if self.settings.batch_window > 0:
            if decision is Decision.LABEL and not self.store.contains(atoms):
                self._candidates.append((atoms.copy(), results, pred, self._md_step_now()))
            if self.state.step - self._window_start + 1 >= self.settings.batch_window:
                self._flush_batch()
            return results, decision
        if decision is Decision.LABEL:
            labelled = self.label(atoms, results, pred)
            if labelled is not None:
                results = reference_results(results, labelled)
        return results, decision

    def record_step(
        self, results: dict[str, Any], decision: Decision, temperature: float | None
    ) -> None:
        """Append what the learner saw and decided at this step to ``history``."""
        grade = results.get("max_extrapolation_grade")
        self.state.history.append(asdict(StepRecord(
            step=self.state.step,
            max_force_std=float(results.get("max_force_std", 0.0)),
            energy_std=float(results["energy_std"]),
            threshold=float(self.trigger.threshold),
            decision=decision.name.lower(),
            temperature=temperature,
            max_extrapolation_grade=None if grade is None else float(grade),
            predicted_force_error=predicted_force_error(results),
        )))

    def count_reject(self) -> None:
        """Count a rejected step; a PotlearnError after too many in a row."""
        self.state.n_rejects += 1
        self.state.consecutive_rejects += 1
        if self.state.consecutive_rejects > self.settings.max_consecutive_rejects:
            raise PotlearnError(
                f"{self.state.consecutive_rejects} rejected steps in a row at step "
                f"{self.state.step}: the MD keeps leaving the trust window"
            )

    def label(
        self,
        atoms: Atoms,
        results: dict[str, Any] | None = None,
        pred: dict[str, np.ndarray] | None = None,
    ) -> Atoms | None:
        """Label ``atoms`` (or reuse a stored label), store it, update and swap the model.

        Returns the labelled structure, or None when the reference failed (recorded in the
        store, never raised).
        """
        return self.label_batch([atoms], [results], [pred])[0]

    def _md_step_now(self) -> int:
        return int(self.state.md_step if self.geometry_step is None else self.geometry_step)

    def label_batch(
        self,
        frames: list[Atoms],
        results: list[dict[str, Any] | None] | None = None,
        preds: list[dict[str, np.ndarray] | None] | None = None,
        md_steps: list[int] | None = None,
    ) -> list[Atoms | None]:
        """Label several structures (in parallel when more than one), then update once.

        A structure already in the store gets its stored label back, but it is not counted,
        calibrated on or trained on again: only new labels update the model. ``md_steps``
        gives each structure's MD step for the provenance (default: the current one).
        """
        n = len(frames)
        results = list(results) if results is not None else [None] * n
        preds = list(preds) if preds is not None else [None] * n
        steps = list(md_steps) if md_steps is not None else [self._md_step_now()] * n
        for k in range(n):
            if results[k] is None or preds[k] is None:
                results[k], preds[k] = self.evaluate(frames[k])
        out: list[Atoms | None] = [None] * n
        todo = []
        for k, atoms in enumerate(frames):
            found = self.store.find(atoms)
            if found is not None:
                out[k] = self.store[found]
                self.state.n_reused_labels += 1
            else:
                todo.append(k)
        if len(todo) == 1:
            answers = [self.reference.label(frames[todo[0]])]
        else:
            answers = self.reference.label_many([frames[k] for k in todo], executor=self.executor)
        ratios: dict[int, list[float]] = {}
        spreads: dict[int, list[float]] = {}
        for k, res in zip(todo, answers):
            self.state.n_reference_calls += 1
            self.state.reference_seconds += res.wall_time
            r = results[k]
            assert r is not None
            prov = {
                "reference": self.reference.name,
                "reference_params": self.reference.params,
                "engine": self.engine,
                "md_step": int(steps[k]),
                "learner_step": int(self.state.step),
                "uncertainty": {
                    "max_force_std": float(r.get("max_force_std", 0.0)),
                    "energy_std": float(r["energy_std"]),
                    "calibration": float(self.committee.calibration),
                    **(
                        {"max_extrapolation_grade": float(r["max_extrapolation_grade"])}
                        if r.get("max_extrapolation_grade") is not None
                        else {}
                    ),
                },
                "wall_time": float(res.wall_time),
                "timestamp": time.time(),
            }
            if not res.ok or res.atoms is None:
                self.state.n_failures += 1
                self.state.consecutive_failures += 1
                self.store.append_failure(frames[k], provenance=prov, error=str(res.error))
                log.warning("reference failed at step %d: %s", self.state.step, res.error)
                continue
            self.state.consecutive_failures = 0
            # prequential calibration: the prediction before the update against the label,
            # stored with the label so that a resume rebuilds every ratio from the store
            pk = preds[k]
            assert pk is not None
            prov["calibration_ratios"] = prequential_ratios(pk, res.atoms)
            prov["calibration_spreads"] = prequential_spreads(pk)
            self.store.append(res.atoms, provenance=prov)
            out[k] = res.atoms
            ratios[k] = prov["calibration_ratios"]
            spreads[k] = prov["calibration_spreads"]
        new = set(todo)
        labelled = [(out[k], preds[k]) for k in range(n) if k in new and out[k] is not None]
        if not labelled:
            self._check_failures(frames[-1], answers[-1].error if answers else None)
            return out
        for k in sorted(ratios):
            self.state.ratios.extend(ratios[k])
            self.state.spreads.extend(spreads[k])
            self.state.label_steps.append(int(self.state.step))
        self._retrain([a for a, _ in labelled])
        for r in results:
            assert r is not None
            self.trigger.notify_labelled(self.state.step, r)
        for a, _ in labelled:
            for hook in self.on_label:
                hook(self, a)
        self.checkpoint(frames[-1])
        return out

    def _check_failures(self, atoms: Atoms, error: str | None) -> None:
        """Stop the run (after a checkpoint) when the reference keeps failing."""
        limit = getattr(self.reference, "max_consecutive_failures", None)
        if limit is None or self.state.consecutive_failures < limit:
            return
        self.checkpoint(atoms)
        raise ReferenceFailure(
            f"the reference {self.reference.name!r} failed {self.state.consecutive_failures} "
            f"times in a row (the limit, reference.max_consecutive_failures, is {limit}); "
            f"the last error: {error}. The run stops rather than go on with an untrained "
            "committee: fix the reference, then continue with --resume"
        )

    def _calibration(self) -> float:
        return calibration_factor(
            self.state.ratios,
            len(self.state.label_steps),
            self.settings.min_calibration_labels,
            self.committee.calibration,
        )

    def _retrain(self, labelled: list[Atoms]) -> None:
        model = update_model(self.model, labelled, self.store, self.settings, self._rng)
        self.committee.set_model(model, calibration=self._calibration())
        self.refresh_uncertainty()


__getattr__ = moved_attribute(__name__, RENAMED_CONFIGS)
