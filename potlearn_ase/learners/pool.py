"""Pool-based active learning: label the most informative structures of a fixed pool.

Where the on-the-fly learner watches one trajectory, the pool learner is handed many
candidate structures at once (an MD archive, a structure database) and chooses which to send
to the reference:

1. a small **seed** set is picked by farthest-point sampling of the structure features;
2. a committee is **trained** on every label in the store (linear ACE by default);
3. the unlabelled pool is **scored** by the committee spread (``max_force_std``, the largest
   per-atom norm of the force standard deviation over members) and/or by the
   **extrapolation grade** of the atoms' descriptors against a maxvol active set of the
   labelled atoms (:class:`~potlearn_ase.models.active_set.ActiveSet`);
4. a **batch** is picked by uncertainty, representativeness and diversity. The default rule,
   ``variance`` (:mod:`~potlearn_ase.selection.variance`), takes one structure at a time: the
   one whose label would most reduce the posterior variance of a Gaussian process (RBF kernel
   on the structure features) summed over the scored pool, each pool structure weighted by
   its squared score (scaled to a maximum of 1), conditioned on everything labelled and on
   the batch so far. A label counts for every uncertain structure it informs, so uncertain
   structures in dense regions go first, lone outliers later, and near-duplicates of labelled
   or batched structures not at all. The older rules pick among the
   ``candidate_factor x batch`` most uncertain candidates by greedy k-DPP MAP (``dpp``) or
   farthest-point sampling (``fps``);
5. the batch is **labelled** through a :class:`~potlearn_ase.learners.reference.Reference`
   into a :class:`~potlearn_ase.data.store.LabelStore` (as the on-the-fly learner does), the
   model is **updated** in closed form (``model.update``), and steps 3-5 repeat until the
   budget is spent or the validation force RMSE reaches ``target_rmse``.

Resuming is rerunning: structures of the pool already in the store are recognised by their
content hash and never relabelled; failed ones are not retried; the learning curve of the
earlier runs in ``run_dir`` is continued.

The saved ``model.pt`` is calibrated (on the validation structures, or by cross-validation
over the labels) and carries the active set of the labelled structures, like the model of
``potlearn fit``.

Every round appends a point to the learning curve (labels against the validation force RMSE
when validation structures are given, and always the prequential force RMSE of each new
batch, measured before its labels are used), written to ``learning_curve.json`` and
``learning_curve.png`` in ``run_dir``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase._moved import RENAMED_CONFIGS, moved_attribute
from potlearn_ase.calculators.committee import CommitteeCalculator
from potlearn_ase.data.store import LabelStore
from potlearn_ase.data.validate import get_labels
from potlearn_ase.descriptors.base import Descriptor
from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.pool_settings import DIVERSITY, PoolConfig
from potlearn_ase.learners.reference import Reference
from potlearn_ase.models.active_set import ActiveSet, attach_active_set, species_indices
from potlearn_ase.models.calibration import calibrate
from potlearn_ase.models.linear import LinearCommittee, LinearFitConfig, fit_linear
from potlearn_ase.selection import fps
from potlearn_ase.selection.dpp import DPPSelector
from potlearn_ase.selection.kernels import descriptor_features, standardize
from potlearn_ase.selection.variance import VarianceSelector, variance_reduction

__all__ = ["DIVERSITY", "PoolLearner", "PoolConfig"]

log = logging.getLogger(__name__)

class PoolLearner:
    """Active learning over a fixed pool of candidate structures.

    Parameters
    ----------
    pool : sequence of ase.Atoms
        Candidates; any labels they carry are ignored (the reference labels them).
    descriptor : Descriptor
        Descriptor of the linear committee (and of the selection features).
    reference : Reference
        The labelling calculator.
    store : LabelStore
        Durable labels; the model is trained on every label it holds.
    settings : PoolConfig
    validation : sequence of ase.Atoms, optional
        Labelled structures for the learning curve and ``target_rmse``.
    fit_config : LinearFitConfig, optional
    run_dir : path, optional
        Where ``learning_curve.json``/``.png`` and ``model.pt`` are written.
    """

    def __init__(
        self,
        pool: Sequence[Atoms],
        descriptor: Descriptor,
        reference: Reference,
        store: LabelStore,
        *,
        settings: PoolConfig | None = None,
        validation: Sequence[Atoms] | None = None,
        fit_config: LinearFitConfig | None = None,
        run_dir: str | os.PathLike | None = None,
    ):
        if len(pool) == 0:
            raise ConfigError("the pool holds no structures")
        self.pool = [a.copy() for a in pool]
        for a in self.pool:
            a.calc = None
        self.descriptor = descriptor
        self.reference = reference
        self.store = store
        self.settings = settings or PoolConfig()
        self.validation = list(validation) if validation is not None else None
        if self.settings.target_rmse is not None and not self.validation:
            raise ConfigError("target_rmse needs validation structures to measure the error on")
        self.fit_config = fit_config or LinearFitConfig()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.model: LinearCommittee | None = None
        self.curve: list[dict[str, Any]] = []
        self.n_reference_calls = 0
        self._rng = np.random.default_rng(self.settings.seed)
        self._density: np.ndarray | None = None
        self._factors: np.ndarray | None = None
        feats, (self._atom_features, self._atom_index) = descriptor_features(
            self.pool, descriptor, reduce=self.settings.reduce, per_atom=True
        )
        self.features = feats
        self._species = species_indices(
            descriptor.elements, np.concatenate([a.numbers for a in self.pool])
        )
        self.labelled = np.array([store.find(a) is not None for a in self.pool])
        self.failed = np.array(
            [not lab and store.find_failure(a) is not None
             for a, lab in zip(self.pool, self.labelled)]
        )
        if self.labelled.any():
            log.info("resuming: %d pool structures already labelled", int(self.labelled.sum()))
            from potlearn_ase.learners.report import read_learning_curve

            self.curve = read_learning_curve(self.run_dir, self.n_labelled)

    # ------------------------------------------------------------------ properties
    @property
    def n_labelled(self) -> int:
        """Pool structures with a stored label."""
        return int(self.labelled.sum())

    @property
    def available(self) -> np.ndarray:
        """Indices of pool structures neither labelled nor failed."""
        return np.flatnonzero(~self.labelled & ~self.failed)

    # ------------------------------------------------------------------ labelling
    def label(self, indices: Sequence[int]) -> list[Atoms]:
        """Label pool structures (reusing stored labels); return the new labelled ones."""
        out = []
        for i in indices:
            i = int(i)
            atoms = self.pool[i]
            found = self.store.find(atoms)
            if found is not None:
                self.labelled[i] = True
                continue
            res = self.reference.label(atoms)
            self.n_reference_calls += 1
            prov = {
                "reference": self.reference.name,
                "reference_params": self.reference.params,
                "engine": "pool",
                "pool_index": i,
                "wall_time": float(res.wall_time),
                "timestamp": time.time(),
            }
            if not res.ok or res.atoms is None:
                self.store.append_failure(atoms, provenance=prov, error=str(res.error))
                self.failed[i] = True
                log.warning("reference failed on pool structure %d: %s", i, res.error)
                continue
            self.store.append(res.atoms, provenance=prov)
            self.labelled[i] = True
            out.append(res.atoms)
        return out

    # ------------------------------------------------------------------ model
    def _seed(self) -> int:
        return int(self._rng.integers(2**31 - 1))

    def train(self, new: Sequence[Atoms] | None = None) -> LinearCommittee:
        """Fit on every stored label, or add ``new`` labels to the current model."""
        if self.model is None or new is None:
            frames = self.store.frames()
            if not frames:
                raise ConfigError("no labelled structures to train on")
            self.model = fit_linear(self.descriptor, frames, self.fit_config, rng=self._seed())
        elif new:
            self.model.update(list(new), rng=self._seed())
        return self.model

    def force_rmse(self, frames: Sequence[Atoms]) -> float:
        """Force RMSE (eV/A) of the committee mean on labelled ``frames``."""
        assert self.model is not None
        err = [
            self.model.predict(a, stress=False)["forces"].mean(0) - get_labels(a)["forces"]
            for a in frames
        ]
        return float(np.sqrt(np.mean(np.concatenate([e.ravel() for e in err]) ** 2)))

    # ------------------------------------------------------------------ scoring
    def sigma(self, indices: Sequence[int]) -> np.ndarray:
        """``max_force_std`` (uncalibrated, eV/A) of pool structures."""
        assert self.model is not None
        out = np.empty(len(indices))
        for n, i in enumerate(indices):
            F = self.model.predict(self.pool[int(i)], stress=False)["forces"]
            out[n] = float(np.linalg.norm(F.std(0), axis=1).max())
        return out

    def gamma(self, indices: Sequence[int]) -> np.ndarray:
        """Extrapolation grade of pool structures: the worst atom's, against a maxvol active
        set of the labelled atoms of the same element (columns scaled by labelled RMS)."""
        idx = np.asarray(indices, dtype=np.int64)
        lab_atoms = self.labelled[self._atom_index]
        want = np.isin(self._atom_index, idx)
        active = ActiveSet.from_features(
            self.descriptor.elements, self._atom_features[lab_atoms], self._species[lab_atoms]
        )
        grade = np.zeros(len(self._atom_index))
        grade[want] = active.grade_array(self._atom_features[want], self._species[want])
        per = np.zeros(len(self.pool))
        np.maximum.at(per, self._atom_index[want], grade[want])
        return per[idx]

    def density(self) -> np.ndarray:
        """Mean RBF similarity of each pool structure to (a sample of) the pool, in (0, 1].

        Standardised structure features; the length scale is the median squared distance.
        """
        if self._density is None:
            X = standardize(self.features) if len(self.features) > 1 else self.features
            gen = np.random.default_rng(self.settings.seed + 7919)
            ref = X[gen.choice(len(X), min(len(X), 2000), replace=False)]
            d2 = np.maximum(
                (X**2).sum(1)[:, None] + (ref**2).sum(1)[None] - 2.0 * X @ ref.T, 0.0
            )
            scale = float(np.median(d2)) or 1.0
            self._density = np.exp(-d2 / scale).mean(axis=1)
        return self._density

    def score(self, indices: Sequence[int]) -> np.ndarray:
        """The selection score of ``settings.score`` (larger = more informative)."""
        kind = self.settings.score
        if kind == "sigma":
            return self.sigma(indices)
        if kind == "gamma":
            return self.gamma(indices)
        ranks = [np.argsort(np.argsort(s)) for s in (self.sigma(indices), self.gamma(indices))]
        return (ranks[0] + ranks[1]) / (2.0 * max(1, len(indices) - 1))

    def pick(self, k: int) -> np.ndarray:
        """The next ``k`` pool indices: top-scored candidates thinned for diversity."""
        avail = self.available
        k = min(k, len(avail))
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        s = self.settings
        n_random = int(round(s.explore * k))
        if n_random:
            explore = np.sort(self._rng.choice(avail, n_random, replace=False))
            avail = np.setdiff1d(avail, explore)
            k -= n_random
            if k == 0 or len(avail) == 0:
                return explore
            return np.concatenate([self._pick_by_score(avail, k), explore])
        return self._pick_by_score(avail, k)

    def _pick_by_score(self, avail: np.ndarray, k: int) -> np.ndarray:
        s = self.settings
        cand = avail
        if s.max_scored is not None and len(cand) > s.max_scored:
            cand = np.sort(self._rng.choice(cand, s.max_scored, replace=False))
        score = self.score(cand)
        score = np.where(np.isfinite(score), score, np.nanmax(score[np.isfinite(score)],
                                                              initial=1.0) * 10)
        if s.density > 0:
            score = score * self.density()[cand] ** s.density
        if s.diversity == "variance":
            return self._pick_variance(cand, score, k)
        order = np.argsort(-score, kind="stable")[: max(k, s.candidate_factor * k)]
        top, top_score = cand[order], score[order]
        if s.diversity == "none" or len(top) == k:
            return top[:k]
        X = standardize(self.features)[top] if self.features.shape[0] > 1 else self.features[top]
        if s.diversity == "fps":
            return top[fps.select(X, k, start=0)]
        q = top_score / top_score.max() if top_score.max() > 0 else np.ones(len(top))
        return top[DPPSelector(mode="map", standardize=False).select(X, k, quality=q)]

    def _pick_variance(self, cand: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
        """Greedy variance reduction over the scored pool, weighted by the squared score."""
        if self._factors is None:
            self._factors = VarianceSelector().factors(self.features, rng=self.settings.seed)
        weights = np.zeros(len(self.pool))
        weights[cand] = (score / score.max()) ** 2 if score.max() > 0 else 1.0
        return variance_reduction(
            self._factors, k, weights=weights, labelled=np.flatnonzero(self.labelled),
            candidates=cand,
        )

    # ------------------------------------------------------------------ loop
    def run(self, *, callback: Callable[[PoolLearner], None] | None = None) -> dict[str, Any]:
        """Seed, then score - pick - label - update until the budget or the target.

        ``callback(learner)`` runs after every (re)training.

        Returns
        -------
        dict
            Summary: labels, reference calls, failures, final validation RMSE, the curve.
        """
        s = self.settings
        t0 = time.perf_counter()
        n_seed = min(s.n_seed, s.budget, len(self.pool)) - self.n_labelled
        if n_seed > 0:
            avail = self.available
            X = standardize(self.features[avail]) if len(avail) > 1 else self.features[avail]
            self.label(avail[fps.select(X, min(n_seed, len(avail)), rng=self._seed())])
        self.train()
        self._record(None)
        if callback is not None:
            callback(self)
        while self.n_labelled < s.budget and len(self.available) and not self._reached():
            batch = self.pick(min(s.batch_size, s.budget - self.n_labelled))
            new = self.label(batch)
            prequential = self.force_rmse(new) if new else None
            self.train(new)
            self._record(prequential)
            if callback is not None:
                callback(self)
            log.info("pool AL: %d labels, curve %s", self.n_labelled, self.curve[-1])
        summary = {
            "n_labelled": self.n_labelled,
            "n_reference_calls": self.n_reference_calls,
            "n_failed": int(self.failed.sum()),
            "val_force_rmse": self.curve[-1].get("val_force_rmse"),
            "wall_time_s": time.perf_counter() - t0,
            "settings": asdict(s),
            "curve": self.curve,
        }
        self._write(summary)
        return summary

    def _reached(self) -> bool:
        target = self.settings.target_rmse
        last = self.curve[-1].get("val_force_rmse") if self.curve else None
        return target is not None and last is not None and last <= target

    def _record(self, prequential: float | None) -> None:
        point: dict[str, Any] = {"n_labels": self.n_labelled, "batch_force_rmse": prequential}
        if self.validation:
            point["val_force_rmse"] = self.force_rmse(self.validation)
        last = self.curve[-1] if self.curve else None
        if last is not None and last.get("n_labels") == self.n_labelled and prequential is None:
            # a resumed run's first fit: same labels as the last point, which it refreshes
            point["batch_force_rmse"] = last.get("batch_force_rmse")
            self.curve[-1] = point
        else:
            self.curve.append(point)

    def _write(self, summary: dict[str, Any]) -> None:
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "learning_curve.json", "w") as fh:
            json.dump(summary, fh, indent=2)
        from potlearn_ase.learners.report import plot_learning_curve

        plot_learning_curve(self.curve, self.run_dir / "learning_curve.png")
        if self.model is not None:
            self.calculator().save(self.run_dir / "model.pt")

    def calculator(self) -> CommitteeCalculator:
        """The current model as a calculator: calibrated on the validation structures when
        given, else by cross-validation over the labels, with the labels' active set."""
        if self.model is None:
            raise ConfigError("no model yet: run the learner first")
        frames = self.store.frames()
        alpha, on = calibrate(self.model, frames, self.validation)
        attach_active_set(self.model, frames)
        metrics: dict[str, Any] = {"n_train": len(frames), "calibrated_on": on}
        if self.validation:
            metrics["val_force_rmse"] = self.force_rmse(self.validation)
        return CommitteeCalculator(model=self.model, calibration=alpha, metrics=metrics)


__getattr__ = moved_attribute(__name__, RENAMED_CONFIGS)
