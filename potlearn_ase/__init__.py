"""potlearn-ase: active learning of machine-learned interatomic potentials for ASE."""

from __future__ import annotations

__version__ = "0.1.0"

from potlearn_ase.calculators import CommitteeCalculator, load
from potlearn_ase.descriptors import (
    ACEConfig,
    ACEDescriptor,
    FullACEConfig,
    FullACEDescriptor,
)
from potlearn_ase.models import LinearCommittee, LinearFitConfig, fit_calibration, fit_linear

__all__ = [
    "ACEConfig",
    "ACEDescriptor",
    "CommitteeCalculator",
    "FullACEConfig",
    "FullACEDescriptor",
    "LinearCommittee",
    "LinearFitConfig",
    "__version__",
    "fit_calibration",
    "fit_linear",
    "load",
]
