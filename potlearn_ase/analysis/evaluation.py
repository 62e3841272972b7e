"""Evaluation of a committee potential on labelled structures: errors, calibration, plots.

:func:`evaluate_model` predicts every structure once and keeps the per-structure
predictions (:class:`Predictions`); :class:`Evaluation` turns them into metric rows (all
structures, and one row per value of an ``atoms.info`` key such as ``config_type``), a
readable table, a JSON-ready dictionary and diagnostic plots. This is what
``potlearn eval`` prints.

Every metric key names its unit: ``energy_rmse_meV_per_atom``, ``force_mae_eV_per_A``,
``stress_rmse_GPa``; coverages (``force_coverage_1sigma`` ...) are fractions of errors inside
1 or 2 predicted sigma (0.683 and 0.954 expected of a calibrated Gaussian uncertainty), and
the ``*_sigma_error_spearman`` keys are Spearman rank correlations, over structures, between
the predicted sigma and the error: the per-atom energy sigma against the per-atom energy
error, and the largest atomic force sigma (norm of an atom's three component sigmas) against
the largest atomic force error (norm of the error vector) of each structure.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units

from potlearn_ase.analysis.metrics import calibration_curve, coverage, mae, r2, rmse
from potlearn_ase.data.validate import get_labels, require_labels
from potlearn_ase.errors import ConfigError

__all__ = ["Evaluation", "Predictions", "calibration_status", "evaluate_model"]

#: the label of structures without the grouping key
NO_GROUP = "(none)"


@dataclass(frozen=True)
class Predictions:
    """Reference labels and committee predictions of each structure (ASE units).

    Attributes
    ----------
    n_atoms : np.ndarray
        ``(S,)`` atoms per structure.
    energy_true, energy_pred, energy_std : np.ndarray
        ``(S,)`` total energies and the calibrated energy sigma (eV).
    forces_true, forces_pred, forces_std : list of np.ndarray
        Per structure, ``(N, 3)`` forces and their calibrated sigma (eV/A).
    stress_true, stress_pred : np.ndarray
        ``(S, 6)`` Voigt stress (eV/A^3); rows of structures without a stress label are nan.
    groups : np.ndarray
        ``(S,)`` the value of the grouping key of each structure (:data:`NO_GROUP` without).
    """

    n_atoms: np.ndarray
    energy_true: np.ndarray
    energy_pred: np.ndarray
    energy_std: np.ndarray
    forces_true: list[np.ndarray]
    forces_pred: list[np.ndarray]
    forces_std: list[np.ndarray]
    stress_true: np.ndarray
    stress_pred: np.ndarray
    groups: np.ndarray

    def subset(self, mask: np.ndarray) -> Predictions:
        """The structures where ``mask`` is True."""
        idx = np.flatnonzero(mask)
        return Predictions(
            n_atoms=self.n_atoms[idx], energy_true=self.energy_true[idx],
            energy_pred=self.energy_pred[idx], energy_std=self.energy_std[idx],
            forces_true=[self.forces_true[i] for i in idx],
            forces_pred=[self.forces_pred[i] for i in idx],
            forces_std=[self.forces_std[i] for i in idx],
            stress_true=self.stress_true[idx], stress_pred=self.stress_pred[idx],
            groups=self.groups[idx],
        )

    def energy_errors(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-atom energy errors (prediction minus reference) and sigmas (eV/atom)."""
        return (self.energy_pred - self.energy_true) / self.n_atoms, self.energy_std / self.n_atoms

    def force_errors(self) -> tuple[np.ndarray, np.ndarray]:
        """Force-component errors and sigmas of every structure, concatenated (eV/A)."""
        err = np.concatenate([(p - t).ravel() for p, t in zip(self.forces_pred, self.forces_true)])
        return err, np.concatenate([s.ravel() for s in self.forces_std])


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman rank correlation, or None when undefined (fewer than 3 values, or constant)."""
    from scipy.stats import spearmanr

    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = float(spearmanr(x, y).statistic)
    return None if math.isnan(rho) else rho


def metric_row(pred: Predictions) -> dict[str, Any]:
    """One row of metrics (units in the key names) of the structures in ``pred``."""
    e_err, e_sig = pred.energy_errors()
    e_true = pred.energy_true / pred.n_atoms
    f_err, f_sig = pred.force_errors()
    f_true = np.concatenate([f.ravel() for f in pred.forces_true])
    row: dict[str, Any] = {
        "n_structures": int(pred.n_atoms.size),
        "n_atoms": int(pred.n_atoms.sum()),
        "energy_rmse_meV_per_atom": 1e3 * rmse(e_true, e_true + e_err),
        "energy_mae_meV_per_atom": 1e3 * mae(e_true, e_true + e_err),
        "energy_r2": r2(e_true, e_true + e_err),
        "force_rmse_eV_per_A": rmse(f_true, f_true + f_err),
        "force_mae_eV_per_A": mae(f_true, f_true + f_err),
        "force_r2": r2(f_true, f_true + f_err),
    }
    has_stress = ~np.isnan(pred.stress_true).any(1) & ~np.isnan(pred.stress_pred).any(1)
    if has_stress.any():
        s_true = pred.stress_true[has_stress] / units.GPa
        s_pred = pred.stress_pred[has_stress] / units.GPa
        row["n_stress"] = int(has_stress.sum())
        row["stress_rmse_GPa"] = rmse(s_true, s_pred)
        row["stress_mae_GPa"] = mae(s_true, s_pred)
        row["stress_r2"] = r2(s_true, s_pred)
    for name, (err, sig) in (("energy", (e_err, e_sig)), ("force", (f_err, f_sig))):
        for z in (1, 2):
            row[f"{name}_coverage_{z}sigma"] = coverage(err, sig, z)
    row["energy_sigma_error_spearman"] = _spearman(e_sig, np.abs(e_err))
    f_sig_max = np.array([np.linalg.norm(s, axis=1).max() for s in pred.forces_std])
    f_err_max = np.array(
        [np.linalg.norm(p - t, axis=1).max() for p, t in zip(pred.forces_pred, pred.forces_true)]
    )
    row["force_sigma_error_spearman"] = _spearman(f_sig_max, f_err_max)
    return row


def calibration_status(calc: Any) -> dict[str, Any]:
    """What the calculator's calibration factor was fitted on, as recorded in its model file.

    Returns
    -------
    dict
        ``alpha``; ``calibrated_on`` (``"validation"``, ``"cross-validation"``, ``"none"``
        or ``"unknown"`` when the file keeps no record); ``fitted`` (False when alpha was
        never fitted, None when unknown); ``note``, a sentence for the table.
    """
    alpha = float(calc.calibration)
    on = (getattr(calc, "metrics", None) or {}).get("calibrated_on")
    if on is None:
        on = "unknown"
    if on == "none" or (on == "unknown" and alpha == 1.0):
        fitted: bool | None = False
        note = (
            "NOT CALIBRATED: alpha was never fitted (no calibration data); sigma is the raw "
            "committee spread"
        )
    elif on == "unknown":
        fitted = None
        note = "fitted; the model file does not record on what"
    else:
        fitted = True
        note = f"fitted on {on}"
    return {"alpha": alpha, "calibrated_on": on, "fitted": fitted, "note": note}


def _predict(calc: Any, atoms: Atoms, stress: bool) -> dict[str, np.ndarray]:
    a = atoms.copy()
    a.calc = calc
    a.get_potential_energy()
    a.get_forces()
    if stress:
        a.get_stress()
    return {k: np.array(v, copy=True) for k, v in calc.results.items()}


def evaluate_model(
    calc: Any,
    frames: Sequence[Atoms],
    *,
    group_by: str | None = "config_type",
    where: str = "data",
    progress: bool = False,
) -> Evaluation:
    """Predict every labelled structure with a committee calculator and keep what it takes.

    Parameters
    ----------
    calc : CommitteeCalculator
        Gives ``energy``, ``forces`` (and ``stress``) with ``energy_std`` and ``forces_std``.
    frames : sequence of ase.Atoms
        Structures with energy and force labels (stress optional) in ``atoms.calc.results``.
    group_by : str or None
        ``atoms.info`` key whose values get their own metric rows. A key other than the
        default ``config_type`` must be present on at least one structure.
    where : str
        Name of the data (a file) used in error messages.
    progress : bool
        Show a progress bar (stderr).
    """
    frames = list(frames)
    if not frames:
        raise ConfigError(f"{where}: no structures to evaluate")
    if group_by and group_by != "config_type" and not any(group_by in a.info for a in frames):
        raise ConfigError(f"{where}: no structure has the info key {group_by!r} (--group-by)")
    rows: list[dict[str, np.ndarray]] = []
    labels: list[dict[str, Any]] = []
    it: Any = frames
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(frames, desc="eval", unit="structure")
    for k, a in enumerate(it):
        require_labels(a, energy=True, forces=True, where=f"{where}, frame {k}")
        lab = get_labels(a)
        want_stress = "stress" in lab and bool(a.pbc.all())
        rows.append(_predict(calc, a, want_stress))
        labels.append(lab)
    nan6 = np.full(6, np.nan)
    pred = Predictions(
        n_atoms=np.array([len(a) for a in frames]),
        energy_true=np.array([lab["energy"] for lab in labels]),
        energy_pred=np.array([float(r["energy"]) for r in rows]),
        energy_std=np.array([float(r.get("energy_std", 0.0)) for r in rows]),
        forces_true=[lab["forces"] for lab in labels],
        forces_pred=[np.asarray(r["forces"], dtype=float) for r in rows],
        forces_std=[
            np.asarray(r.get("forces_std", np.zeros_like(r["forces"])), dtype=float) for r in rows
        ],
        stress_true=np.array([lab.get("stress", nan6) for lab in labels]),
        stress_pred=np.array([np.asarray(r.get("stress", nan6)).reshape(6) for r in rows]),
        groups=np.array([str(a.info.get(group_by, NO_GROUP)) if group_by else NO_GROUP
                         for a in frames]),
    )
    return Evaluation(predictions=pred, calibration=calibration_status(calc), group_by=group_by)


#: table rows: (key, label, format)
_TABLE = (
    ("n_structures", "structures", "d"),
    ("n_atoms", "atoms", "d"),
    ("energy_rmse_meV_per_atom", "energy RMSE (meV/atom)", ".3f"),
    ("energy_mae_meV_per_atom", "energy MAE (meV/atom)", ".3f"),
    ("energy_r2", "energy R^2", ".4f"),
    ("force_rmse_eV_per_A", "force RMSE (eV/A)", ".4f"),
    ("force_mae_eV_per_A", "force MAE (eV/A)", ".4f"),
    ("force_r2", "force R^2", ".4f"),
    ("stress_rmse_GPa", "stress RMSE (GPa)", ".3f"),
    ("stress_mae_GPa", "stress MAE (GPa)", ".3f"),
    ("stress_r2", "stress R^2", ".4f"),
    ("energy_coverage_1sigma", "energy |err| <= 1 sigma (0.683)", ".3f"),
    ("energy_coverage_2sigma", "energy |err| <= 2 sigma (0.954)", ".3f"),
    ("force_coverage_1sigma", "force |err| <= 1 sigma (0.683)", ".3f"),
    ("force_coverage_2sigma", "force |err| <= 2 sigma (0.954)", ".3f"),
    ("energy_sigma_error_spearman", "Spearman(energy sigma, |err|)", ".3f"),
    ("force_sigma_error_spearman", "Spearman(max F sigma, max |F err|)", ".3f"),
)


@dataclass(frozen=True)
class Evaluation:
    """Predictions on labelled structures, with metric rows, a table, JSON and plots."""

    predictions: Predictions
    calibration: dict[str, Any]
    group_by: str | None = "config_type"

    def rows(self) -> dict[str, dict[str, Any]]:
        """``{"all": row, <group>: row, ...}``; no group rows when every structure has none."""
        out = {"all": metric_row(self.predictions)}
        names = sorted(set(self.predictions.groups.tolist()))
        if names != [NO_GROUP]:
            for g in names:
                out[g] = metric_row(self.predictions.subset(self.predictions.groups == g))
        return out

    def calibration_curves(self) -> dict[str, list[float]]:
        """Expected coverage and the observed coverage of forces and energies."""
        p, f_obs = calibration_curve(*self.predictions.force_errors())
        _, e_obs = calibration_curve(*self.predictions.energy_errors())
        return {"expected": p.tolist(), "force_observed": f_obs.tolist(),
                "energy_observed": e_obs.tolist()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``calibration``, ``group_by``, ``overall``, ``groups``,
        ``calibration_curve``."""
        rows = self.rows()
        overall = rows.pop("all")
        return {
            "calibration": self.calibration,
            "group_by": self.group_by,
            "overall": overall,
            "groups": rows,
            "calibration_curve": self.calibration_curves(),
        }

    def table(self) -> str:
        """The metrics as aligned plain text: one column for all structures, one per group."""
        rows = self.rows()
        cols = list(rows)
        c = self.calibration
        head = [f"calibration alpha = {c['alpha']:.4g}: {c['note']}"]
        if len(cols) > 1:
            head.append(f"groups by info key {self.group_by!r}")
        width = max(len(label) for _, label, _ in _TABLE)
        colw = [max(10, len(name)) for name in cols]
        lines = [f"{'':<{width}}" + "".join(f"  {n:>{w}}" for n, w in zip(cols, colw))]
        for key, label, fmt in _TABLE:
            vals = [rows[name].get(key) for name in cols]
            if all(v is None for v in vals) and key.startswith("stress"):
                continue
            cells = ["-" if v is None else format(v, fmt) for v in vals]
            lines.append(f"{label:<{width}}" + "".join(f"  {s:>{w}}" for s, w in zip(cells, colw)))
        return "\n".join(head + lines)

    def plot(self, directory: str | os.PathLike) -> list[Path]:
        """Write ``parity.png``, ``error_vs_sigma.png`` and ``calibration.png`` to a folder.

        The parity plot shows per-atom energies and force components; the error-versus-sigma
        plot the per-atom energies and the force components with the lines |err| = sigma and
        |err| = 2 sigma; the calibration curve observed against expected coverage with the
        diagonal.
        """
        from potlearn_ase.analysis.plots import calibration_plot, error_sigma_plot, parity_panels

        out = Path(directory)
        pred = self.predictions
        e_err, e_sig = pred.energy_errors()
        f_err, f_sig = pred.force_errors()
        e_true = pred.energy_true / pred.n_atoms
        f_true = np.concatenate([f.ravel() for f in pred.forces_true])
        panels = {"energy (eV/atom)": (e_true, e_true + e_err),
                  "force (eV/A)": (f_true, f_true + f_err)}
        paths = [parity_panels(panels, out / "parity.png")]
        sig = {"energy (eV/atom)": (e_err, e_sig), "force (eV/A)": (f_err, f_sig)}
        paths.append(error_sigma_plot(sig, out / "error_vs_sigma.png"))
        title = f"alpha = {self.calibration['alpha']:.3g}"
        if self.calibration["fitted"] is False:
            title += " (never fitted)"
        paths.append(calibration_plot(sig, out / "calibration.png", title=title))
        return paths
