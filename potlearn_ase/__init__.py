"""potlearn-ase: active learning of machine-learned interatomic potentials for ASE.

The public surface is what the README and the docs use::

    from potlearn_ase import (ACEDescriptor, ACEConfig, fit_linear, cross_validated_calibration,
                              CommitteeCalculator, load, LabelStore, Reference,
                              OnTheFlyLearner, run_otf)

Everything else lives in one folder per concept (``descriptors``, ``models``, ``calculators``,
``learners``, ``engines``, ``selection``, ``analysis``, ``cli``; see docs/architecture.md).
"""

from __future__ import annotations

from potlearn_ase import _moved
from potlearn_ase.calculators import CommitteeCalculator, load
from potlearn_ase.data import LabelStore
from potlearn_ase.data.batch import set_cpu_threads
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor, FullACEConfig, FullACEDescriptor
from potlearn_ase.learners import OnTheFlyLearner, Reference, run_otf
from potlearn_ase.models import (
    LinearCommittee,
    LinearFitConfig,
    cross_validated_calibration,
    fit_calibration,
    fit_linear,
)

__version__ = "0.1.0"

_moved.install()

__all__ = [
    "ACEConfig",
    "ACEDescriptor",
    "CommitteeCalculator",
    "LabelStore",
    "FullACEConfig",
    "FullACEDescriptor",
    "LinearCommittee",
    "LinearFitConfig",
    "OnTheFlyLearner",
    "Reference",
    "__version__",
    "cross_validated_calibration",
    "fit_calibration",
    "fit_linear",
    "load",
    "run_otf",
    "set_cpu_threads",
]
