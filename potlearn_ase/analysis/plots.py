"""Diagnostic plots saved as PNG: parity, error histogram, time series.

Figures are drawn on matplotlib's Agg (raster, non-interactive) canvas directly, without
pyplot: nothing here changes the user's matplotlib backend or opens a window, and the
plots work on machines without a display. matplotlib is imported when a plot is made, not
when ``potlearn_ase`` is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["error_histogram", "parity_plot", "timeseries_plot"]


def new_figure(size: tuple[float, float] = (4.5, 4.2)) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    if t.size == 0:
        raise ValueError("nothing to plot (empty y_true and y_pred)")
    return t, p


def parity_plot(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    path: str | os.PathLike,
    *,
    label: str = "force (eV/A)",
    title: str | None = None,
) -> Path:
    """Scatter of predicted against reference values, with the identity line, MAE and RMSE.

    Parameters
    ----------
    y_true, y_pred : array_like
        Reference and predicted values (flattened), in the units named by ``label``.
    path : path-like
        Where to write the PNG (parent folders are created).
    label : str
        Quantity and unit, used on both axes ("reference ..." and "predicted ...").
    title : str, optional
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    t, p = _pair(y_true, y_pred)
    fig = new_figure()
    ax = fig.add_subplot()
    finite = np.isfinite(t) & np.isfinite(p)
    lo = float(min(t[finite].min(), p[finite].min())) if finite.any() else 0.0
    hi = float(max(t[finite].max(), p[finite].max())) if finite.any() else 1.0
    pad = 0.04 * (hi - lo) if hi > lo else 1.0
    lo, hi = lo - pad, hi + pad
    alpha = 0.8 if t.size < 2000 else 0.3
    ax.scatter(t, p, s=6, alpha=alpha, linewidths=0, color="tab:blue", rasterized=True)
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=1, ls="--")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(f"reference {label}")
    ax.set_ylabel(f"predicted {label}")
    err = p[finite] - t[finite]
    if err.size:
        text = (
            f"MAE {np.mean(np.abs(err)):.4g}\nRMSE {np.sqrt(np.mean(err**2)):.4g}\n"
            f"n = {err.size}"
        )
        ax.text(0.04, 0.96, text, transform=ax.transAxes, va="top", ha="left", fontsize=8)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def error_histogram(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    path: str | os.PathLike,
    *,
    bins: int = 50,
    label: str = "force error (eV/A)",
    title: str | None = None,
) -> Path:
    """Histogram of the errors ``y_pred - y_true``, with their mean and standard deviation.

    Parameters
    ----------
    y_true, y_pred : array_like
        Reference and predicted values, in the units named by ``label``.
    path : path-like
        Where to write the PNG (parent folders are created).
    bins : int
        Number of histogram bins.
    label : str
        Label of the horizontal axis (quantity and unit of the error).
    title : str, optional
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    t, p = _pair(y_true, y_pred)
    err = p - t
    err = err[np.isfinite(err)]
    fig = new_figure((5.0, 3.6))
    ax = fig.add_subplot()
    if err.size:
        ax.hist(err, bins=bins, color="tab:blue", alpha=0.8)
        ax.axvline(0.0, color="0.3", lw=1, ls="--")
        ax.text(
            0.97, 0.95, f"mean {err.mean():.3g}\nstd {err.std():.3g}\nn = {err.size}",
            transform=ax.transAxes, va="top", ha="right", fontsize=8,
        )
    ax.set_xlabel(label)
    ax.set_ylabel("count")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def timeseries_plot(
    x: ArrayLike,
    series: Mapping[str, ArrayLike],
    path: str | os.PathLike,
    *,
    xlabel: str,
    ylabel: str,
    logy: bool = False,
    title: str | None = None,
) -> Path:
    """Several series against one x axis, e.g. force uncertainty and threshold over MD steps.

    Parameters
    ----------
    x : array_like, shape (n,)
        The shared abscissa (e.g. step).
    series : mapping of str to array_like of shape (n,)
        Legend label -> values.
    path : path-like
        Where to write the PNG (parent folders are created).
    xlabel, ylabel : str
        Axis labels, with units.
    logy : bool
        Logarithmic y axis; values <= 0 are left out of the plot.
    title : str, optional
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    xs = np.asarray(x, dtype=float).ravel()
    if not series:
        raise ValueError("timeseries_plot needs at least one series")
    fig = new_figure((6.4, 3.6))
    ax = fig.add_subplot()
    for name, values in series.items():
        y = np.asarray(values, dtype=float).ravel()
        if y.shape != xs.shape:
            raise ValueError(f"series {name!r} has {y.size} values for {xs.size} x values")
        if logy:
            y = np.where(y > 0, y, np.nan)
        ax.plot(xs, y, lw=1.0, label=name)
    if logy and any(np.any(np.asarray(v, dtype=float) > 0) for v in series.values()):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)
