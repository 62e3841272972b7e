"""Reports of learning runs: the on-the-fly run's uncertainty, threshold and labels over time,
and the pool learner's learning curve (read back on resume, plotted)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "predicted_error_report",
    "labels_figure",
    "plot_learning_curve",
    "read_learning_curve",
    "sigma_figure",
    "write_plots",
]

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
    if kind == "target":  # predicted per-atom force error: RMS of the atom's component sigmas
        s = np.array([h["max_force_std"] for h in history]) / np.sqrt(3.0)
        return "predicted force error", s, "eV/A", True
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

    ``sigma_threshold.png``: the quantity the trigger compares, its threshold and a marker
    at every label step. ``trigger`` (its :meth:`describe`) picks the quantity: the per-atom
    energy sigma for an ``energy`` trigger (``n_atoms`` atoms), the extrapolation grade for an
    ``extrapolation`` one, else the largest force sigma (without the threshold line for a
    ``relative`` trigger, whose threshold is a ratio). ``labels.png``: the labels taken so far
    (left axis, count) and the MD temperature (right axis, K) when the history records it.
    """
    from potlearn_ase.analysis.plots import save_figure

    if not history:
        return []
    fig = sigma_figure(history, label_steps, trigger=trigger, n_atoms=n_atoms)
    paths = [str(save_figure(fig, run_dir / "sigma_threshold.png"))]
    paths.append(str(save_figure(labels_figure(history, label_steps), run_dir / "labels.png")))
    return paths


def _label_index(label_steps: list[int], n: int) -> np.ndarray:
    return np.array(sorted(s for s in label_steps if 0 <= s < n), dtype=int)


def sigma_figure(
    history: list[dict[str, Any]],
    label_steps: list[int],
    *,
    trigger: dict[str, Any] | None = None,
    n_atoms: int = 1,
) -> Any:
    """The figure of ``sigma_threshold.png`` (see :func:`write_plots`)."""
    from potlearn_ase.analysis.plots import new_figure

    steps = np.arange(len(history))
    thr = np.array([h["threshold"] for h in history], dtype=float)
    name, values, unit, same_unit = _measure(history, trigger, n_atoms)
    # a log axis: keep the first steps (a model at its own training structure has ~0 spread)
    # from stretching it over ten decades
    top = np.nanmax(thr) if same_unit else values.max(initial=0.0)
    floor = 1e-3 * float(max(top, 1e-12))
    shown = np.clip(values, floor, None)
    fig = new_figure((6.4, 3.6))
    ax = fig.add_subplot()
    ax.plot(steps, shown, lw=1.0, color="tab:blue", label=name)
    if same_unit:
        ax.plot(steps, thr, lw=1.0, color="tab:orange", label="threshold")
    idx = _label_index(label_steps, len(history))
    if idx.size:
        for s in idx:
            ax.axvline(s, color="tab:red", lw=0.5, alpha=0.35, zorder=0)
        ax.scatter(idx, shown[idx], marker="v", s=22, color="tab:red", zorder=3,
                   label=f"label taken ({idx.size})")
    if np.any(shown > 0):
        ax.set_yscale("log")
    ax.set_xlabel("learner step")
    ax.set_ylabel(f"{name} ({unit})")
    ax.legend(fontsize=8, loc="best")
    return fig


def labels_figure(history: list[dict[str, Any]], label_steps: list[int]) -> Any:
    """The figure of ``labels.png``: label count (left axis), temperature in K (right axis)."""
    from potlearn_ase.analysis.plots import new_figure

    steps = np.arange(len(history))
    counts = np.zeros(len(history))
    for s in _label_index(label_steps, len(history)):
        counts[s:] += 1
    fig = new_figure((6.4, 3.6))
    ax = fig.add_subplot()
    ax.step(steps, counts, where="post", lw=1.2, color="tab:blue", label="labels")
    ax.set_xlabel("learner step")
    ax.set_ylabel("labels taken (count)", color="tab:blue")
    ax.tick_params(axis="y", labelcolor="tab:blue")
    ax.set_ylim(0, max(1.0, float(counts.max())) * 1.05)
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    temps = [h.get("temperature") for h in history]
    if any(t is not None for t in temps):
        T = np.array([np.nan if t is None else float(t) for t in temps])
        ax_t = ax.twinx()
        ax_t.plot(steps, T, lw=1.0, color="tab:red", label="temperature")
        ax_t.set_ylabel("temperature (K)", color="tab:red")
        ax_t.tick_params(axis="y", labelcolor="tab:red")
        ax_t.set_ylim(bottom=0)
    return fig


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


def predicted_error_report(
    history: Sequence[Mapping[str, Any]],
    trigger: Mapping[str, Any],
    noise: float | None = None,
) -> dict[str, Any]:
    """The distribution of the predicted force RMSE over the run's steps (eV/A; the
    structure's, misfit included, where the history has it, else ``max |sigma_F_i| /
    sqrt(3)``),
    against the target of a ``target`` trigger; ``noise`` is the model's misfit at the end."""
    err = np.array(
        [
            h["predicted_force_error"]
            if h.get("predicted_force_error") is not None
            else h["max_force_std"] / np.sqrt(3.0)
            for h in history
        ],
        dtype=float,
    )
    if err.size == 0:
        return {}
    q = np.quantile(err, [0.5, 0.9, 0.99])
    out: dict[str, Any] = {
        "steps": int(err.size),
        "median": float(q[0]),
        "p90": float(q[1]),
        "p99": float(q[2]),
        "max": float(err.max()),
        "unit": "eV/A",
    }
    if noise is not None:
        out["misfit"] = float(noise)
    target = _target(trigger)
    if target is not None:
        out["target"] = target
        out["fraction_above_target"] = float(np.mean(err > target))
        last = err[-max(1, err.size // 10) :]
        out["fraction_above_target_last_tenth"] = float(np.mean(last > target))
        if noise is not None and noise > target:
            log.warning(
                "the model's misfit (%.4f eV/A per force component) is above the target "
                "(%.4f eV/A): more labels cannot reach it; use a larger basis or raise the "
                "target", noise, target,
            )
    return out


def _target(trigger: Mapping[str, Any]) -> float | None:
    """The accepted force error of a ``target`` trigger, also inside wrappers."""
    while trigger:
        if trigger.get("kind") == "target":
            return float(trigger["force_error"])
        trigger = trigger.get("inner") or {}
    return None
