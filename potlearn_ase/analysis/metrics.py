"""Accuracy and calibration metrics of a potential against reference labels.

Every function takes ``(y_true, y_pred)`` in that order: reference first, prediction second.
Energies are in eV (or eV/atom where stated), forces in eV/Angstrom, stress in eV/Angstrom^3.

The scalar metrics are the usual ones: mean absolute error (:func:`mae`), root mean square
error (:func:`rmse`), coefficient of determination (:func:`r2`), largest absolute error
(:func:`max_error`), the coefficient of variation of the RMSE (:func:`cov`), the mean cosine
between force vectors (:func:`cosine_similarity`) and the fraction of errors inside ``z``
predicted standard deviations (:func:`coverage`, a calibration check: about 0.683 at ``z=1``
for a calibrated Gaussian uncertainty).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.data import chemical_symbols
from numpy.typing import ArrayLike

from potlearn_ase.errors import MissingLabelError

__all__ = [
    "calibration_curve",
    "cosine_similarity",
    "cov",
    "coverage",
    "energy_metrics",
    "evaluate",
    "force_metrics",
    "mae",
    "max_error",
    "r2",
    "regression_metrics",
    "rmse",
]


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Flattened float copies of two arrays of the same shape."""
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape} but y_pred has shape {p.shape}")
    if t.size == 0:
        raise ValueError("no values to compare (empty y_true and y_pred)")
    return t.ravel(), p.ravel()


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute error, ``mean(|y_pred - y_true|)``, in the units of the inputs."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(p - t)))


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root mean square error, ``sqrt(mean((y_pred - y_true)**2))``, in the units of the inputs."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def r2(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Coefficient of determination, ``1 - sum((y_pred - y_true)**2) / sum((y_true - mean)**2)``.

    When ``y_true`` is constant the ratio is undefined; as in scikit-learn the result is then
    1.0 for a perfect prediction and 0.0 otherwise.
    """
    t, p = _pair(y_true, y_pred)
    ss_res = float(np.sum((p - t) ** 2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def max_error(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Largest absolute error, ``max(|y_pred - y_true|)``, in the units of the inputs."""
    t, p = _pair(y_true, y_pred)
    return float(np.max(np.abs(p - t)))


def cov(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Coefficient of variation of the RMSE: ``rmse(y_true, y_pred) / |mean(y_true)|``.

    The error relative to the size of the reference values (dimensionless), the COV reported
    next to MAE and R^2 in PotentialLearning.jl. It is meaningful for quantities with a
    nonzero mean (energies); for forces, whose mean is about zero, use :func:`rmse`.

    Returns
    -------
    float
        ``nan`` when ``mean(y_true)`` is exactly zero.
    """
    t, p = _pair(y_true, y_pred)
    m = abs(float(t.mean()))
    if m == 0.0:
        return float("nan")
    return float(np.sqrt(np.mean((p - t) ** 2))) / m


def cosine_similarity(F_true: ArrayLike, F_pred: ArrayLike) -> float:
    """Mean over atoms of the cosine between reference and predicted force vectors.

    Parameters
    ----------
    F_true, F_pred : array_like, shape (..., 3)
        Force vectors (eV/Angstrom); any leading shape, e.g. ``(N, 3)`` or a stack of frames.

    Returns
    -------
    float
        In [-1, 1]; atoms where either vector is exactly zero are skipped (their cosine is
        undefined). ``nan`` when every atom is skipped.
    """
    t = np.asarray(F_true, dtype=float)
    p = np.asarray(F_pred, dtype=float)
    if t.shape != p.shape or t.shape[-1:] != (3,):
        raise ValueError(
            f"force arrays must have the same shape (..., 3); got {t.shape} and {p.shape}"
        )
    t = t.reshape(-1, 3)
    p = p.reshape(-1, 3)
    nt = np.linalg.norm(t, axis=1)
    npred = np.linalg.norm(p, axis=1)
    ok = (nt > 0) & (npred > 0)
    if not ok.any():
        return float("nan")
    cos = np.sum(t[ok] * p[ok], axis=1) / (nt[ok] * npred[ok])
    return float(np.mean(np.clip(cos, -1.0, 1.0)))


def coverage(errors: ArrayLike, sigma: ArrayLike, z: float = 1.0) -> float:
    """Fraction of errors inside ``z`` predicted standard deviations: ``mean(|e| <= z*sigma)``.

    A calibration check: for Gaussian errors with a correct ``sigma`` the fraction is
    about 0.683 at ``z=1``, 0.954 at ``z=2`` and 0.997 at ``z=3``; a smaller value means
    the uncertainty is overconfident, a larger one underconfident.

    Parameters
    ----------
    errors : array_like
        Prediction minus reference (any units).
    sigma : array_like
        Predicted standard deviations in the same units, broadcastable to ``errors``.
    z : float
        Width of the interval in units of ``sigma``.
    """
    e = np.abs(np.asarray(errors, dtype=float))
    s = np.asarray(sigma, dtype=float)
    if e.size == 0:
        raise ValueError("no errors to check (empty array)")
    if np.any(s < 0):
        raise ValueError("sigma holds negative values")
    if z < 0:
        raise ValueError(f"z must be >= 0, got {z}")
    e, s = np.broadcast_arrays(e, s)
    return float(np.mean(e <= z * s))


def calibration_curve(
    errors: ArrayLike, sigma: ArrayLike, quantiles: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Observed against expected coverage of central Gaussian intervals.

    For each probability ``p`` the interval is ``|e| <= z_p * sigma`` with
    ``z_p = Phi^-1((1 + p) / 2)``, which a calibrated Gaussian uncertainty meets with
    probability ``p``; the observed fraction is :func:`coverage` at ``z_p``. A calibrated
    model lies on the diagonal, an overconfident one below it.

    Parameters
    ----------
    errors, sigma : array_like
        Prediction minus reference and the predicted standard deviation (same units).
    quantiles : array_like, optional
        Expected coverages in (0, 1); default ``0.05, 0.10, ..., 0.95`` and ``0.99``.

    Returns
    -------
    (np.ndarray, np.ndarray)
        Expected and observed coverage.
    """
    from scipy.stats import norm

    p = (
        np.r_[np.linspace(0.05, 0.95, 19), 0.99]
        if quantiles is None
        else np.asarray(quantiles, dtype=float).ravel()
    )
    if p.size == 0 or np.any((p <= 0) | (p >= 1)):
        raise ValueError("quantiles must lie strictly between 0 and 1")
    z = norm.ppf(0.5 + 0.5 * p)
    return p, np.array([coverage(errors, sigma, float(zk)) for zk in z])


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """``{"mae", "rmse", "r2", "max", "n"}`` of two arrays, in the units of the inputs."""
    t, p = _pair(y_true, y_pred)
    return {
        "mae": mae(t, p),
        "rmse": rmse(t, p),
        "r2": r2(t, p),
        "max": max_error(t, p),
        "n": int(t.size),
    }


def energy_metrics(
    E_true: ArrayLike,
    E_pred: ArrayLike,
    n_atoms: ArrayLike | None = None,
    *,
    per_atom: bool = True,
) -> dict[str, Any]:
    """Metrics of structure energies, per atom (eV/atom) or per structure (eV).

    Parameters
    ----------
    E_true, E_pred : array_like, shape (n_structures,)
        Reference and predicted total energies (eV).
    n_atoms : array_like of int, optional
        Atoms in each structure; required when ``per_atom`` is True.
    per_atom : bool
        Divide both energies by ``n_atoms`` before comparing.

    Returns
    -------
    dict
        ``mae``, ``rmse``, ``r2``, ``max``, ``cov``, ``n`` and ``unit`` (``"eV/atom"`` or
        ``"eV"``).
    """
    t, p = _pair(E_true, E_pred)
    if per_atom:
        if n_atoms is None:
            raise ValueError("energy_metrics(per_atom=True) needs n_atoms")
        n = np.asarray(n_atoms, dtype=float).ravel()
        if n.shape != t.shape:
            raise ValueError(f"n_atoms has {n.size} entries for {t.size} energies")
        if np.any(n <= 0):
            raise ValueError("n_atoms holds a structure with no atoms")
        t, p = t / n, p / n
    out: dict[str, Any] = regression_metrics(t, p)
    out["cov"] = cov(t, p)
    out["unit"] = "eV/atom" if per_atom else "eV"
    return out


def force_metrics(
    F_true: ArrayLike, F_pred: ArrayLike, numbers: ArrayLike | None = None
) -> dict[str, Any]:
    """Metrics of force components (eV/Angstrom): overall, per Cartesian component, per element.

    Parameters
    ----------
    F_true, F_pred : array_like, shape (n_atoms, 3)
        Reference and predicted forces; several frames may be stacked along the first axis.
    numbers : array_like of int, shape (n_atoms,), optional
        Atomic numbers of the rows, for the per-element breakdown.

    Returns
    -------
    dict
        ``mae``, ``rmse``, ``r2``, ``max``, ``n`` (number of components) and ``cos``
        (:func:`cosine_similarity`) over every component; ``components``:
        ``{"x": {...}, "y": {...}, "z": {...}}``; with ``numbers``, ``elements``:
        ``{"Cu": {...}, ...}`` with the same keys as the overall metrics.
    """
    t = np.asarray(F_true, dtype=float)
    p = np.asarray(F_pred, dtype=float)
    if t.shape != p.shape or t.ndim < 2 or t.shape[-1] != 3:
        raise ValueError(
            f"forces must have the same shape (n_atoms, 3); got {t.shape} and {p.shape}"
        )
    t = t.reshape(-1, 3)
    p = p.reshape(-1, 3)
    out: dict[str, Any] = regression_metrics(t, p)
    out["cos"] = cosine_similarity(t, p)
    out["components"] = {c: regression_metrics(t[:, k], p[:, k]) for k, c in enumerate("xyz")}
    if numbers is not None:
        z = np.asarray(numbers).ravel()
        if z.shape != (len(t),):
            raise ValueError(f"numbers has {z.size} entries for {len(t)} force rows")
        elements: dict[str, Any] = {}
        for Z in np.unique(z):
            sel = z == Z
            m: dict[str, Any] = regression_metrics(t[sel], p[sel])
            m["cos"] = cosine_similarity(t[sel], p[sel])
            elements[chemical_symbols[int(Z)]] = m
        out["elements"] = elements
    return out


def _labels(atoms: Atoms, frame: int, side: str) -> dict[str, Any]:
    results = getattr(getattr(atoms, "calc", None), "results", None) or {}
    missing = [k for k in ("energy", "forces") if results.get(k) is None]
    if missing:
        raise MissingLabelError(f"{side} frame {frame} has no {' or '.join(missing)} label")
    out = {
        "energy": float(np.asarray(results["energy"]).reshape(())),
        "forces": np.asarray(results["forces"], dtype=float),
    }
    for key in ("stress", "forces_std"):
        if results.get(key) is not None:
            out[key] = np.asarray(results[key], dtype=float)
    if "stress" in out and out["stress"].shape == (3, 3):
        s = out["stress"]
        out["stress"] = s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    return out


def _predict(atoms: Atoms, calc: Calculator) -> dict[str, Any]:
    a = atoms.copy()
    a.calc = calc
    a.get_potential_energy()
    a.get_forces()
    if a.pbc.all() and "stress" in getattr(calc, "implemented_properties", ()):
        a.get_stress()
    return {k: np.array(v, copy=True) for k, v in calc.results.items()}


def evaluate(
    frames_true: Sequence[Atoms], predicted: Sequence[Atoms] | Calculator
) -> dict[str, Any]:
    """Energy, force (and stress) metrics of a potential on labelled structures.

    Parameters
    ----------
    frames_true : sequence of ase.Atoms
        Reference structures carrying their labels in ``atoms.calc.results`` (e.g. a
        :class:`~ase.calculators.singlepoint.SinglePointCalculator`, or a ``Dataset``).
    predicted : sequence of ase.Atoms or ase Calculator
        Either the same structures labelled by the potential (same order and atoms), or a
        calculator, which is applied to a copy of each reference structure.

    Returns
    -------
    dict
        ``energy_per_atom`` (eV/atom) and ``energy`` (eV per structure) from
        :func:`energy_metrics`, ``forces`` from :func:`force_metrics` (eV/Angstrom, with the
        per-element breakdown), ``stress`` (eV/Angstrom^3, when both sides have stress for
        every frame), ``n_structures``, ``n_atoms``; and when the prediction carries
        ``forces_std`` (a committee), ``force_coverage``: the fraction of force errors within
        1, 2 and 3 predicted standard deviations (``{"1": ..., "2": ..., "3": ...}``).
    """
    frames_true = list(frames_true)
    if not frames_true:
        raise ValueError("evaluate() needs at least one reference structure")
    if isinstance(predicted, Calculator):
        preds = [_predict(a, predicted) for a in frames_true]
    else:
        frames_pred = list(predicted)
        if len(frames_pred) != len(frames_true):
            raise ValueError(
                f"{len(frames_true)} reference structures but {len(frames_pred)} predicted ones"
            )
        preds = [_labels(a, i, "predicted") for i, a in enumerate(frames_pred)]
    trues = [_labels(a, i, "reference") for i, a in enumerate(frames_true)]
    for i, (a, pt, pp) in enumerate(zip(frames_true, trues, preds, strict=True)):
        if np.shape(pp["forces"]) != (len(a), 3) or np.shape(pt["forces"]) != (len(a), 3):
            raise ValueError(f"frame {i}: forces do not have shape ({len(a)}, 3)")
    n_atoms = np.array([len(a) for a in frames_true])
    E_true = np.array([r["energy"] for r in trues])
    E_pred = np.array([float(np.asarray(r["energy"]).reshape(())) for r in preds])
    F_true = np.concatenate([r["forces"] for r in trues])
    F_pred = np.concatenate([np.asarray(r["forces"], dtype=float) for r in preds])
    numbers = np.concatenate([a.numbers for a in frames_true])
    out: dict[str, Any] = {
        "n_structures": len(frames_true),
        "n_atoms": int(n_atoms.sum()),
        "energy_per_atom": energy_metrics(E_true, E_pred, n_atoms, per_atom=True),
        "energy": energy_metrics(E_true, E_pred, per_atom=False),
        "forces": force_metrics(F_true, F_pred, numbers),
    }
    if all("stress" in r for r in trues) and all(r.get("stress") is not None for r in preds):
        S_true = np.stack([r["stress"] for r in trues])
        S_pred = np.stack([np.asarray(r["stress"], dtype=float).reshape(-1) for r in preds])
        if S_pred.shape == S_true.shape:
            out["stress"] = regression_metrics(S_true, S_pred)
    if all(r.get("forces_std") is not None for r in preds):
        sigma = np.concatenate([np.asarray(r["forces_std"], dtype=float) for r in preds])
        err = F_pred - F_true
        out["force_coverage"] = {str(z): coverage(err, sigma, z) for z in (1, 2, 3)}
    return out
