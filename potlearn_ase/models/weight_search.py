"""Weights of energy, force and stress rows chosen by cross-validation over structures.

A fixed ratio (30 : 1 : 1) cannot suit every data set, and the evidence (type-II maximum
likelihood, :mod:`~potlearn_ase.models.noise`) of a model that cannot fit its data exactly
trades one label type for another. Here the training structures are cut into folds, the
unit-weight normal equations of each label type are accumulated once per fold, and for each
pair of weights on a grid (energy and stress per atom, forces fixed at 1) every fold is
predicted by the model fitted to the others, in closed form. The weights kept minimise
``sum_t log RMSE_t`` over the label types present: each type's held-out error counts by its
relative change, whatever its unit, so none is sacrificed to the more numerous force rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from potlearn_ase.descriptors.base import Descriptor
from potlearn_ase.models.linear import LinearFitConfig
from potlearn_ase.models.noise import LabelBlocks, add_rows_by_type, row_structures, unit_rows
from potlearn_ase.models.posterior import NormalEquations, solve_posterior

__all__ = ["ENERGY_GRID", "STRESS_GRID", "WeightSearch", "accumulate_folds", "search_weights"]

log = logging.getLogger(__name__)

#: energy weights tried (1/(eV/atom)); the force weight is 1/(eV/A)
ENERGY_GRID: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0, 1000.0)
#: stress weights tried (1/(eV/atom) of the virial), when there are stress labels
STRESS_GRID: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0)


@dataclass
class WeightSearch:
    """Result of :func:`search_weights`.

    Attributes
    ----------
    energy_weight, stress_weight : float
        The weights kept (the force weight is 1).
    table : list of dict
        Every grid point: ``energy_weight``, ``stress_weight``, the held-out RMSE of each label
        type (``energy`` eV/atom, ``forces`` eV/A, ``stress`` eV/atom) and the ``score``.
    n_folds : int
        Number of folds of structures.
    """

    energy_weight: float
    stress_weight: float
    table: list[dict[str, float]]
    n_folds: int


def accumulate_folds(
    descriptor: Descriptor,
    frames: Sequence[Atoms],
    config: LinearFitConfig,
    n_folds: int,
    *,
    starts: Iterable[int] | None = None,
) -> list[LabelBlocks]:
    """Unit-weight label blocks of each fold; structure ``k`` goes to fold ``k % n_folds``.

    ``starts`` (the batch starts, e.g. wrapped in a progress bar) defaults to every
    ``config.batch_size``-th structure.
    """
    P = len(descriptor.elements) * (descriptor.n_features + 1)
    folds = [LabelBlocks.empty(P) for _ in range(n_folds)]
    if starts is None:
        starts = range(0, len(frames), config.batch_size)
    for start in starts:
        chunk = list(frames[start : start + config.batch_size])
        A, y, block = unit_rows(descriptor, chunk, config, start)  # one pass for every fold
        fold = (start + row_structures(block)) % n_folds
        for f in range(n_folds):
            add_rows_by_type(folds[f], A, y, block, fold == f)
    return folds


def _ridge_mean(ne: NormalEquations, alpha: float, unreg: np.ndarray) -> np.ndarray:
    """The posterior mean of :func:`solve_posterior` at a fixed ridge parameter (no
    covariance: one Cholesky solve)."""
    diag = np.diag(ne.AtA).copy()
    ref = float(np.mean(diag[diag > 0])) if np.any(diag > 0) else 1.0
    scale = np.sqrt(np.maximum(diag, 1e-12 * ref))
    prior = np.where(unreg, 1e-6, 1.0)
    H = ne.AtA / np.outer(scale, scale) + alpha * np.diag(prior)
    try:
        x = np.linalg.solve(H, ne.Aty / scale)
    except np.linalg.LinAlgError:
        x = np.linalg.lstsq(H, ne.Aty / scale, rcond=None)[0]
    return x / scale


def search_weights(
    folds: Sequence[LabelBlocks],
    n_species: int,
    config: LinearFitConfig,
    *,
    energy_grid: Sequence[float] = ENERGY_GRID,
    stress_grid: Sequence[float] = STRESS_GRID,
) -> WeightSearch:
    """Pick the energy and stress weights by cross-validation over the folds.

    The ridge parameter of each energy weight is that of the full data (``config.lam``, or
    its evidence maximum, at stress weight 1), reused by every stress weight and fold.
    """
    P = folds[0].parts[0].n_params
    unreg = np.zeros(P, dtype=bool)
    unreg[:: P // n_species] = True
    rows = np.sum([[ne.n_rows for ne in b.parts] for b in folds], axis=0)
    present = [t for t in range(3) if rows[t] > 0]
    if 0 not in present or 1 not in present:
        raise ValueError("a weight search needs energy and force rows")
    totals = [NormalEquations.weighted_sum([b.parts[t] for b in folds], [1.0] * len(folds))
              for t in range(3)]
    s_grid = tuple(stress_grid) if 2 in present else (1.0,)
    table: list[dict[str, float]] = []
    floor = config.sigma_floor * (config.force_weight or 1.0)
    for we in energy_grid:
        # the ridge parameter of the full data at this energy weight (stress weight 1, or the
        # only one), shared by the stress weights: one eigensystem per energy weight
        w2 = np.array([we, 1.0, 1.0 if 1.0 in s_grid else s_grid[0]]) ** 2
        alpha = solve_posterior(NormalEquations.weighted_sum(totals, w2), lam=config.lam,
                                sigma_floor=floor, unregularised=unreg, polish=False).lam
        for ws in s_grid:
            w2 = np.array([we, 1.0, ws]) ** 2
            sse = np.zeros(3)
            full = NormalEquations.weighted_sum(totals, w2)
            for held in folds:
                rest = full.without(NormalEquations.weighted_sum(held.parts, w2))
                theta = _ridge_mean(rest, alpha, unreg)
                sse += [held.parts[t].sse(theta) if held.parts[t].n_rows else 0.0
                        for t in range(3)]
            rmse = np.sqrt(sse / np.maximum(rows, 1))
            score = float(sum(np.log(rmse[t]) for t in present))
            row = {"energy_weight": float(we), "stress_weight": float(ws), "score": score}
            row.update({name: float(rmse[t]) for t, name in
                        zip(range(3), ("energy", "forces", "stress")) if t in present})
            table.append(row)
    best = min(table, key=lambda r: r["score"])
    log.info("weights by %d-fold cross-validation: energy %g, stress %g (held-out RMSE "
             "%.3g eV/atom, %.3g eV/A)", len(folds), best["energy_weight"],
             best["stress_weight"], best["energy"], best["forces"])
    return WeightSearch(best["energy_weight"], best["stress_weight"], table, len(folds))
