"""Committee models: linear Bayesian and neural."""

from potlearn_ase.models.active_set import ActiveSet, attach_active_set
from potlearn_ase.models.base import CommitteeModel, CommitteePrediction
from potlearn_ase.models.calibration import (
    calibrate,
    calibrate_by_type,
    cross_validated_calibration,
    cross_validated_factors,
    fit_calibration,
    fit_calibration_factors,
    force_errors_and_spread,
)
from potlearn_ase.models.linear import LinearCommittee, LinearFitConfig, design_rows, fit_linear
from potlearn_ase.models.posterior import NormalEquations, Posterior, solve_posterior
from potlearn_ase.models.serialize import load_model, save_model

__all__ = [
    "ActiveSet",
    "CommitteeModel",
    "CommitteePrediction",
    "LinearCommittee",
    "LinearFitConfig",
    "NormalEquations",
    "Posterior",
    "attach_active_set",
    "calibrate",
    "calibrate_by_type",
    "cross_validated_calibration",
    "cross_validated_factors",
    "design_rows",
    "fit_calibration",
    "fit_calibration_factors",
    "fit_linear",
    "force_errors_and_spread",
    "load_model",
    "save_model",
    "solve_posterior",
]
