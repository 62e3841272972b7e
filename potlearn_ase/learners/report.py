"""Plots of an on-the-fly run: uncertainty and threshold over time, labels over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_plots"]


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
