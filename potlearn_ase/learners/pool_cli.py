"""The pool learner's learning curve (read back on resume, plotted) and ``potlearn al``."""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from potlearn_ase.data.store import LabelStore
from potlearn_ase.errors import UnknownElementError
from potlearn_ase.learners.pool import DIVERSITY, PoolLearner, PoolSettings
from potlearn_ase.learners.reference import Reference

__all__ = ["add_subparser", "plot_learning_curve", "read_learning_curve"]

log = logging.getLogger(__name__)


def read_learning_curve(
    run_dir: str | os.PathLike | None, n_labelled: int
) -> list[dict[str, Any]]:
    """The learning curve that earlier runs wrote to ``run_dir`` (a resumed run continues it).

    Points past ``n_labelled`` (the labels the store holds now) belong to another store and
    are dropped; an unreadable file gives an empty curve, with a warning.
    """
    path = Path(run_dir) / "learning_curve.json" if run_dir is not None else None
    if path is None or not path.exists():
        return []
    try:
        curve = json.loads(path.read_text()).get("curve", [])
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("%s: earlier learning curve not readable (%s); starting a new one", path, exc)
        return []
    return [p for p in curve if p.get("n_labels", 0) <= n_labelled]


def plot_learning_curve(curve: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Force RMSE against the number of labels (validation, and prequential per batch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 3.6), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key, label in (("val_force_rmse", "validation"), ("batch_force_rmse", "next batch")):
        pts = [(p["n_labels"], p[key]) for p in curve if p.get(key) is not None]
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, "o-", ms=3, label=label)
    ax.set_xlabel("labelled structures")
    ax.set_ylabel("force RMSE (eV/A)")
    ax.set_yscale("log")
    ax.legend()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


# ---------------------------------------------------------------------- command
def add_subparser(subparsers: Any) -> None:
    """Register ``potlearn al`` on an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "al",
        help="pool-based active learning: label the most informative structures of a pool",
    )
    p.add_argument("pool", help="candidate structures (extxyz or any ASE-readable file)")
    p.add_argument("--reference", default="emt", help="reference calculator name (emt, tblite)")
    p.add_argument("--budget", type=int, default=200)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--seed-size", type=int, default=10)
    p.add_argument("--score", choices=["sigma", "gamma", "both"], default="gamma")
    p.add_argument("--diversity", choices=list(DIVERSITY), default="variance")
    p.add_argument("--max-scored", type=int, default=2000)
    p.add_argument("--explore", type=float, default=0.0,
                   help="share of each batch drawn at random from the pool (0 to <1)")
    p.add_argument("--density", type=float, default=0.0,
                   help="exponent of the representativeness weight on the score (0: none)")
    p.add_argument("--val", help="labelled validation structures (learning curve, target)")
    p.add_argument("--target-rmse", type=float, default=None, help="stop at this force RMSE")
    p.add_argument("--run-dir", default="al-run")
    p.add_argument("--cutoff", type=float, default=5.0)
    p.add_argument("--n-radial", type=int, default=6)
    p.add_argument("--l-max", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
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
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor

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
        elements, ACEConfig(cutoff=args.cutoff, n_radial=args.n_radial, l_max=args.l_max)
    )
    settings = PoolSettings(
        n_seed=args.seed_size,
        batch_size=args.batch,
        budget=args.budget,
        score=args.score,
        diversity=args.diversity,
        max_scored=args.max_scored,
        target_rmse=args.target_rmse,
        explore=args.explore,
        density=args.density,
        seed=args.seed,
    )
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
