"""Analysis of potentials: accuracy and calibration metrics, diagnostic plots.

matplotlib is imported only when a plot is drawn.
"""

from potlearn_ase.analysis.evaluation import Evaluation, evaluate_model
from potlearn_ase.analysis.metrics import (
    calibration_curve,
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
from potlearn_ase.analysis.plots import (
    calibration_plot,
    error_histogram,
    error_sigma_plot,
    parity_panels,
    parity_plot,
    timeseries_plot,
)

__all__ = [
    "Evaluation",
    "calibration_curve",
    "calibration_plot",
    "cosine_similarity",
    "cov",
    "coverage",
    "energy_metrics",
    "error_histogram",
    "error_sigma_plot",
    "evaluate",
    "evaluate_model",
    "force_metrics",
    "mae",
    "max_error",
    "parity_panels",
    "parity_plot",
    "r2",
    "regression_metrics",
    "rmse",
    "timeseries_plot",
]

from potlearn_ase.analysis.hyperopt import (  # noqa: E402
    HyperoptConfig,
    SearchSpace,
    pareto_front,
    pareto_plot,
    run_hyperopt,
)
from potlearn_ase.analysis.qoi import (  # noqa: E402
    QoI,
    QoIReport,
    compute_qois,
    phonon_band_plot,
    posterior_committee,
)
from potlearn_ase.analysis.sensitivity import (  # noqa: E402
    qoi_sensitivity,
    sensitivity_plot,
    sensitivity_table,
    training_influence,
)

__all__ += [
    "HyperoptConfig",
    "QoI",
    "QoIReport",
    "SearchSpace",
    "compute_qois",
    "pareto_front",
    "pareto_plot",
    "phonon_band_plot",
    "posterior_committee",
    "qoi_sensitivity",
    "run_hyperopt",
    "sensitivity_plot",
    "sensitivity_table",
    "training_influence",
]
