"""The selector registry and the ``potlearn select`` command.

Every selector has ``select(features, k, *, rng) -> indices``; :func:`get_selector` builds one
by name with its hyperparameters::

    get_selector("dpp", mode="map").select(X, 100, rng=0)

``potlearn select pool.xyz -k 100 --method dpp -o picked.xyz`` computes ACE structure
features of every frame of ``pool.xyz``, picks ``k`` and writes them (labels kept).
"""

from __future__ import annotations

import argparse
import logging
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
    "add_subparser",
    "get_selector",
]

log = logging.getLogger(__name__)


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


# ---------------------------------------------------------------------- command
def add_subparser(subparsers: Any) -> None:
    """Register ``potlearn select`` on an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "select",
        help="pick k diverse or informative structures from a pool",
        description="Compute ACE structure features of every frame, pick k structures "
        "and write them (labels are kept).",
    )
    p.add_argument("pool", help="candidate structures (extxyz or any ASE-readable file)")
    p.add_argument("-k", type=int, required=True, help="number of structures to pick")
    p.add_argument("--method", default="fps", choices=sorted(SELECTORS))
    p.add_argument("-o", "--output", default="picked.xyz")
    p.add_argument("--indices", help="also write the picked indices here (one per line)")
    p.add_argument("--reduce", choices=["mean", "sum"], default=None,
                   help="structure features: mean or sum of the atoms' descriptors "
                   "(default: sum for doptimal, mean otherwise)")
    p.add_argument("--kernel", choices=["rbf", "imq", "dot"], default="rbf",
                   help="kernel of dpp and variance")
    p.add_argument("--dpp-mode", choices=["sample", "map"], default="sample")
    p.add_argument("--cutoff", type=float, default=5.0)
    p.add_argument("--n-radial", type=int, default=6)
    p.add_argument("--l-max", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_select)


def _cmd_select(args: argparse.Namespace) -> int:
    from potlearn_ase.data.io import read, write
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.selection.kernels import descriptor_features

    frames = read(args.pool, index=":")
    if not frames:
        raise ConfigError(f"{args.pool}: no structures")
    if not 0 <= args.k <= len(frames):
        raise ConfigError(f"-k {args.k}: {args.pool} holds {len(frames)} structures")
    elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
    desc = ACEDescriptor(
        elements, ACEConfig(cutoff=args.cutoff, n_radial=args.n_radial, l_max=args.l_max)
    )
    reduce = args.reduce or ("sum" if args.method == "doptimal" else "mean")
    X = descriptor_features(frames, desc, reduce=reduce)
    kwargs: dict[str, Any] = {}
    if args.method == "dpp":
        kwargs = {"kernel": args.kernel, "mode": args.dpp_mode}
    elif args.method == "variance":
        kwargs = {"kernel": args.kernel}
    picked = get_selector(args.method, **kwargs).select(X, args.k, rng=args.seed)
    write(args.output, [frames[int(i)] for i in picked])
    if args.indices:
        np.savetxt(args.indices, picked, fmt="%d")
    print(f"picked {len(picked)} of {len(frames)} structures by {args.method} -> {args.output}")
    return 0
