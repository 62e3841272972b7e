"""On-the-fly learning inside LAMMPS: the learner runs in the ``fix external`` callback.

:class:`~potlearn_ase.engines.lammps.driver.LammpsDriver` calls the adapter once per force
evaluation with the structure in ASE order and LAMMPS's step number; the adapter hands it to
:meth:`~potlearn_ase.learners.otf.OnTheFlyLearner.step` and returns the learner's results to
LAMMPS. A labelled step uses the reference's energy, forces and stress; the model is updated
inside the callback and the run continues with it.

LAMMPS cannot be rewound from the callback: a *reject* decision is logged and counted, and the
committee prediction is used (as under i-PI). Temperatures are not passed to the learner.

The ``potlearn lammps --learn config.yaml`` configuration (:class:`LammpsLearnConfig`)::

    reference: emt                 # or a mapping, see Reference.from_spec
    trigger: {kind: adaptive, factor: 1.2, min_gap: 5}
    run_dir: lammps-otf            # labels.h5, model.pt, state.json, summary.json
    settings: {seed: 0}            # OTFConfig
    model: {fit: {n_members: 8}}   # only without --model: the starting committee (ModelConfig)
    initial: {n_labels: 1, rattle: 0.05}   # only without --model: its starting labels

Without a model the learner starts from the deck's first structure: ``initial.n_labels``
rattled copies are labelled by the reference and a committee is fitted to them with the
``model`` settings, exactly as ``potlearn otf`` starts.

Resume rules are those of ``potlearn otf``: a new run refuses a ``run_dir`` that holds a run
already; with ``resume`` the learner continues from ``run_dir/model.pt`` and ``state.json``
(calibration, trigger state, step counters), and stored structures are never labelled again.
The LAMMPS dynamics itself restarts from the deck (use LAMMPS's ``read_restart`` in the deck to
continue a trajectory).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ase import Atoms

from potlearn_ase.calculators.committee import CommitteeCalculator
from potlearn_ase.config import load_config
from potlearn_ase.data.store import LabelStore
from potlearn_ase.engines.learning import EngineLearnConfig, prepare_run_dir
from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.otf import OnTheFlyLearner
from potlearn_ase.learners.reference import Reference
from potlearn_ase.learners.run import InitialConfig, ModelConfig
from potlearn_ase.learners.triggers import Decision, trigger_from_config

__all__ = ["LammpsLearnConfig", "LammpsLearnerAdapter", "run_lammps_learning"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LammpsLearnConfig(EngineLearnConfig):
    """Configuration of ``potlearn lammps --learn``: the keys of :class:`EngineLearnConfig`,
    plus the starting model when no model file is given.

    Attributes
    ----------
    model : ModelConfig
        Descriptor and committee of the starting model when no model file is given.
    initial : InitialConfig
        Starting labels when no model file is given.
    """

    run_dir: str = "lammps-otf"
    model: ModelConfig = field(default_factory=ModelConfig)
    initial: InitialConfig = field(default_factory=InitialConfig)


def _as_config(config: LammpsLearnConfig | dict[str, Any] | str | os.PathLike) -> LammpsLearnConfig:
    return load_config(LammpsLearnConfig, config)


class LammpsLearnerAdapter:
    """The ``step`` a :class:`LammpsDriver` calls: one learner step per force evaluation.

    Parameters
    ----------
    learner : OnTheFlyLearner or callable
        The learner, or ``factory(atoms) -> OnTheFlyLearner`` called with the first structure
        (to build the starting model from it).

    Attributes
    ----------
    labelled_steps : list of int
        LAMMPS time step of every labelled evaluation, in order.
    decisions : dict
        Counts of each decision.
    """

    def __init__(self, learner: OnTheFlyLearner | Callable[[Atoms], OnTheFlyLearner]):
        if isinstance(learner, OnTheFlyLearner):
            self._learner: OnTheFlyLearner | None = learner
            self._factory: Callable[[Atoms], OnTheFlyLearner] | None = None
        else:
            self._learner, self._factory = None, learner
        self.labelled_steps: list[int] = []
        self.decisions: dict[str, int] = {d.name.lower(): 0 for d in Decision}
        self.evaluations = 0
        self.last_atoms: Atoms | None = None

    @property
    def learner(self) -> OnTheFlyLearner | None:
        """The learner (None until the first call when built by a factory)."""
        return self._learner

    def __call__(self, atoms: Atoms, ntimestep: int) -> dict[str, Any]:
        # the driver reuses its Atoms between steps: the learner gets its own copy
        atoms = atoms.copy()
        if self._learner is None:
            assert self._factory is not None
            self._learner = self._factory(atoms)
        learner = self._learner
        learner.state.md_step = int(ntimestep)
        results, decision = learner.step(atoms)
        self.evaluations += 1
        self.decisions[decision.name.lower()] += 1
        if decision is Decision.REJECT:
            log.warning(
                "learner step %d (LAMMPS step %d) rejected: LAMMPS cannot rewind from the "
                "callback, the committee prediction is used",
                learner.state.step - 1,
                ntimestep,
            )
        if results.get("labelled"):
            self.labelled_steps.append(int(ntimestep))
        elif (
            learner.run_dir is not None
            and self.evaluations % max(learner.settings.checkpoint_every, 1) == 0
        ):
            learner.checkpoint(atoms)
        self.last_atoms = atoms
        return results


def _starting_model(
    cfg: LammpsLearnConfig,
    atoms: Atoms,
    reference: Reference,
    store: LabelStore,
) -> CommitteeCalculator:
    """The first committee of a run without a model file: fit to labelled rattled copies."""
    import numpy as np

    from potlearn_ase.learners.otf_update import initial_calibration
    from potlearn_ase.learners.run import OTFRunConfig, fit_run_model, label_initial

    if len(store) == 0:
        label_initial(
            atoms, reference, store, cfg.initial, np.random.default_rng(cfg.settings.seed)
        )
    elements = sorted(set(atoms.get_chemical_symbols()))
    frames = store.frames()
    model = fit_run_model(OTFRunConfig(model=cfg.model), frames, elements, cfg.settings.seed)
    return CommitteeCalculator(model=model, calibration=initial_calibration(model, frames))


def run_lammps_learning(
    deck: str | os.PathLike | Sequence[str],
    config: LammpsLearnConfig | dict[str, Any] | str | os.PathLike,
    *,
    model: CommitteeCalculator | str | os.PathLike | None = None,
    elements: Sequence[str] | None = None,
    variables: dict[str, Any] | None = None,
    resume: bool = False,
    snap_prefix: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Run a LAMMPS deck while learning on the fly; returns the run summary.

    Parameters
    ----------
    deck : path or list of str
        LAMMPS input with ``pair_style zero`` and ``fix ... external pf/callback``.
    config : LammpsLearnConfig, mapping or path of a YAML file
        See :class:`LammpsLearnConfig`.
    model : CommitteeCalculator or path, optional
        The starting committee; without it one is fitted to the first structure (see the
        module documentation). Ignored on resume (``run_dir/model.pt`` is used).
    elements : sequence of str, optional
        Element of each LAMMPS atom type (default: the deck's ``# potlearn elements`` line).
    variables : dict, optional
        LAMMPS ``-var`` settings.
    resume : bool
        Continue the run in ``run_dir``.
    snap_prefix : path, optional
        For a linear SNAP model: re-export ``prefix.snapcoeff``/``.snapparam`` after every
        retrain (for native ``pair_style snap`` runs).

    Returns
    -------
    dict
        ``force_calls``, ``labels`` (new this run), ``labelled_steps`` (LAMMPS steps),
        ``decisions``, ``reference_calls``, ``calibration``, ``wall_time_s``, ``run_dir``;
        also written to ``run_dir/summary.json``.
    """
    import potlearn_ase
    from potlearn_ase.engines.lammps.driver import LammpsDriver
    from potlearn_ase.engines.lammps.native import snap_reexport_hook

    cfg = _as_config(config)
    reference = Reference.from_spec(cfg.reference)
    if reference.workers:  # the trust window of worker labels needs an MD that can rewind
        raise ConfigError(f"reference.workers: {reference.workers} worker processes need ASE "
                          "dynamics (potlearn otf); LAMMPS cannot rewind: give 0")
    run_dir = prepare_run_dir(cfg.run_dir, resume)
    trigger = trigger_from_config(cfg.trigger)
    store = LabelStore(run_dir / "labels.h5", mode="a")
    n_before = len(store)

    def make_learner(calc: CommitteeCalculator) -> OnTheFlyLearner:
        learner = OnTheFlyLearner(
            calc,
            reference,
            store,
            trigger,
            run_dir=run_dir,
            settings=cfg.settings,
            engine="lammps",
        )
        if resume:
            state = learner.load_checkpoint()
            calc.calibration = float(state.get("calibration", calc.calibration))
        if snap_prefix is not None:
            learner.on_label.append(snap_reexport_hook(snap_prefix))
        return learner

    try:
        if resume:
            adapter = LammpsLearnerAdapter(make_learner(potlearn_ase.load(run_dir / "model.pt")))
        elif model is not None:
            calc = model if isinstance(model, CommitteeCalculator) else potlearn_ase.load(model)
            adapter = LammpsLearnerAdapter(make_learner(calc))
        else:
            adapter = LammpsLearnerAdapter(
                lambda atoms: make_learner(_starting_model(cfg, atoms, reference, store))
            )
        driver = LammpsDriver(deck, step=adapter, elements=elements, variables=variables)
        t0 = time.perf_counter()
        try:
            driver.run()
        finally:
            driver.close()
        wall = time.perf_counter() - t0
        learner = adapter.learner
        if learner is None:
            raise ConfigError("the deck ran no force evaluation: nothing was learned")
        learner.flush()  # a batch window's last candidates
        learner.checkpoint(adapter.last_atoms, extra={"finished": True})
        summary: dict[str, Any] = {
            "force_calls": adapter.evaluations,
            "labels": len(store) - n_before,
            "labelled_steps": adapter.labelled_steps,
            "decisions": adapter.decisions,
            "reference_calls": learner.n_reference_calls,
            "reference_time_s": learner.state.reference_seconds,
            "calibration": learner.committee.calibration,
            "wall_time_s": wall,
            "run_dir": str(run_dir),
        }
    finally:
        store.close()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary
