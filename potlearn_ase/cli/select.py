"""``potlearn select``: pick ``k`` structures of a pool by any selector.

``potlearn select pool.xyz -k 100 --method dpp -o picked.xyz`` computes ACE structure
features of every frame of ``pool.xyz``, picks ``k`` and writes them (labels kept).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from potlearn_ase.cli.common import add_config_options, config_from_args
from potlearn_ase.descriptors import ACEConfig
from potlearn_ase.errors import ConfigError
from potlearn_ase.selection.registry import SELECTORS, get_selector

__all__ = ["add_subparser"]


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
    p.add_argument("--method", default="fps", choices=sorted(SELECTORS), help="selector")
    p.add_argument("-o", "--output", default="picked.xyz", help="where the picked frames go")
    p.add_argument("--indices", help="also write the picked indices here (one per line)")
    p.add_argument("--reduce", choices=["mean", "sum"], default=None,
                   help="structure features: mean or sum of the atoms' descriptors "
                   "(default: sum for doptimal, mean otherwise)")
    p.add_argument("--kernel", choices=["rbf", "imq", "dot"], default="rbf",
                   help="kernel of dpp and variance")
    p.add_argument("--dpp-mode", choices=["sample", "map"], default="sample",
                   help="dpp: draw a k-DPP sample, or its greedy maximum (MAP)")
    add_config_options(p, ACEConfig, dest_prefix="descriptor_")
    p.add_argument("--seed", type=int, default=0, help="seeds the random selectors")
    p.set_defaults(func=_cmd_select)


def _cmd_select(args: argparse.Namespace) -> int:
    from potlearn_ase.data.io import read, write
    from potlearn_ase.descriptors import ACEDescriptor
    from potlearn_ase.selection.kernels import descriptor_features

    frames = read(args.pool, index=":")
    if not frames:
        raise ConfigError(f"{args.pool}: no structures")
    if not 0 <= args.k <= len(frames):
        raise ConfigError(f"-k {args.k}: {args.pool} holds {len(frames)} structures")
    elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
    desc = ACEDescriptor(elements, config_from_args(ACEConfig, args, dest_prefix="descriptor_"))
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
