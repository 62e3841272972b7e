"""Diagnostic plots saved as PNG: parity, error histogram, error against sigma, calibration
curve, time series.

Figures are drawn on matplotlib's Agg (raster, non-interactive) canvas directly, without
pyplot: nothing here changes the user's matplotlib backend or opens a window, and the
plots work on machines without a display. matplotlib is imported when a plot is made, not
when ``potlearn_ase`` is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "calibration_plot",
    "error_histogram",
    "error_sigma_plot",
    "parity_panels",
    "parity_plot",
    "timeseries_plot",
]


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
    _parity_axes(ax, t, p, label)
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


def _parity_axes(ax: Any, t: np.ndarray, p: np.ndarray, label: str) -> None:
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


def parity_panels(
    panels: Mapping[str, tuple[ArrayLike, ArrayLike]], path: str | os.PathLike
) -> Path:
    """Parity plots side by side, one per quantity: ``{"force (eV/A)": (y_true, y_pred)}``.

    Each panel has the identity line, MAE, RMSE and the number of values.
    """
    if not panels:
        raise ValueError("parity_panels needs at least one panel")
    fig = new_figure((4.2 * len(panels), 4.2))
    for k, (label, (y_true, y_pred)) in enumerate(panels.items()):
        t, p = _pair(y_true, y_pred)
        _parity_axes(fig.add_subplot(1, len(panels), k + 1), t, p, label)
    return save_figure(fig, path)


def error_sigma_plot(
    panels: Mapping[str, tuple[ArrayLike, ArrayLike]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """|error| against predicted sigma, log-log, one panel per quantity, with the ideal lines.

    Parameters
    ----------
    panels : mapping of str to (errors, sigma)
        Quantity and unit (e.g. ``"force (eV/A)"``) -> errors and sigmas of the same shape.
    path : path-like
        Where to write the PNG.
    title : str, optional
        Figure title.

    Notes
    -----
    The lines ``|err| = sigma`` and ``|err| = 2 sigma`` are drawn: for a calibrated Gaussian
    uncertainty 68 % of the points lie below the first and 95 % below the second. The axes
    start three decades below the median value; smaller values (e.g. components that are zero
    by symmetry) are drawn on that floor and counted in the panel's text.
    """
    if not panels:
        raise ValueError("error_sigma_plot needs at least one panel")
    fig = new_figure((4.4 * len(panels), 4.2))
    for k, (label, (errors, sigma)) in enumerate(panels.items()):
        e = np.abs(np.asarray(errors, dtype=float).ravel())
        s = np.asarray(sigma, dtype=float).ravel()
        if e.shape != s.shape:
            raise ValueError(f"{label}: {e.size} errors but {s.size} sigmas")
        ax = fig.add_subplot(1, len(panels), k + 1)
        pos = np.r_[e[e > 0], s[s > 0]]
        # the axes span three decades below the median: symmetry-zero components (1e-15)
        # would otherwise squeeze every other point into a corner
        floor = max(float(pos.min()), 1e-3 * float(np.median(pos))) if pos.size else 1e-6
        clipped = int(np.sum((e < floor) | (s < floor)))
        e, s = np.maximum(e, floor), np.maximum(s, floor)
        ax.scatter(s, e, s=5, alpha=0.8 if e.size < 2000 else 0.25, linewidths=0,
                   color="tab:blue", rasterized=True)
        lo, hi = floor, float(max(e.max(), s.max())) * 1.5
        grid = np.geomspace(lo, hi, 50)
        ax.plot(grid, grid, color="k", lw=1.2, label="|err| = sigma")
        ax.plot(grid, 2 * grid, color="k", lw=1.2, ls="--", label="|err| = 2 sigma")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"predicted sigma, {label}")
        ax.set_ylabel(f"|error|, {label}")
        below = [np.mean(e <= z * s) for z in (1, 2)]
        text = f"below 1 sigma: {below[0]:.2f}\nbelow 2 sigma: {below[1]:.2f}\nn = {e.size}"
        if clipped:
            text += f" ({clipped} drawn at the axis floor)"
        ax.text(0.04, 0.96, text, transform=ax.transAxes, va="top", ha="left", fontsize=8)
        ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def calibration_plot(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]],
    path: str | os.PathLike,
    *,
    quantiles: ArrayLike | None = None,
    title: str | None = None,
) -> Path:
    """Observed against expected coverage of Gaussian intervals, with the diagonal.

    Parameters
    ----------
    curves : mapping of str to (errors, sigma)
        Legend label -> errors and predicted sigmas (see
        :func:`~potlearn_ase.analysis.metrics.calibration_curve`).
    path : path-like
        Where to write the PNG.
    quantiles : array_like, optional
        Expected coverages (default ``0.05 ... 0.95, 0.99``).
    title : str, optional
        Figure title.
    """
    from potlearn_ase.analysis.metrics import calibration_curve

    if not curves:
        raise ValueError("calibration_plot needs at least one curve")
    fig = new_figure((4.4, 4.2))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.3", lw=1, ls="--", label="calibrated")
    for label, (errors, sigma) in curves.items():
        p, obs = calibration_curve(errors, sigma, quantiles)
        ax.plot(p, obs, marker="o", ms=3, lw=1.2, label=label)
    ax.fill_between([0, 1], [0, 1], [0, 0], color="tab:red", alpha=0.06, lw=0)
    ax.text(0.96, 0.04, "overconfident", ha="right", va="bottom", fontsize=8, color="tab:red",
            transform=ax.transAxes)
    ax.text(0.04, 0.96, "underconfident", ha="left", va="top", fontsize=8, color="0.4",
            transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("expected coverage (Gaussian)")
    ax.set_ylabel("observed coverage")
    ax.legend(fontsize=8, loc="center right")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
