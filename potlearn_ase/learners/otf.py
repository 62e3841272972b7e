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
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from potlearn_ase.calculators.committee import CommitteeCalculator, committee_results
from potlearn_ase.data.store import LabelStore
from potlearn_ase.data.validate import get_labels
from potlearn_ase.learners.checkpoint import checkpoint_atoms, write_json_atomic
from potlearn_ase.learners.reference import Reference
from potlearn_ase.learners.triggers import Decision, Trigger
from potlearn_ase.models.calibration import ONE_SIGMA
from potlearn_ase.models.linear import LinearCommittee

__all__ = ["OTFSettings", "OnTheFlyLearner", "OTFCalculator", "checkpoint_atoms"]

log = logging.getLogger(__name__)


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
    step: int
    max_force_std: float
    energy_std: float
    threshold: float
    decision: str
    temperature: float | None = None


@dataclass
class _State:
    step: int = 0  # learner steps evaluated (one per force call, rewound steps included)
    md_step: int = 0  # steps the dynamics has completed and kept
    n_reference_calls: int = 0
    n_reused_labels: int = 0
    n_failures: int = 0
    n_rejects: int = 0
    consecutive_rejects: int = 0
    ratios: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    label_steps: list[int] = field(default_factory=list)
    reference_seconds: float = 0.0


class OnTheFlyLearner:
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
    settings : OTFSettings
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
        settings: OTFSettings | None = None,
        engine: str = "ase",
        executor: Any = None,
    ):
        self.committee = calculator
        self.executor = executor
        self._candidates: list[tuple[Atoms, dict[str, Any], dict[str, np.ndarray]]] = []
        self._window_start = 0
        self.reference = reference
        self.store = store
        self.trigger = trigger
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.settings = settings or OTFSettings()
        self.engine = engine
        self.state = _State()
        self._rng = np.random.default_rng(self.settings.seed)
        self._calculator = OTFCalculator(self)
        self._accepted: dict[str, Any] | None = None
        self._rewind = False
        self.on_label: list[Callable[[OnTheFlyLearner, Atoms], None]] = []
        self.checkpoint_extra: Callable[[], dict[str, Any]] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def calculator(self) -> OTFCalculator:
        """An ASE calculator that runs the learner at every force call."""
        return self._calculator

    @property
    def model(self):
        return self.committee.model

    @property
    def n_labels(self) -> int:
        return len(self.store)

    @property
    def n_reference_calls(self) -> int:
        return self.state.n_reference_calls

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state.history

    # ------------------------------------------------------------------ core
    def evaluate(self, atoms: Atoms) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Committee results (calibrated) and the raw per-member prediction."""
        pred = self.model.predict(atoms, forces=True, stress=bool(atoms.pbc.all()))
        return committee_results(pred, self.committee.calibration), pred

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
        results, pred = self.evaluate(atoms)
        decision = self.trigger.decide(self.state.step, atoms, results)
        self.state.history.append(
            asdict(
                StepRecord(
                    step=self.state.step,
                    max_force_std=float(results.get("max_force_std", 0.0)),
                    energy_std=float(results["energy_std"]),
                    threshold=float(self.trigger.threshold),
                    decision=decision.name.lower(),
                    temperature=temperature,
                )
            )
        )
        if decision is Decision.REJECT:
            self.state.n_rejects += 1
            self.state.consecutive_rejects += 1
            if self.state.consecutive_rejects > self.settings.max_consecutive_rejects:
                from potlearn_ase.errors import PotlearnError

                raise PotlearnError(
                    f"{self.state.consecutive_rejects} rejected steps in a row at step "
                    f"{self.state.step}: the MD keeps leaving the trust window"
                )
            self._rewind = True
            return results, decision
        self.state.consecutive_rejects = 0
        if self.settings.batch_window > 0:
            if decision is Decision.LABEL and not self.store.contains(atoms):
                self._candidates.append((atoms.copy(), results, pred))
            if self.state.step - self._window_start + 1 >= self.settings.batch_window:
                self._flush_batch()
            return results, decision
        if decision is Decision.LABEL:
            labelled = self.label(atoms, results, pred)
            if labelled is not None:
                ref = get_labels(labelled)
                results = dict(results)
                results["energy"] = results["free_energy"] = float(ref["energy"])
                results["forces"] = np.asarray(ref["forces"])
                if "stress" in ref:
                    results["stress"] = np.asarray(ref["stress"])
                results["labelled"] = True
        return results, decision

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

    def label_batch(
        self,
        frames: list[Atoms],
        results: list[dict[str, Any] | None] | None = None,
        preds: list[dict[str, np.ndarray] | None] | None = None,
    ) -> list[Atoms | None]:
        """Label several structures (in parallel when more than one), then update once."""
        n = len(frames)
        results = list(results) if results is not None else [None] * n
        preds = list(preds) if preds is not None else [None] * n
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
        for k, res in zip(todo, answers):
            self.state.n_reference_calls += 1
            self.state.reference_seconds += res.wall_time
            r = results[k]
            assert r is not None
            prov = {
                "reference": self.reference.name,
                "reference_params": self.reference.params,
                "engine": self.engine,
                "md_step": int(self.state.md_step),
                "learner_step": int(self.state.step),
                "uncertainty": {
                    "max_force_std": float(r.get("max_force_std", 0.0)),
                    "energy_std": float(r["energy_std"]),
                    "calibration": float(self.committee.calibration),
                },
                "wall_time": float(res.wall_time),
                "timestamp": time.time(),
            }
            if not res.ok or res.atoms is None:
                self.state.n_failures += 1
                self.store.append_failure(frames[k], provenance=prov, error=str(res.error))
                log.warning("reference failed at step %d: %s", self.state.step, res.error)
                continue
            self.store.append(res.atoms, provenance=prov)
            out[k] = res.atoms
        labelled = [(a, p) for a, p in zip(out, preds) if a is not None]
        if not labelled:
            return out
        for a, p in labelled:
            # prequential calibration: the prediction before the update against the label
            assert p is not None
            f_ref = np.asarray(get_labels(a)["forces"])
            spread = p["forces"].std(0)
            err = np.abs(p["forces"].mean(0) - f_ref)
            ok = spread > 0
            self.state.ratios.extend((err[ok] / spread[ok]).ravel().tolist())
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

    def _flush_batch(self) -> None:
        """Label a diverse subset of the gathered candidates (batch mode)."""
        self._window_start = self.state.step + 1
        cands, self._candidates = self._candidates, []
        if not cands:
            return
        k = min(self.settings.batch_size, len(cands))
        if k < len(cands):
            from potlearn_ase.selection.fps import farthest_point_sampling

            feats = np.stack(
                [
                    self.model.descriptor.compute(a, derivatives=False)
                    .features.mean(0)
                    .cpu()
                    .numpy()
                    for a, _, _ in cands
                ]
            )
            scale = feats.std(0)
            feats = feats / np.where(scale > 0, scale, 1.0)
            # start from the most uncertain candidate, then add the most different ones
            start = int(np.argmax([r.get("max_force_std", 0.0) for _, r, _ in cands]))
            pick = farthest_point_sampling(feats, k, start=start)
            cands = [cands[i] for i in pick]
        self.label_batch([c[0] for c in cands], [c[1] for c in cands], [c[2] for c in cands])

    def _calibration(self) -> float:
        if (
            len(self.state.label_steps) < self.settings.min_calibration_labels
            or not self.state.ratios
        ):
            return self.committee.calibration
        return float(np.quantile(np.asarray(self.state.ratios), ONE_SIGMA))

    def _retrain(self, labelled: list[Atoms]) -> None:
        model = self.model
        seed = int(self._rng.integers(2**31))
        if isinstance(model, LinearCommittee):
            model.update(labelled, rng=seed)
        else:
            from potlearn_ase.training.trainer import NeuralTrainConfig, train_neural

            frames = self.store.frames()
            cap = self.settings.neural_max_frames
            if len(frames) > cap:
                newest = frames[-cap // 2 :]
                older = frames[: -cap // 2]
                pick = self._rng.choice(len(older), size=cap - len(newest), replace=False)
                frames = [older[i] for i in sorted(pick)] + newest
            cfg = NeuralTrainConfig(
                n_members=model.n_members,
                epochs=self.settings.neural_finetune_epochs,
                lr=1e-3,
                seed=seed,
                patience=self.settings.neural_finetune_epochs,
                device=str(getattr(model.descriptor, "device", "cpu")),
            )
            model, _ = train_neural(model.descriptor, frames, None, cfg, init=model)
        self.committee.set_model(model, calibration=self._calibration())

    # ------------------------------------------------------------------ ASE dynamics
    def attach(
        self, dyn: Any, *, trajectory: str | os.PathLike | None = None, interval: int = 1
    ) -> None:
        """Use the learner as ``dyn``'s calculator and observe every step.

        The observer counts steps, keeps the last accepted state, rewinds after a rejection,
        appends accepted frames to ``trajectory`` every ``interval`` steps and checkpoints.
        """
        atoms = dyn.atoms
        atoms.calc = self.calculator
        self._traj = None
        if trajectory is not None:
            from ase.io.trajectory import Trajectory

            self._traj = Trajectory(str(trajectory), "a")
        self._save_accepted(atoms)

        def observe() -> None:
            if self._rewind:
                self._restore_accepted(atoms)
                self._rewind = False
                if self._accepted is not None and not self.store.contains(atoms):
                    self.label(atoms)
                return
            self.state.md_step = int(dyn.nsteps)
            self._save_accepted(atoms)
            if self._traj is not None and self.state.md_step % interval == 0:
                self._traj.write(atoms)
            if (
                self.run_dir is not None
                and self.state.md_step % self.settings.checkpoint_every == 0
            ):
                self.checkpoint(atoms)

        dyn.attach(observe, interval=1)

    def _save_accepted(self, atoms: Atoms) -> None:
        self._accepted = {
            "positions": atoms.positions.copy(),
            "momenta": atoms.get_momenta().copy(),
            "cell": atoms.cell.array.copy(),
        }

    def _restore_accepted(self, atoms: Atoms) -> None:
        assert self._accepted is not None
        atoms.set_cell(self._accepted["cell"])
        atoms.set_positions(self._accepted["positions"])
        atoms.set_momenta(self._accepted["momenta"])

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(
        self, atoms: Atoms | None = None, *, extra: dict[str, Any] | None = None
    ) -> None:
        """Write the learner state (and the model) atomically to ``run_dir``."""
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.committee.save(self.run_dir / "model.pt")
        state = asdict(self.state)
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
        """Restore the learner state from ``run_dir/state.json``; returns the whole record."""
        if self.run_dir is None:
            raise ValueError("the learner has no run_dir")
        path = self.run_dir / "state.json"
        with open(path) as fh:
            state = json.load(fh)
        known = set(_State.__dataclass_fields__)
        self.state = _State(**{k: v for k, v in state.items() if k in known})
        self.trigger.load_state_dict(state.get("trigger", {}))
        if "rng" in state:
            self._rng.bit_generator.state = state["rng"]
        return state


class OTFCalculator(Calculator):
    """ASE calculator face of an :class:`OnTheFlyLearner` (one call = one MD step).

    Results are the committee's (mean and calibrated spread), except on a labelled step, where
    ``energy``, ``forces`` and ``stress`` are the reference's and ``labelled`` is True.
    """

    implemented_properties = CommitteeCalculator.implemented_properties

    def __init__(self, learner: OnTheFlyLearner, **kwargs: Any):
        super().__init__(**kwargs)
        self.learner = learner

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | tuple[str, ...] = ("energy",),
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        temperature = None
        if self.atoms.get_momenta().any():
            temperature = float(self.atoms.get_temperature())
        results, _ = self.learner.step(self.atoms, temperature=temperature)
        self.results = results
