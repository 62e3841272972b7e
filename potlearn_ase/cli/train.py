"""``potlearn train``: fit a committee, on one process or across MPI ranks.

::

    potlearn train train.xyz --committee 8 --kind linear -o model.pt [--val val.xyz]
    mpiexec -n 2 potlearn train train.xyz --committee 8 --kind neural -o model.pt
    mpiexec -n 2 potlearn train train.xyz --kind neural --split structures -o model.pt

Under ``mpiexec`` the structures are read on rank 0 and broadcast once; linear fits split the
accumulation of the normal equations, neural fits split the members (``--split members``, the
default: the result equals the serial one for the same ``--seed``) or the structures of every
batch (``--split structures``: data parallel and faster; the result equals a serial run with
``--split structures --shards R`` for ``R`` ranks, and a plain serial run to rounding), see
:mod:`potlearn_ase.training.mpi`; rank 0 writes the model. ``python -m
potlearn_ase.cli.train train ...`` runs the same command without the ``potlearn`` entry
point.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from potlearn_ase.cli.common import (
    add_config_options,
    add_label_key_arguments,
    config_from_args,
)
from potlearn_ase.descriptors import ACEConfig
from potlearn_ase.models import LinearFitConfig
from potlearn_ase.training.trainer import NeuralTrainConfig

__all__ = ["add_subparser", "main", "run_train"]

log = logging.getLogger(__name__)


def add_subparser(subparsers: Any) -> None:
    """Register ``train`` on an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "train",
        help="fit a committee to labelled structures (serial or under mpiexec)",
        description="Fit a linear or neural committee; under mpiexec the work is split "
        "across ranks and rank 0 writes the model.",
    )
    p.add_argument("train", help="labelled training structures (extxyz or any ASE format)")
    p.add_argument("-o", "--output", default="model.pt", help="model file (default model.pt)")
    p.add_argument("--val", help="validation structures: early stopping, calibration, metrics")
    add_label_key_arguments(p)
    p.add_argument("--kind", choices=["linear", "neural"], default="linear",
                   help="linear (closed-form Bayesian) or neural committee")
    p.add_argument("--committee", type=int, default=LinearFitConfig().n_members, metavar="M",
                   help="committee size")
    add_config_options(p, ACEConfig, dest_prefix="descriptor_")
    add_config_options(p, NeuralTrainConfig, only=("hidden", "epochs", "patience", "lr"),
                       dest_prefix="neural_")
    p.add_argument(
        "--batch-size",
        type=int,
        default=NeuralTrainConfig().batch_size,
        help="structures per batch (neural: per optimiser step; linear: per unit of work)",
    )
    p.add_argument(
        "--split",
        choices=["members", "structures"],
        default="members",
        help="neural under mpiexec: split the members over the ranks (identical to serial) or "
        "the structures of every batch (data parallel, faster; equal to serial to rounding)",
    )
    p.add_argument(
        "--shards",
        type=int,
        default=None,
        metavar="S",
        help="neural --split structures: shards per batch, whose gradients are added in order "
        "(default the number of ranks; give the same S to a serial run to reproduce it exactly)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (torch device)")
    p.add_argument("--seed", type=int, default=0, help="seeds the committee")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar (stderr)")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Run ``potlearn train`` from parsed arguments; returns the exit code."""

    from potlearn_ase.data.batch import resolve_device
    from potlearn_ase.data.io import read
    from potlearn_ase.descriptors import ACEDescriptor
    from potlearn_ase.errors import ConfigError, PotlearnError
    from potlearn_ase.training.mpi import broadcast, fit_linear_mpi, train_neural_mpi, world

    if args.committee < 1:
        raise ConfigError(f"--committee must be at least 1, got {args.committee}")
    if args.shards is not None and args.shards < 1:
        raise ConfigError(f"--shards must be at least 1, got {args.shards}")
    comm = world()
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    data: Any = None
    if rank == 0:
        # ASE's readers are collective once mpi4py is loaded; rank 0 reads alone here
        from potlearn_ase.data.labels import LabelKeys

        kw: dict[str, Any] = {"labels": LabelKeys.from_args(args)}
        if comm is not None:
            kw["parallel"] = False
        try:
            data = (list(read(args.train, **kw)), list(read(args.val, **kw)) if args.val else [])
        except (PotlearnError, OSError) as exc:
            if comm is None:
                raise
            data = exc  # every rank stops with rank 0's error instead of waiting for data
    data = broadcast(data, comm)
    if isinstance(data, Exception):
        raise data
    train, val = data
    elements = sorted({s for a in train for s in a.get_chemical_symbols()})
    desc = ACEDescriptor(
        elements,
        config_from_args(ACEConfig, args, dest_prefix="descriptor_"),
        device=resolve_device(args.device),
    )
    if args.kind == "linear":
        model = fit_linear_mpi(
            desc,
            train,
            LinearFitConfig(n_members=args.committee, batch_size=args.batch_size),
            rng=args.seed,
            comm=comm,
            progress=not args.quiet,
        )
    else:
        cfg = config_from_args(
            NeuralTrainConfig,
            args,
            dest_prefix="neural_",
            n_members=args.committee,
            batch_size=args.batch_size,
            device=args.device,
            seed=args.seed,
        )
        model, _ = train_neural_mpi(
            desc, train, val or None, cfg, comm=comm, split=args.split, shards=args.shards,
            progress=not args.quiet,
        )
    if rank != 0:
        return 0
    extra = {"split": args.split} if args.kind == "neural" else {}
    return save_calibrated(model, train, val, args.output, mpi_ranks=size, kind=args.kind, **extra)


def save_calibrated(
    model: Any,
    train: Sequence[Any],
    val: Sequence[Any],
    output: str,
    *,
    progress: bool = False,
    **extra: Any,
) -> int:
    """Calibrate, attach the active set of ``train``, save with metrics, print them as JSON.

    The calibration comes from ``val`` when given; without it, a linear model is calibrated by
    closed-form cross-validation over its own training structures, and a neural one keeps 1.0
    (with a warning: give validation structures). Forces (and stress) and energies get a
    factor each. With ``progress``, each stage is announced on stderr.
    """
    import numpy as np

    from potlearn_ase.calculators import CommitteeCalculator
    from potlearn_ase.models import attach_active_set
    from potlearn_ase.models.calibration import calibrate_by_type

    def stage(text: str) -> None:
        if progress:
            print(f"potlearn: {text}", file=sys.stderr, flush=True)

    stage("calibrating the committee spread" + (" on the validation set" if val else ""))
    factors, calibrated_on = calibrate_by_type(model, train, val, progress=progress)
    stage("building the active set of the training structures")
    attach_active_set(model, train)
    metrics: dict[str, Any] = {
        "n_train": len(train),
        "n_val": len(val),
        "calibrated_on": calibrated_on,
        **extra,
    }
    noise = getattr(model, "noise", None)
    if noise is not None:
        metrics["noise_sigma"] = {  # eV/atom, eV/A, eV/atom (virial); None: no such rows
            k: (float(v) if np.isfinite(v) else None)
            for k, v in zip(("energy", "forces", "stress"), noise.sigma)
        }
    if val:
        stage("evaluating the validation set")
        err = np.concatenate(
            [(model.predict(a)["forces"].mean(0) - a.get_forces()).ravel() for a in val]
        )
        metrics["val_force_rmse"] = float(np.sqrt(np.mean(err**2)))
    calc = CommitteeCalculator(
        model=model,
        calibration=factors["forces"],
        energy_calibration=factors["energy"],
        metrics=metrics,
    )
    stage(f"writing {output}")
    calc.save(output)
    print(
        json.dumps(
            {
                "model": str(output),
                "calibration": factors["forces"],
                "energy_calibration": factors["energy"],
                **metrics,
            },
            indent=2,
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m potlearn_ase.cli.train train ...``."""
    from potlearn_ase.errors import PotlearnError

    parser = argparse.ArgumentParser(prog="potlearn")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (PotlearnError, OSError) as exc:
        print(f"potlearn train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
