"""Reports of learning runs: the on-the-fly run's uncertainty, threshold and labels over time,
and the pool learner's learning curve (read back on resume, plotted)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_learning_curve", "read_learning_curve", "write_plots"]

log = logging.getLogger(__name__)


def _measure(
    history: list[dict[str, Any]], trigger: dict[str, Any] | None, n_atoms: int
) -> tuple[str, np.ndarray, str, bool]:
    """What the trigger compares with its threshold: name, values, unit, and whether the
    threshold is in the same unit (a relative trigger's is not)."""
    inner = trigger or {}
    while "inner" in inner:  # TrustWindow and MinGap wrap the trigger that decides
        inner = inner["inner"]
    kind = inner.get("kind")
    if kind == "energy":
        e = np.array([h["energy_std"] for h in history]) / max(n_atoms, 1)
        return "energy sigma per atom", e, "eV/atom", True
    if kind == "extrapolation":
        g = [h.get("max_extrapolation_grade") or 0.0 for h in history]
        return "max extrapolation grade", np.array(g), "grade", True
    same = kind != "relative"
    return "max force sigma", np.array([h["max_force_std"] for h in history]), "eV/A", same


def write_plots(
    run_dir: Path,
    history: list[dict[str, Any]],
    label_steps: list[int],
    summary: dict[str, Any],
    *,
    trigger: dict[str, Any] | None = None,
    n_atoms: int = 1,
) -> list[str]:
    """Write ``sigma_threshold.png`` and ``labels.png`` into ``run_dir``; returns their paths.

    ``trigger`` (its :meth:`describe`) picks the quantity drawn against the threshold: the
    per-atom energy sigma for an ``energy`` trigger (``n_atoms`` atoms), the extrapolation
    grade for an ``extrapolation`` one, else the largest force sigma (without the threshold
    line for a ``relative`` trigger, whose threshold is a ratio).
    """
    from potlearn_ase.analysis.plots import timeseries_plot

    paths: list[str] = []
    if not history:
        return paths
    steps = np.arange(len(history))
    thr = np.array([h["threshold"] for h in history])
    name, values, unit, same_unit = _measure(history, trigger, n_atoms)
    # a log axis: keep the first steps (a model at its own training structure has ~0 spread)
    # from stretching it over ten decades
    top = thr.max() if same_unit else values.max(initial=0.0)
    floor = 1e-3 * float(max(top, 1e-12))
    series = {name: np.clip(values, floor, None)}
    if same_unit:
        series["threshold"] = thr
    paths.append(
        str(
            timeseries_plot(
                steps,
                series,
                run_dir / "sigma_threshold.png",
                xlabel="learner step",
                ylabel=unit,
                logy=True,
            )
        )
    )
    labels = np.zeros(len(history))
    for s in label_steps:
        if 0 <= s < len(history):
            labels[s:] += 1
    series = {"labels": labels}
    temps = [h.get("temperature") for h in history]
    if any(t is not None for t in temps):
        series["temperature / 100 K"] = np.array([(t or 0.0) / 100.0 for t in temps])
    paths.append(
        str(
            timeseries_plot(
                steps, series, run_dir / "labels.png", xlabel="learner step", ylabel="count"
            )
        )
    )
    return paths


def read_learning_curve(
    run_dir: str | os.PathLike | None, n_labelled: int
) -> list[dict[str, Any]]:
    """The learning curve that earlier runs wrote to ``run_dir`` (a resumed run continues it).

    Points past ``n_labelled`` (the labels the store holds now) belong to another store and
    are dropped; an unreadable file gives an empty curve, with a warning.
    """
    path = Path(run_dir) / "learning_curve.json" if run_dir is not None else None
    if path is None or not path.exists():
        return []
    try:
        curve = json.loads(path.read_text()).get("curve", [])
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("%s: earlier learning curve not readable (%s); starting a new one", path, exc)
        return []
    return [p for p in curve if p.get("n_labels", 0) <= n_labelled]


def plot_learning_curve(curve: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Force RMSE against the number of labels (validation, and prequential per batch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 3.6), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key, label in (("val_force_rmse", "validation"), ("batch_force_rmse", "next batch")):
        pts = [(p["n_labels"], p[key]) for p in curve if p.get(key) is not None]
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, "o-", ms=3, label=label)
    ax.set_xlabel("labelled structures")
    ax.set_ylabel("force RMSE (eV/A)")
    ax.set_yscale("log")
    ax.legend()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
