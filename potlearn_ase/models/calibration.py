"""Calibration of committee uncertainty on held-out data.

The committee spread is a relative measure; a single factor ``alpha`` scales every ``*_std``
so that the stated sigma covers the observed error as often as a Gaussian sigma should:
``|error| <= alpha * spread`` for 68.3 % of the force components of the validation data.

Two ways to get the held-out errors:

* :func:`fit_calibration` on a validation set the model never saw;
* :func:`cross_validated_calibration` for linear models without one: each fold of the
  *training* structures is taken out of the normal equations in closed form, the posterior is
  re-solved with the model's own regularisation rule and a committee of the same size is drawn;
  its errors on the held-out fold against its spread give the ratios. No structure has to be
  set aside, and no descriptor is computed twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from ase import Atoms

from potlearn_ase.data.validate import get_labels, require_labels
from potlearn_ase.models.base import CommitteeModel

__all__ = [
    "ONE_SIGMA",
    "calibrate",
    "cross_validated_calibration",
    "fit_calibration",
    "force_errors_and_spread",
]

ONE_SIGMA = 0.6826894921370859

log = logging.getLogger(__name__)


def calibrate(
    model: CommitteeModel,
    train: Sequence[Atoms],
    val: Sequence[Atoms] | None = None,
    *,
    coverage: float = ONE_SIGMA,
) -> tuple[float, str]:
    """The best calibration ``alpha`` the data allow, and what it was measured on.

    On ``val`` when given (:func:`fit_calibration`); otherwise, for a linear model with its
    normal equations, by cross-validation over its own training structures ``train``
    (:func:`cross_validated_calibration`); otherwise 1.0, with a warning.

    Returns
    -------
    (float, str)
        ``alpha`` and ``"validation"``, ``"cross-validation"`` or ``"none"``.
    """
    if val:
        return fit_calibration(model, val, coverage=coverage), "validation"
    if getattr(model, "normal_equations", None) is not None and len(train) >= 2:
        try:
            return cross_validated_calibration(model, train, coverage=coverage), "cross-validation"
        except (TypeError, ValueError) as exc:  # e.g. a fit without force rows
            log.warning("cross-validated calibration not possible (%s)", exc)
    log.warning("no validation structures: the committee spread is not calibrated (give some)")
    return 1.0, "none"


def force_errors_and_spread(
    model: CommitteeModel, frames: Sequence[Atoms]
) -> tuple[np.ndarray, np.ndarray]:
    """Force-component errors of the committee mean and the raw committee spread (eV/A)."""
    errors, spread = [], []
    for k, atoms in enumerate(frames):
        require_labels(atoms, energy=False, forces=True, where=f"validation structure {k}")
        pred = model.predict(atoms, stress=False)
        errors.append((pred["forces"].mean(0) - get_labels(atoms)["forces"]).ravel())
        spread.append(pred["forces"].std(0).ravel())
    return np.concatenate(errors), np.concatenate(spread)


def fit_calibration(
    model: CommitteeModel, frames: Sequence[Atoms], *, coverage: float = ONE_SIGMA
) -> float:
    """The factor ``alpha`` with ``P(|error| <= alpha * spread) = coverage`` on ``frames``.

    Returns 1.0 for a single-member committee (it has no spread to scale).
    """
    if model.n_members < 2:
        return 1.0
    err, spread = force_errors_and_spread(model, frames)
    return _ratio_quantile(err, spread, coverage)


def _ratio_quantile(err: np.ndarray, spread: np.ndarray, coverage: float) -> float:
    ok = spread > 0
    if not np.any(ok):
        return 1.0
    return float(np.quantile(np.abs(err[ok]) / spread[ok], coverage))


def cross_validated_calibration(
    model: CommitteeModel,
    frames: Sequence[Atoms],
    *,
    folds: int = 20,
    coverage: float = ONE_SIGMA,
    rng: np.random.Generator | int | None = 0,
) -> float:
    """``alpha`` of a linear committee from held-out folds of its own training structures.

    Parameters
    ----------
    model : LinearCommittee
        Fitted to exactly ``frames`` (its normal equations are checked against them).
    frames : sequence of ase.Atoms
        The training structures, with the labels the model was fitted to.
    folds : int
        Number of folds (leave-one-structure-out when there are at most this many structures).
    coverage : float
        Target fraction of force components within ``alpha * spread``.
    rng : numpy Generator or seed
        Draws each fold's committee.

    Raises
    ------
    TypeError
        For a model without normal equations (neural committees: use :func:`fit_calibration`
        on a validation set).
    ValueError
        When ``frames`` are not the structures the model was fitted to, or are fewer than 2.
    """
    from potlearn_ase.models.linear import LinearCommittee, design_rows

    if not isinstance(model, LinearCommittee) or model.normal_equations is None:
        raise TypeError(
            "cross-validated calibration needs a linear model with its normal equations; "
            "calibrate other models with fit_calibration on validation structures"
        )
    if model.config.force_weight <= 0:
        raise ValueError("cross-validated calibration uses force errors: force_weight is 0")
    if model.n_members < 2:
        return 1.0
    if len(frames) < 2:
        raise ValueError("cross-validated calibration needs at least 2 training structures")
    rows = []
    for k, atoms in enumerate(frames):
        require_labels(atoms, energy=True, forces=True, where=f"training structure {k}")
        A, y, w = design_rows(model.descriptor, [atoms], model.config)
        rows.append((A, y, w, 1 + 3 * len(atoms)))  # energy row first, then the forces
    ne = model.normal_equations
    n_rows = sum(int(np.count_nonzero(r[2])) for r in rows)
    if n_rows != ne.n_rows:
        raise ValueError(
            f"these {len(frames)} structures give {n_rows} rows, but "
            f"the model was fitted to {ne.n_rows}: pass exactly its training structures"
        )
    gen = np.random.default_rng(rng)
    order = gen.permutation(len(frames))
    n_folds = min(int(folds), len(frames))
    errors, spreads = [], []
    for fold in np.array_split(order, n_folds):
        held = ne.copy()
        for i in fold:
            held.remove(*rows[i][:3])
        draws = model.solve_posterior(held).sample(model.n_members, rng=gen)  # (M, P)
        for i in fold:
            A, y, _, stop = rows[i]
            pred = A[1:stop] @ draws.T  # (3N, M): dE/dx of each member, i.e. -F
            errors.append(pred.mean(axis=1) - y[1:stop])
            spreads.append(pred.std(axis=1))
    return _ratio_quantile(np.concatenate(errors), np.concatenate(spreads), coverage)
