"""Calibration of committee uncertainty on held-out data.

The committee spread is a relative measure; a single factor ``alpha`` scales every ``*_std``
so that the stated sigma covers the observed error as often as a Gaussian sigma should:
``|error| <= alpha * spread`` for 68.3 % of the force components of the validation data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from potlearn_ase.data.validate import get_labels, require_labels
from potlearn_ase.models.base import CommitteeModel

__all__ = ["ONE_SIGMA", "fit_calibration", "force_errors_and_spread"]

ONE_SIGMA = 0.6826894921370859


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
    ok = spread > 0
    if not np.any(ok):
        return 1.0
    ratio = np.abs(err[ok]) / spread[ok]
    return float(np.quantile(ratio, coverage))
