"""Selection of informative, diverse subsets of candidate structures.

Every selector module has a ``select(features, k, *, rng) -> indices`` function with the same
signature (e.g. :func:`potlearn_ase.selection.fps.select`).
"""

from potlearn_ase.selection import fps
from potlearn_ase.selection.fps import farthest_point_sampling, structure_features

__all__ = ["farthest_point_sampling", "fps", "structure_features"]

# selectors with the common signature, the registry and the low-rank kernels
from potlearn_ase.selection.clustering import DBSCANSelector, KMeansSelector  # noqa: E402
from potlearn_ase.selection.doptimal import (  # noqa: E402
    DOptimalSelector,
    extrapolation_grade,
    maxvol,
)
from potlearn_ase.selection.dpp import (  # noqa: E402
    DPPSelector,
    greedy_map,
    inclusion_probabilities,
    sample_k_dpp,
)
from potlearn_ase.selection.kernels import Kernel, descriptor_features  # noqa: E402
from potlearn_ase.selection.registry import (  # noqa: E402
    SELECTORS,
    FPSSelector,
    RandomSelector,
    Selector,
    get_selector,
)
from potlearn_ase.selection.variance import VarianceSelector, variance_reduction  # noqa: E402

__all__ += [
    "SELECTORS",
    "Selector",
    "DBSCANSelector",
    "DOptimalSelector",
    "DPPSelector",
    "FPSSelector",
    "KMeansSelector",
    "Kernel",
    "RandomSelector",
    "VarianceSelector",
    "descriptor_features",
    "extrapolation_grade",
    "get_selector",
    "greedy_map",
    "inclusion_probabilities",
    "maxvol",
    "sample_k_dpp",
    "variance_reduction",
]
