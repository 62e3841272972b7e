"""Analysis of potentials: accuracy and calibration metrics, diagnostic plots.

matplotlib is imported only when a plot is drawn.
"""

from potlearn_ase.analysis.metrics import (
    cosine_similarity,
    cov,
    coverage,
    energy_metrics,
    evaluate,
    force_metrics,
    mae,
    max_error,
    r2,
    regression_metrics,
    rmse,
)
from potlearn_ase.analysis.plots import error_histogram, parity_plot, timeseries_plot

__all__ = [
    "cosine_similarity",
    "cov",
    "coverage",
    "energy_metrics",
    "error_histogram",
    "evaluate",
    "force_metrics",
    "mae",
    "max_error",
    "parity_plot",
    "r2",
    "regression_metrics",
    "rmse",
    "timeseries_plot",
]
