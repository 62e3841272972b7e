"""On-the-fly learning whose MD does not wait for the reference: labels from worker processes.

:class:`AsyncOnTheFlyLearner` is an :class:`~potlearn_ase.learners.otf.OnTheFlyLearner` whose
reference calls run in ``workers`` processes (:class:`~.otf_async_pool.AsyncLabeller`); a
run gets one with ``reference: {..., workers: N}``. At every MD step it

1. takes the labels that arrived since the previous step, stores them (with the same
   provenance as the synchronous learner, the prequential calibration ratios against the
   prediction made when the structure was submitted, and ``md_step_arrival``), updates the
   model once for all of them and swaps it in, so this step is already evaluated by it;
2. evaluates the committee and asks the trigger; a structure the trigger wants labelled, not
   stored and not pending, is submitted when fewer than ``workers`` calls are running, and
   the MD goes on with the committee's forces (the structure stays in the trajectory);
3. keeps the MD inside a **trust window** while labels are pending: a step the trigger
   rejects, or whose predicted force error passes ``trust_factor`` times the trigger's
   threshold (:class:`~potlearn_ase.learners.otf.OTFConfig`), waits for every pending label,
   updates the model and rewinds to the last accepted (trusted) state, as a rejection does.
   A step beyond the trust limit that the trigger wants labelled while nothing is pending is
   labelled at once and driven by the reference's forces, as in the synchronous learner.

A labelling that must finish before the MD can go on (:meth:`label`, the accepted state after
a rejection) is also run by a worker, and waited for. Kill safety: every pending call is on
disk until its outcome is stored (see :mod:`~potlearn_ase.learners.otf_async_pool`); a resumed
run stores the results that arrived before the kill and submits again only the calls that
never returned, and :meth:`flush` (the end of a run) waits for every pending label.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.otf import OnTheFlyLearner
from potlearn_ase.learners.otf_async_pool import Arrival, AsyncLabeller
from potlearn_ase.learners.otf_update import prequential_ratios, prequential_spreads
from potlearn_ase.learners.otf_window import reference_results
from potlearn_ase.learners.triggers import Decision, MinGap, Trigger, TrustWindow
from potlearn_ase.learners.triggers.base import check_positive, max_force_std
from potlearn_ase.learners.triggers.target import TargetError, predicted_force_error

__all__ = ["AsyncOnTheFlyLearner", "learner_class", "trust_limit"]

log = logging.getLogger(__name__)


def learner_class(reference: Any) -> type[OnTheFlyLearner]:
    """The learner for ``reference``: asynchronous when it has ``workers`` > 0."""
    return AsyncOnTheFlyLearner if getattr(reference, "workers", 0) else OnTheFlyLearner


def _innermost(trigger: Trigger) -> Trigger:
    while isinstance(trigger, (TrustWindow, MinGap)):
        trigger = trigger.inner
    return trigger


def trust_limit(trigger: Trigger, factor: float, results: dict[str, Any]) -> tuple[float, float]:
    """``(predicted error, limit)`` of the trust window, both in eV/Angstrom.

    The predicted error is the trigger's own force measure (``max_force_std``, or the
    predicted force error of a ``target`` trigger) and the limit ``factor`` times the
    trigger's threshold. A trigger whose threshold is not a force (energy, relative,
    extrapolation grade) has no limit: ``inf``.
    """
    inner = _innermost(trigger)
    if inner.describe().get("unit") != "eV/A":
        return 0.0, math.inf
    err = predicted_force_error(results) if isinstance(inner, TargetError) else max_force_std(
        results)
    return err, factor * float(trigger.threshold)


class AsyncOnTheFlyLearner(OnTheFlyLearner):
    """An on-the-fly learner whose reference calls do not stop the MD (see the module notes).

    Takes the arguments of :class:`~potlearn_ase.learners.otf.OnTheFlyLearner`, and:

    Parameters
    ----------
    workers : int, optional
        Worker processes (default: ``reference.workers``); at least 1.
    labeller : AsyncLabeller, optional
        Run the calls here instead (e.g. one over an MPI executor).

    Raises
    ------
    ConfigError
        ``workers`` below 1, ``settings.trust_factor`` not positive, or batch mode
        (``settings.batch_window``) asked for too.
    """

    def __init__(self, *args: Any, workers: int | None = None,
                 labeller: AsyncLabeller | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        n = int(workers if workers is not None else getattr(self.reference, "workers", 0))
        if labeller is None and n < 1:
            raise ConfigError(f"reference.workers: the asynchronous learner needs >= 1, got {n}")
        if self.settings.batch_window > 0:
            raise ConfigError("batch_window: batch mode and reference workers exclude each "
                              "other (workers already label several structures at once)")
        self.trust_factor = check_positive("trust_factor", self.settings.trust_factor)
        pending = None if self.run_dir is None else self.run_dir / "pending"
        self.labeller = labeller or AsyncLabeller(self.reference, n, directory=pending)
        self.labeller.start()  # the workers import the package while the run sets up
        self._recovered = False
        self._last_atoms: Atoms | None = None

    # ------------------------------------------------------------------ one step
    def _step(self, atoms: Atoms, temperature: float | None) -> tuple[dict[str, Any], Decision]:
        self._last_atoms = atoms
        if not self._recovered:
            self._recover(atoms)
        self._collect(self.labeller.done(), atoms)
        results, pred = self.evaluate(atoms)
        decision = self.trigger.decide(self.state.step, atoms, results)
        err, limit = trust_limit(self.trigger, self.trust_factor, results)
        beyond = not err <= limit  # a NaN is never trusted
        if decision is Decision.REJECT or (beyond and self.labeller.pending):
            self.record_step(results, Decision.REJECT, temperature)
            self._collect(self.labeller.wait_all(), atoms)  # the MD waits for them
            self.count_reject()
            self._rewind = True
            return results, Decision.REJECT
        self.record_step(results, decision, temperature)
        self.state.consecutive_rejects = 0
        if decision is not Decision.LABEL:
            return results, decision
        if beyond or self.store.contains(atoms):
            # untrusted and nothing pending: label now and drive this step by the reference
            labelled = self.label(atoms, results, pred)
            if labelled is not None:
                results = reference_results(results, labelled)
        elif self.labeller.pending < self.labeller.workers and not self.labeller.is_pending(atoms):
            self._submit(atoms, results, pred)
            # the gap of a min_gap trigger counts from the submission
            self.trigger.notify_labelled(self.state.step, results)
        return results, decision

    def _submit(self, atoms: Atoms, results: dict[str, Any], pred: dict[str, np.ndarray]) -> None:
        uncertainty = {
            "max_force_std": float(results.get("max_force_std", 0.0)),
            "energy_std": float(results["energy_std"]),
            "calibration": float(self.committee.calibration),
        }
        if results.get("max_extrapolation_grade") is not None:
            uncertainty["max_extrapolation_grade"] = float(results["max_extrapolation_grade"])
        meta = {"md_step": self._md_step_now(), "learner_step": int(self.state.step),
                "uncertainty": uncertainty, "submitted": time.time()}
        self.labeller.submit(atoms, pred["forces"], meta)

    # ------------------------------------------------------------------ labels arrive
    def _collect(self, arrivals: list[Arrival], atoms: Atoms | None) -> None:
        """Store the labels that arrived, update the model once for all, swap it in."""
        if not arrivals:
            return
        labelled, last_error = [], None
        for a in arrivals:
            if self.store.find(a.atoms) is not None:  # labelled meanwhile: keep one record
                self.labeller.forget(a.key)
                continue
            res = a.result
            self.state.n_reference_calls += 1
            self.state.reference_seconds += res.wall_time
            prov = {
                "reference": self.reference.name,
                "reference_params": self.reference.params,
                "engine": self.engine,
                "md_step": int(a.meta["md_step"]),
                "learner_step": int(a.meta["learner_step"]),
                "md_step_arrival": self._md_step_now(),
                "learner_step_arrival": int(self.state.step),
                "uncertainty": a.meta["uncertainty"],
                "wall_time": float(res.wall_time),
                "timestamp": time.time(),
                "workers": self.labeller.workers,
            }
            for flag in ("recovered", "resubmitted"):  # how a killed run's call ended
                if getattr(a, flag, False) or a.meta.get(flag):
                    prov[flag] = True
            if not res.ok or res.atoms is None:
                self.state.n_failures += 1
                self.state.consecutive_failures += 1
                self.store.append_failure(a.atoms, provenance=prov, error=str(res.error))
                self.labeller.forget(a.key)
                last_error = res.error
                log.warning("reference failed on the structure of step %s: %s",
                            a.meta["learner_step"], res.error)
                continue
            self.state.consecutive_failures = 0
            pred = {"forces": a.pred_forces}
            prov["calibration_ratios"] = prequential_ratios(pred, res.atoms)
            prov["calibration_spreads"] = prequential_spreads(pred)
            self.store.append(res.atoms, provenance=prov)  # durable: the files may go
            self.labeller.forget(a.key)
            self.state.ratios.extend(prov["calibration_ratios"])
            self.state.spreads.extend(prov["calibration_spreads"])
            self.state.label_steps.append(int(a.meta["learner_step"]))
            labelled.append(res.atoms)
        if not labelled:
            if last_error is not None:
                self._check_failures(atoms if atoms is not None else arrivals[-1].atoms,
                                     last_error)
            return
        self._retrain(labelled)
        for new in labelled:
            for hook in self.on_label:
                hook(self, new)
        self.checkpoint(atoms)

    def _recover(self, atoms: Atoms | None) -> None:
        """First step (of a resumed run too): finish what a killed process left pending."""
        self._recovered = True
        arrivals, _ = self.labeller.recover(self.store)
        self._collect(arrivals, atoms)
        self.labeller.start(wait=True)  # once: the first labels do not wait for start-up

    # ------------------------------------------------------------------ waiting
    def label(
        self,
        atoms: Atoms,
        results: dict[str, Any] | None = None,
        pred: dict[str, np.ndarray] | None = None,
    ) -> Atoms | None:
        """Label ``atoms`` in a worker and wait (with every other pending label), store,
        update and swap the model; a stored structure gets its stored label back.

        Returns the labelled structure, or None when the reference failed (recorded).
        """
        found = self.store.find(atoms)
        if found is not None:
            self.state.n_reused_labels += 1
            return self.store[found]
        if not self._recovered:
            self._recover(atoms)
        if results is None or pred is None:
            results, pred = self.evaluate(atoms)
        if not self.labeller.is_pending(atoms):
            self._submit(atoms, results, pred)
        self._collect(self.labeller.wait_all(), atoms)
        found = self.store.find(atoms)
        if found is None:
            return None
        self.trigger.notify_labelled(self.state.step, results)
        return self.store[found]

    def flush(self) -> None:
        """Wait for every pending label, store it and update the model; then stop the
        workers (a later step starts them again). Engines call it when the run ends."""
        self._collect(self.labeller.wait_all(), self._last_atoms)
        self.labeller.close()

    def close(self) -> None:
        """Stop the workers without waiting for pending labels (they stay on disk)."""
        self.labeller.close()
