"""Learners: on-the-fly (MD-driven) active learning, triggers and reference calculators."""

from potlearn_ase._moved import RENAMED_CONFIGS, moved_attribute
from potlearn_ase.learners.otf import OnTheFlyLearner, OTFCalculator, OTFConfig
from potlearn_ase.learners.otf_async import AsyncOnTheFlyLearner
from potlearn_ase.learners.reference import LabelResult, Reference
from potlearn_ase.learners.run import run_otf
from potlearn_ase.learners.triggers import (
    AdaptiveThreshold,
    Decision,
    EnergyThreshold,
    ExtrapolationThreshold,
    FixedThreshold,
    MinGap,
    RelativeThreshold,
    Trigger,
    TrustWindow,
    trigger_from_config,
)

__all__ = [
    "AdaptiveThreshold",
    "AsyncOnTheFlyLearner",
    "Decision",
    "EnergyThreshold",
    "ExtrapolationThreshold",
    "FixedThreshold",
    "LabelResult",
    "MinGap",
    "OTFCalculator",
    "OTFConfig",
    "OnTheFlyLearner",
    "Reference",
    "RelativeThreshold",
    "Trigger",
    "TrustWindow",
    "run_otf",
    "trigger_from_config",
]


__getattr__ = moved_attribute(__name__, RENAMED_CONFIGS)
