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
    "calibrate_by_type",
    "fit_calibration_factors",
    "cross_validated_calibration",
    "cross_validated_factors",
    "fit_calibration",
    "force_errors_and_spread",
    "fit_error_model",
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


def calibrate_by_type(
    model: CommitteeModel,
    train: Sequence[Atoms],
    val: Sequence[Atoms] | None = None,
    *,
    coverage: float = ONE_SIGMA,
    progress: bool = False,
) -> tuple[dict[str, float], str]:
    """Calibration factors for forces and energies, and what they were measured on.

    As :func:`calibrate`, with a separate factor for structures' energies: on ``val``
    (:func:`fit_calibration_factors`), else by cross-validation of a linear model
    (:func:`cross_validated_factors`), else 1.0 with a warning.

    Returns
    -------
    (dict, str)
        ``{"forces": alpha_F, "energy": alpha_E}`` and ``"validation"``,
        ``"cross-validation"`` or ``"none"``.
    """
    if val:
        return fit_calibration_factors(model, val, coverage=coverage), "validation"
    if getattr(model, "normal_equations", None) is not None and len(train) >= 2:
        try:
            factors = cross_validated_factors(model, train, coverage=coverage, progress=progress)
            return factors, "cross-validation"
        except (TypeError, ValueError) as exc:  # e.g. a fit without force rows
            log.warning("cross-validated calibration not possible (%s)", exc)
    log.warning("no validation structures: the committee spread is not calibrated (give some)")
    return {"forces": 1.0, "energy": 1.0}, "none"


def fit_calibration_factors(
    model: CommitteeModel, frames: Sequence[Atoms], *, coverage: float = ONE_SIGMA
) -> dict[str, float]:
    """``{"forces": alpha_F, "energy": alpha_E}`` measured on validation ``frames``.

    ``alpha_F`` is :func:`fit_calibration`; ``alpha_E`` the same quantile for the energies of
    the structures (``alpha_F`` when there are fewer than 5 structures).
    """
    if model.n_members < 2:
        return {"forces": 1.0, "energy": 1.0}
    f_err, f_spread, e_err, e_spread = [], [], [], []
    for k, atoms in enumerate(frames):
        require_labels(atoms, energy=True, forces=True, where=f"validation structure {k}")
        pred = model.predict(atoms, stress=False)
        labels = get_labels(atoms)
        f_err.append((pred["forces"].mean(0) - labels["forces"]).ravel())
        f_spread.append(pred["forces"].std(0).ravel())
        e_err.append(float(pred["energy"].mean()) - float(labels["energy"]))
        e_spread.append(float(pred["energy"].std()))
    alpha_f = _ratio_quantile(np.concatenate(f_err), np.concatenate(f_spread), coverage)
    alpha_e = alpha_f
    if len(frames) >= 5:
        alpha_e = _ratio_quantile(np.array(e_err), np.array(e_spread), coverage)
    return {"forces": alpha_f, "energy": alpha_e}


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
    """``alpha`` of a linear committee's forces from held-out folds of its own training
    structures (the ``"forces"`` entry of :func:`cross_validated_factors`)."""
    return cross_validated_factors(model, frames, folds=folds, coverage=coverage, rng=rng)[
        "forces"
    ]


def cross_validated_factors(
    model: CommitteeModel,
    frames: Sequence[Atoms],
    *,
    folds: int = 20,
    coverage: float = ONE_SIGMA,
    rng: np.random.Generator | int | None = 0,
    progress: bool = False,
    unit: str = "structures",
) -> dict[str, float]:
    """Calibration factors of a linear committee from held-out folds of its training data.

    Parameters
    ----------
    model : LinearCommittee
        Fitted to exactly ``frames`` (its normal equations are checked against them).
    frames : sequence of ase.Atoms
        The training structures, with the labels the model was fitted to.
    folds : int
        Number of folds (leave-one-structure-out when there are at most this many structures).
    coverage : float
        Target fraction of held-out errors within ``alpha * spread``.
    rng : numpy Generator or seed
        Draws each fold's committee.
    progress : bool
        Show a progress bar over the structures and the folds.
    unit : {"structures", "atoms"}
        What a fold holds out: whole structures, or the force rows of a random subset of
        each structure's atoms (their energy and stress rows stay in). Atom folds work from a
        single structure, so an on-the-fly run has an honest sigma from its first label.

    Returns
    -------
    dict
        ``{"forces": alpha_F, "energy": alpha_E, "forces_epistemic": a, "forces_misfit":
        n}``: the factor for force components and for structures' energies (``alpha_E``
        equals ``alpha_F`` when there are fewer than 5 structures to judge energies by, or
        with atom folds), and the force error model of :func:`fit_error_model`.

    Raises
    ------
    TypeError
        For a model without normal equations (neural committees: use :func:`fit_calibration`
        on a validation set).
    ValueError
        When ``frames`` are not the structures the model was fitted to, or are fewer than 2.
    """
    from potlearn_ase.models.design import design_rows_by_type
    from potlearn_ase.models.linear import LinearCommittee

    if not isinstance(model, LinearCommittee) or model.normal_equations is None:
        raise TypeError(
            "cross-validated calibration needs a linear model with its normal equations; "
            "calibrate other models with fit_calibration on validation structures"
        )
    config = model.config.fixed()
    if config.force_weight == 0:
        raise ValueError("cross-validated calibration uses force errors: force_weight is 0")
    if model.n_members < 2:
        return {"forces": 1.0, "energy": 1.0}
    if unit not in ("structures", "atoms"):
        raise ValueError(f"unit must be 'structures' or 'atoms', got {unit!r}")
    if unit == "structures" and len(frames) < 2:
        raise ValueError("cross-validated calibration needs at least 2 training structures")
    if unit == "atoms" and (not frames or min(len(a) for a in frames) < 2):
        raise ValueError("atom-fold calibration needs structures of at least 2 atoms")
    rows = []
    starts = range(0, len(frames), config.batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="calibration rows", unit="batch")
    for start in starts:
        chunk = list(frames[start : start + config.batch_size])
        for k, atoms in enumerate(chunk):
            require_labels(atoms, energy=True, forces=True, where=f"training structure {start + k}")
        A, y, w, block = design_rows_by_type(model.descriptor, chunk, config, start)
        bounds = [*np.flatnonzero(block == 0).tolist(), len(block)]
        for i, j in zip(bounds[:-1], bounds[1:]):  # one structure: energy, forces, stress
            rows.append((A[i:j], y[i:j], w[i:j], block[i:j]))
    ne = model.normal_equations
    n_rows = sum(int(np.count_nonzero(r[2])) for r in rows)
    if n_rows != ne.n_rows:
        raise ValueError(
            f"these {len(frames)} structures give {n_rows} rows, but "
            f"the model was fitted to {ne.n_rows}: pass exactly its training structures"
        )
    gen = np.random.default_rng(rng)
    if unit == "atoms":
        return _atom_fold_factors(model, ne, rows, folds, coverage, gen)
    order = gen.permutation(len(frames))
    n_folds = min(int(folds), len(frames))
    f_err, f_spread, e_err, e_spread = [], [], [], []
    fold_list = np.array_split(order, n_folds)
    if progress:
        from tqdm.auto import tqdm

        fold_list = tqdm(fold_list, desc="calibration folds", unit="fold")
    for fold in fold_list:
        held = ne.copy()
        for i in fold:
            held.remove(*rows[i][:3])
        draws = model.solve_posterior(held).sample(model.n_members, rng=gen)  # (M, P)
        for i in fold:
            A, y, _, block = rows[i]
            pred = A @ draws.T  # (rows, M): per-atom energy, dE/dx (= -F), virial per atom
            err, spread = pred.mean(axis=1) - y, pred.std(axis=1)
            f_err.append(err[block == 1])
            f_spread.append(spread[block == 1])
            e_err.append(err[block == 0])
            e_spread.append(spread[block == 0])
    alpha_f = _ratio_quantile(np.concatenate(f_err), np.concatenate(f_spread), coverage)
    alpha_e = alpha_f
    if len(frames) >= 5:
        alpha_e = _ratio_quantile(np.concatenate(e_err), np.concatenate(e_spread), coverage)
    return {"forces": alpha_f, "energy": alpha_e,
            **_error_model_keys(f_err, f_spread, coverage)}


def _atom_fold_factors(model, ne, rows, folds: int, coverage: float, gen) -> dict[str, float]:
    """Force factors from folds of atoms: each fold takes the force rows of about
    ``1/folds`` of every structure's atoms out of the normal equations, re-solves and draws a
    committee, and judges it on those held-out force components."""
    masks = []  # per structure: the fold of each force row (all three components of an atom)
    n_folds = int(folds)
    for _, _, _, block in rows:
        n_atoms = int(np.count_nonzero(block == 1)) // 3
        n_folds = min(n_folds, n_atoms)
    for _, _, _, block in rows:
        n_atoms = int(np.count_nonzero(block == 1)) // 3
        fold_of_atom = np.empty(n_atoms, dtype=np.int64)
        for f, idx in enumerate(np.array_split(gen.permutation(n_atoms), n_folds)):
            fold_of_atom[idx] = f
        fold_of_row = np.full(len(block), -1)
        fold_of_row[block == 1] = np.repeat(fold_of_atom, 3)
        masks.append(fold_of_row)
    f_err, f_spread = [], []
    for f in range(n_folds):
        held = ne.copy()
        for (A, y, w, _), fold_of_row in zip(rows, masks):
            m = fold_of_row == f
            held.remove(A[m], y[m], w[m])
        draws = model.solve_posterior(held).sample(model.n_members, rng=gen)
        for (A, y, _, _), fold_of_row in zip(rows, masks):
            m = fold_of_row == f
            pred = A[m] @ draws.T
            f_err.append(pred.mean(axis=1) - y[m])
            f_spread.append(pred.std(axis=1))
    alpha = _ratio_quantile(np.concatenate(f_err), np.concatenate(f_spread), coverage)
    return {"forces": alpha, "energy": alpha, **_error_model_keys(f_err, f_spread, coverage)}


def _error_model_keys(f_err: list, f_spread: list, coverage: float) -> dict[str, float]:
    """``forces_epistemic`` and ``forces_misfit``: :func:`fit_error_model` of the held-out
    force errors (the spread's factor with the misfit set apart, and the misfit, eV/A)."""
    alpha, noise = fit_error_model(
        np.concatenate(f_err), np.concatenate(f_spread), coverage=coverage
    )
    return {"forces_epistemic": alpha, "forces_misfit": noise}


def fit_error_model(
    err: np.ndarray,
    spread: np.ndarray,
    *,
    coverage: float = ONE_SIGMA,
    floor: float = 1.0,
) -> tuple[float, float]:
    """The committee's error model ``|error| ~ sqrt((alpha * spread)^2 + noise^2)``.

    The error a model makes on new data is a reducible (epistemic) part, which the committee
    spread ranks and more labels shrink, plus a misfit ``noise`` that the model cannot remove.
    ``alpha`` and ``noise`` are the maximum-likelihood values for Gaussian errors with that
    variance, then scaled together so that ``coverage`` of the errors lie within the model's
    sigma. ``alpha`` is at least ``floor``: where the spread does not rank the errors (the
    misfit explains them all) the Bayesian posterior's own scale, 1, is kept, so that a
    structure unlike the data still shows its spread.

    Returns
    -------
    (alpha, noise)
        Dimensionless, and in the unit of ``err`` (eV/A for force components).
    """
    from scipy.optimize import minimize

    err, spread = np.abs(np.asarray(err, float)), np.asarray(spread, float)
    ok = (spread > 0) & np.isfinite(err) & np.isfinite(spread)
    err, spread = err[ok], spread[ok]
    if err.size == 0:
        return floor, 0.0
    e2, s2 = err**2, spread**2
    scale = float(np.sqrt(np.mean(e2))) or 1.0

    def nll(x: np.ndarray) -> float:
        v = np.exp(2 * x[0]) * s2 + (np.exp(x[1]) * scale) ** 2
        return float(np.sum(np.log(v) + e2 / v))

    ratio = float(np.sqrt(np.mean(e2) / np.mean(s2)))
    res = minimize(nll, [np.log(max(ratio, 1e-3)), np.log(0.5)], method="Nelder-Mead",
                   options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 2000})
    alpha, noise = float(np.exp(res.x[0])), float(np.exp(res.x[1]) * scale)
    z = err / np.sqrt((alpha * spread) ** 2 + noise**2)
    c = float(np.quantile(z, coverage))  # the common factor that gives the coverage
    alpha, noise = c * alpha, c * noise
    if alpha < floor:  # keep the spread's own scale; the misfit takes what is left
        alpha = floor
        rest = np.maximum(e2 - (alpha * spread) ** 2, 0.0)
        noise = float(np.sqrt(np.quantile(rest, coverage)))
    return alpha, noise
