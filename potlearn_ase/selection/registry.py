"""The selector registry: every selector by name.

Every selector has ``select(features, k, *, rng) -> indices``; :func:`get_selector` builds one
by name with its hyperparameters::

    get_selector("dpp", mode="map").select(X, 100, rng=0)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from potlearn_ase.errors import ConfigError
from potlearn_ase.selection import fps
from potlearn_ase.selection.clustering import DBSCANSelector, KMeansSelector
from potlearn_ase.selection.doptimal import DOptimalSelector
from potlearn_ase.selection.dpp import DPPSelector
from potlearn_ase.selection.kernels import as_features, check_k, prepare_features
from potlearn_ase.selection.variance import VarianceSelector

__all__ = [
    "FPSSelector",
    "RandomSelector",
    "SELECTORS",
    "Selector",
    "get_selector",
]


class Selector(Protocol):
    """What every selector offers."""

    def select(
        self, features: ArrayLike, k: int, *, rng: np.random.Generator | int | None = None
    ) -> np.ndarray: ...


class RandomSelector:
    """``k`` candidates uniformly at random without replacement (the baseline)."""

    name = "random"

    def __repr__(self) -> str:
        return "RandomSelector()"

    def select(
        self, features: ArrayLike, k: int, *, rng: np.random.Generator | int | None = None
    ) -> np.ndarray:
        n = len(as_features(features))
        k = check_k(k, n)
        return np.random.default_rng(rng).choice(n, k, replace=False).astype(np.int64)


class FPSSelector:
    """Farthest-point sampling (:func:`potlearn_ase.selection.fps.farthest_point_sampling`)
    on standardised features.

    Parameters
    ----------
    metric : str
        Distance (any :func:`scipy.spatial.distance.cdist` metric).
    standardize : bool
        Standardise feature columns first.
    """

    name = "fps"

    def __init__(self, *, metric: str = "euclidean", standardize: bool = True):
        self.metric = metric
        self.standardize = standardize

    def __repr__(self) -> str:
        return f"FPSSelector(metric={self.metric!r})"

    def select(
        self, features: ArrayLike, k: int, *, rng: np.random.Generator | int | None = None
    ) -> np.ndarray:
        X = prepare_features(features, standardize_columns=self.standardize)
        return fps.select(X, k, rng=rng, metric=self.metric)


SELECTORS: dict[str, Callable[..., Any]] = {
    "random": RandomSelector,
    "fps": FPSSelector,
    "kmeans": KMeansSelector,
    "dbscan": DBSCANSelector,
    "dpp": DPPSelector,
    "doptimal": DOptimalSelector,
    "variance": VarianceSelector,
}


def get_selector(name: str, **kwargs: Any) -> Selector:
    """A selector by name (``random``, ``fps``, ``kmeans``, ``dbscan``, ``dpp``,
    ``doptimal``, ``variance``), built with ``kwargs`` as its hyperparameters.

    Raises
    ------
    ConfigError
        Unknown name, or a hyperparameter the selector does not take.
    """
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {
        "maxvol": "doptimal", "dopt": "doptimal", "kdpp": "dpp", "km": "kmeans", "ted": "variance"
    }
    key = aliases.get(key, key)
    if key not in SELECTORS:
        raise ConfigError(f"unknown selector {name!r}; known: {', '.join(SELECTORS)}")
    try:
        return SELECTORS[key](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"selector {key!r}: {exc}") from None
