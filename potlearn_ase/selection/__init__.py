"""Selection of informative, diverse subsets of candidate structures.

Every selector module has a ``select(features, k, *, rng) -> indices`` function with the same
signature (e.g. :func:`potlearn_ase.selection.fps.select`).
"""

from potlearn_ase.selection import fps
from potlearn_ase.selection.fps import farthest_point_sampling, structure_features

__all__ = ["farthest_point_sampling", "fps", "structure_features"]
