"""On-the-fly learning under i-PI: the learner watches every bead evaluation.

i-PI asks the driver for one structure at a time (one bead of one step of a path-integral
run); the adapter hands each to :meth:`~potlearn_ase.learners.otf.OnTheFlyLearner.step` and
returns the learner's results to i-PI. A bead whose calibrated force spread passes the trigger
is labelled by the reference; its reference energy and forces go back to i-PI for that
evaluation, and the committee members in the extras are re-centred on them (see
:mod:`potlearn_ase.engines.ipi.client`). The model is updated before the next bead.

i-PI cannot be rewound from the driver: a *reject* decision is logged and counted, and the
committee prediction is returned (widen ``reject_above`` or leave it out under i-PI).
Temperatures are not known to the driver (i-PI sends no momenta) and are recorded as None.
A killed run continues with ``potlearn ipi --learn config.yaml --resume`` (the labels, the
model and the counters of ``run_dir``; no reference call is repeated); without ``--resume`` a
``run_dir`` that holds a run is refused.

The ``potlearn ipi --learn config.yaml`` configuration (:class:`IPILearnConfig`)::

    reference: emt                 # or a mapping, see Reference.from_spec
    trigger: {kind: fixed, max_force_std: 0.05, min_gap: 4}
    run_dir: ipi-otf               # labels.h5, model.pt, state.json, summary.json
    settings: {seed: 0}            # OTFConfig
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from ase import Atoms

from potlearn_ase.calculators.committee import CommitteeCalculator
from potlearn_ase.config import load_config
from potlearn_ase.data.store import LabelStore
from potlearn_ase.engines.ipi.client import IPIClient
from potlearn_ase.engines.learning import EngineLearnConfig, prepare_run_dir
from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.otf import OnTheFlyLearner
from potlearn_ase.learners.reference import Reference
from potlearn_ase.learners.triggers import Decision, trigger_from_config

__all__ = ["IPILearnConfig", "IPILearnerAdapter", "run_ipi_learning"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IPILearnConfig(EngineLearnConfig):
    """Configuration of ``potlearn ipi --learn`` (the keys of :class:`EngineLearnConfig`)."""

    run_dir: str = "ipi-otf"


class IPILearnerAdapter:
    """The evaluator an :class:`IPIClient` calls: one learner step per structure i-PI sends.

    Parameters
    ----------
    learner : OnTheFlyLearner
        The learner (its calculator is the committee being learned).

    Attributes
    ----------
    labelled_requests : list of int
        i-PI request id (the bead, for one system) of every labelled evaluation, in order.
    decisions : dict
        Counts of each decision.
    """

    def __init__(self, learner: OnTheFlyLearner):
        self.learner = learner
        self.labelled_requests: list[int] = []
        self.decisions: dict[str, int] = {d.name.lower(): 0 for d in Decision}
        self.evaluations = 0

    def __call__(self, atoms: Atoms, request_id: int) -> dict[str, Any]:
        # the learner may keep the structure (store, checkpoint): give it its own copy
        self.learner.state.md_step = self.evaluations  # i-PI evaluations (beads x steps)
        results, decision = self.learner.step(atoms.copy())
        self.evaluations += 1
        self.decisions[decision.name.lower()] += 1
        if decision is Decision.REJECT:
            log.warning(
                "learner step %d (i-PI request %d) rejected: i-PI cannot rewind, the committee "
                "prediction is used", self.learner.state.step - 1, request_id,
            )
        if results.get("labelled"):
            self.labelled_requests.append(int(request_id))
        self.learner.state.md_step = self.evaluations
        return results


def run_ipi_learning(
    calculator: CommitteeCalculator,
    atoms: Atoms,
    config: IPILearnConfig | dict[str, Any] | str | os.PathLike,
    *,
    resume: bool = False,
    **client_kwargs: Any,
) -> dict[str, Any]:
    """Serve ``calculator`` to i-PI while learning on the fly; returns the run summary.

    Parameters
    ----------
    calculator : CommitteeCalculator
        The starting committee; it is updated in place after each label.
    atoms : Atoms
        The structure i-PI starts from (species, periodicity).
    config : IPILearnConfig, mapping or path of a YAML file
        See :class:`IPILearnConfig`.
    resume : bool
        Continue the run in ``run_dir``: its ``model.pt``, counters and calibration replace
        ``calculator``'s model. Without it, a ``run_dir`` that holds a run is refused.
    **client_kwargs
        Passed to :class:`IPIClient` (``unixsocket=``, ``port=``, ``sockets_prefix=``, ...).

    Returns
    -------
    dict
        ``evaluations``, ``labels`` (new this run), ``labelled_requests``, ``decisions``,
        ``reference_calls``, ``calibration``, ``wall_time_s``, ``ms_per_evaluation``; also
        written to ``run_dir/summary.json``.
    """
    cfg = load_config(IPILearnConfig, config)
    reference = Reference.from_spec(cfg.reference)
    if reference.workers:  # the trust window of worker labels needs an MD that can rewind
        raise ConfigError(f"reference.workers: {reference.workers} worker processes need ASE "
                          "dynamics (potlearn otf); i-PI cannot rewind: give 0")
    run_dir = prepare_run_dir(cfg.run_dir, resume)
    if resume:
        from potlearn_ase.calculators.committee import load

        saved = load(run_dir / "model.pt")
        calculator.set_model(saved.model, calibration=saved.calibration)
    trigger = trigger_from_config(cfg.trigger)
    store = LabelStore(run_dir / "labels.h5", mode="a")
    try:
        n_before = len(store)
        learner = OnTheFlyLearner(
            calculator, reference, store, trigger, run_dir=run_dir, settings=cfg.settings,
            engine="ipi",
        )
        if resume:
            state = learner.load_checkpoint()
            calculator.calibration = float(state.get("calibration", calculator.calibration))
        adapter = IPILearnerAdapter(learner)
        client = IPIClient(atoms, adapter, **client_kwargs)
        t0 = time.perf_counter()
        stats = client.run()
        wall = time.perf_counter() - t0
        learner.flush()  # a batch window's last candidates
        learner.checkpoint(extra={"finished": True})
        summary: dict[str, Any] = {
            "evaluations": adapter.evaluations,
            "labels": len(store) - n_before,
            "labelled_requests": adapter.labelled_requests,
            "decisions": adapter.decisions,
            "reference_calls": learner.n_reference_calls,
            "reference_time_s": learner.state.reference_seconds,
            "calibration": calculator.calibration,
            "wall_time_s": wall,
            "ms_per_evaluation": 1e3 * stats.served_seconds / max(stats.evaluations, 1),
        }
    finally:
        store.close()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary
