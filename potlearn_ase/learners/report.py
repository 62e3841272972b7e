"""Plots of an on-the-fly run: uncertainty and threshold over time, labels over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_plots"]


def write_plots(
    run_dir: Path, history: list[dict[str, Any]], label_steps: list[int], summary: dict[str, Any]
) -> list[str]:
    """Write ``sigma_threshold.png`` and ``labels.png`` into ``run_dir``; returns their paths."""
    from potlearn_ase.analysis.plots import timeseries_plot

    paths: list[str] = []
    if not history:
        return paths
    steps = np.arange(len(history))
    thr = np.array([h["threshold"] for h in history])
    # a log axis: keep the first steps (a model at its own training structure has ~0 spread)
    # from stretching it over ten decades
    floor = 1e-3 * float(max(thr.max(), 1e-12))
    sigma = np.clip([h["max_force_std"] for h in history], floor, None)
    paths.append(
        str(
            timeseries_plot(
                steps,
                {"max force sigma": sigma, "threshold": thr},
                run_dir / "sigma_threshold.png",
                xlabel="learner step",
                ylabel="eV/A",
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
