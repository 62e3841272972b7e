"""``potlearn al``: pool-based active learning from the command line."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from potlearn_ase.cli.common import add_config_options, config_from_args
from potlearn_ase.data.store import LabelStore
from potlearn_ase.descriptors import ACEConfig
from potlearn_ase.errors import UnknownElementError
from potlearn_ase.learners.pool import PoolConfig, PoolLearner
from potlearn_ase.learners.reference import Reference

__all__ = ["add_subparser"]

log = logging.getLogger(__name__)


def add_subparser(subparsers: Any) -> None:
    """Register ``potlearn al`` on an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "al",
        help="pool-based active learning: label the most informative structures of a pool",
    )
    p.add_argument("pool", help="candidate structures (extxyz or any ASE-readable file)")
    p.add_argument("--reference", default="emt", help="reference calculator name (emt, tblite)")
    add_config_options(
        p,
        PoolConfig,
        skip=("candidate_factor", "reduce"),
        aliases={"n_seed": ["--seed-size"], "batch_size": ["--batch"]},
    )
    p.add_argument("--val", help="labelled validation structures (learning curve, target)")
    p.add_argument("--run-dir", default="al-run", help="directory of the labels and the model")
    add_config_options(p, ACEConfig, dest_prefix="descriptor_")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_al)


class _ProgressBar:
    """A run callback showing labels against the budget, reference calls and the last errors."""

    def __init__(self, budget: int, *, disable: bool = False):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=budget, desc="al", unit="label", disable=disable)

    def __call__(self, learner: PoolLearner) -> None:
        last = learner.curve[-1] if learner.curve else {}
        post = {"calls": learner.n_reference_calls}
        for key, name in (("batch_force_rmse", "batchF"), ("val_force_rmse", "valF")):
            if last.get(key) is not None:
                post[name] = f"{last[key]:.4f}"
        self.bar.n = learner.n_labelled
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(0)


def _cmd_al(args: argparse.Namespace) -> int:
    from potlearn_ase.data.io import read
    from potlearn_ase.descriptors import ACEDescriptor

    pool = read(args.pool, index=":")
    val = read(args.val, index=":") if args.val else None
    elements = sorted({s for a in pool for s in a.get_chemical_symbols()})
    if val:
        for k, a in enumerate(val):
            extra = sorted(set(a.get_chemical_symbols()) - set(elements))
            if extra:
                raise UnknownElementError(
                    extra[0], elements, where=f"{args.val}, structure {k} (not in {args.pool})"
                )
    desc = ACEDescriptor(
        elements, config_from_args(ACEConfig, args, dest_prefix="descriptor_")
    )
    settings = config_from_args(PoolConfig, args)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with LabelStore(run_dir / "labels.h5") as store:
        learner = PoolLearner(
            pool, desc, Reference.from_spec(args.reference), store,
            settings=settings, validation=val, run_dir=run_dir,
        )
        progress = _ProgressBar(settings.budget, disable=args.quiet)
        try:
            summary = learner.run(callback=progress)
        finally:
            progress.bar.close()
    print(f"labelled {summary['n_labelled']} of {len(pool)} structures "
          f"({summary['n_reference_calls']} reference calls this run, "
          f"{summary['n_failed']} failures)")
    if summary["val_force_rmse"] is not None:
        print(f"validation force RMSE: {summary['val_force_rmse']:.4f} eV/A")
    print(f"learning curve: {run_dir / 'learning_curve.json'}, {run_dir / 'learning_curve.png'}")
    return 0
