"""``potlearn fit`` and ``potlearn eval``: fit a committee to labelled structures, and measure
a model's errors and the calibration of its sigma."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from potlearn_ase.cli.common import add_label_key_arguments
from potlearn_ase.descriptors import ACEConfig
from potlearn_ase.descriptors.ace_full_config import FullACEConfig
from potlearn_ase.errors import UnknownElementError
from potlearn_ase.models import LinearFitConfig
from potlearn_ase.training.residual import RESIDUAL_DEFAULTS
from potlearn_ase.training.trainer import NeuralTrainConfig

__all__ = ["add_subparser"]


def _cmd_fit(args: argparse.Namespace) -> int:

    import numpy as np

    from potlearn_ase.data.io import read
    from potlearn_ase.data.labels import LabelKeys
    from potlearn_ase.descriptors import ACEDescriptor
    from potlearn_ase.errors import DataFormatError
    from potlearn_ase.models import fit_linear
    from potlearn_ase.models.noise import parse_lam

    def stage(text: str) -> None:
        print(f"potlearn: {text}", file=sys.stderr, flush=True)

    keys = LabelKeys.from_args(args)
    stage(f"reading {args.train}" + (f" and {args.val}" if args.val else ""))
    train = list(read(args.train, labels=keys))
    val = list(read(args.val, labels=keys)) if args.val else []
    if not train:
        raise DataFormatError(f"{args.train}: no structures to fit to")
    elements = sorted({s for a in train for s in a.get_chemical_symbols()})
    if args.descriptor == "ace":
        from potlearn_ase.descriptors import FullACEDescriptor

        degree = args.max_degree if args.max_degree is None else tuple(args.max_degree)
        desc: Any = FullACEDescriptor(
            elements,
            FullACEConfig(cutoff=args.cutoff, correlation_order=args.correlation_order,
                          max_degree=degree[0] if degree and len(degree) == 1 else degree,
                          l_max=args.l_max_ace, w_l=args.w_l),
        )
    else:
        desc = ACEDescriptor(
            elements,
            ACEConfig(cutoff=args.cutoff, n_radial=args.n_radial, l_max=args.l_max,
                      body_order=args.body_order),
        )
    stage(f"fitting a {args.kind} committee of {args.members} to {len(train)} structures "
          f"({desc.n_features} features per element)")
    if args.kind != "linear" and not val:
        # early stopping and calibration need structures the fit does not see
        order = np.random.default_rng(args.seed).permutation(len(train))
        n_val = max(1, len(train) // 10)
        val = [train[i] for i in order[:n_val]]
        train = [train[i] for i in sorted(order[n_val:])]
        stage(f"no --val: {n_val} structures of {args.train} held out for early stopping "
              "and calibration")
    if args.kind in ("linear", "nonlinear"):
        weights = args.weights or ("fixed" if any(
            w is not None for w in (args.energy_weight, args.force_weight, args.stress_weight)
        ) else "cv")
        config = LinearFitConfig(
            n_members=args.members,
            energy_weight=args.energy_weight,
            force_weight=args.force_weight,
            stress_weight=args.stress_weight,
            lam=parse_lam(args.lam),
            temper=args.temper,
            weights=weights,
        )
        model = fit_linear(desc, train, config, rng=args.seed, progress=True)
        if model.weight_search is not None:
            stage(f"weights by 5-fold cross-validation: energy {model.config.energy_weight:g}, "
                  f"force 1, stress {model.config.stress_weight:g}")
        if model.noise is not None:
            e, f, s = model.noise.sigma
            stage(f"inferred noise: energy {1000 * e:.3g} meV/atom, forces {f:.3g} eV/A, "
                  f"stress {1000 * s:.3g} meV/atom (virial)")
        if args.kind == "nonlinear":
            from dataclasses import replace

            from potlearn_ase.training.residual import RESIDUAL_DEFAULTS, train_residual

            stage("training the neural correction of each member (early stopping on "
                  f"{len(val)} validation structures)")
            cfg = replace(RESIDUAL_DEFAULTS, seed=args.seed,
                          epochs=args.epochs or RESIDUAL_DEFAULTS.epochs)
            model, _ = train_residual(model, train, val, cfg, progress=True)
    else:
        from potlearn_ase.training.trainer import train_neural

        model, _ = train_neural(
            desc,
            train,
            val,
            NeuralTrainConfig(n_members=args.members, seed=args.seed,
                              epochs=args.epochs or NeuralTrainConfig().epochs),
            progress=True,
        )
    from potlearn_ase.cli.train import save_calibrated

    return save_calibrated(model, train, val, args.output, progress=True)


def _cmd_eval(args: argparse.Namespace) -> int:
    import potlearn_ase
    from potlearn_ase.analysis.evaluation import evaluate_model
    from potlearn_ase.data.io import read
    from potlearn_ase.data.labels import LabelKeys
    from potlearn_ase.errors import DataFormatError

    calc = potlearn_ase.load(args.model)
    frames = list(read(args.data, labels=LabelKeys.from_args(args)))
    if not frames:
        raise DataFormatError(f"{args.data}: no structures to evaluate")
    elements = set(calc.model.descriptor.elements)
    for k, a in enumerate(frames):
        extra = sorted(set(a.get_chemical_symbols()) - elements)
        if extra:
            raise UnknownElementError(extra[0], sorted(elements), where=f"{args.data}, frame {k}")
    ev = evaluate_model(calc, frames, group_by=args.group_by, where=str(args.data),
                        progress=not args.json)
    if args.json:
        print(json.dumps({"model": str(args.model), "data": str(args.data), **ev.to_dict()},
                         indent=2))
    else:
        print(f"{args.model} on {args.data}")
        print(ev.table())
    if args.plot:
        paths = ev.plot(args.plot)
        print("plots: " + ", ".join(str(p) for p in paths), file=sys.stderr if args.json else None)
    return 0


def add_subparser(subparsers: Any) -> None:
    """Register ``potlearn fit`` and ``potlearn eval``; defaults come from the configuration
    dataclasses (:class:`ACEConfig`, :class:`LinearFitConfig`, :class:`NeuralTrainConfig`)."""
    ace, lin, nn, full = ACEConfig(), LinearFitConfig(), NeuralTrainConfig(), FullACEConfig()
    f = subparsers.add_parser("fit", help="fit a committee to labelled structures (extxyz)")
    f.add_argument("train", help="labelled training structures (extxyz or any ASE format)")
    f.add_argument("-o", "--output", default="model.pt", help="model file to write")
    f.add_argument("--val", help="validation structures (calibration and metrics)")
    f.add_argument("--kind", choices=["linear", "nonlinear", "neural"], default="linear",
                   help="linear (closed-form Bayesian), nonlinear (the linear members each "
                   "with a neural correction on the same features) or neural committee")
    f.add_argument("--cutoff", type=float, default=ace.cutoff,
                   help="descriptor cutoff radius in Angstrom")
    f.add_argument("--n-radial", type=int, default=ace.n_radial,
                   help="power-spectrum: radial functions per neighbour element")
    f.add_argument("--l-max", type=int, default=ace.l_max,
                   help="power-spectrum: highest angular degree, 0 to 3")
    f.add_argument("--body-order", type=int, default=ace.body_order, choices=[3, 4],
                   help="power-spectrum: 3 (pair correlations) or 4 (adds radial triple products)")
    unset = "none given: chosen by cross-validation; some given: the others 30, 1 and 1"
    f.add_argument("--energy-weight", type=float, default=lin.energy_weight, metavar="W",
                   help=f"linear: weight of a per-atom energy residual in 1/(eV/atom) ({unset})")
    f.add_argument("--force-weight", type=float, default=lin.force_weight, metavar="W",
                   help=f"linear: weight of a force component residual in 1/(eV/A) ({unset})")
    f.add_argument("--stress-weight", type=float, default=lin.stress_weight, metavar="W",
                   help="linear: weight of a virial-per-atom residual in 1/(eV/atom), 0 ignores "
                   f"stress ({unset})")
    f.add_argument("--lam", default=lin.lam,
                   help="linear: ridge parameter (dimensionless, relative to the weighted, "
                   "scaled features) or 'evidence' to maximise the marginal likelihood")
    f.add_argument("--weights", choices=["cv", "fixed", "inferred"], default=None,
                   help="linear: energy and stress weights chosen by 5-fold cross-validation "
                   "(default when no weight is given), fixed weights (default when one is), "
                   "or each label type's noise level inferred by evidence")
    f.add_argument("--temper", choices=["structures", "none"], default=lin.temper,
                   help="linear, inferred weights: each label type weighs as much as its "
                   "structures, or every row counts alike")
    f.add_argument("--descriptor", choices=["ace", "power-spectrum"], default="ace",
                   help="the many-body ace (keys --correlation-order --max-degree --l-max-ace "
                   "--w-l), or the cheaper three-body power-spectrum (keys --n-radial --l-max "
                   "--body-order)")
    f.add_argument("--correlation-order", type=int, default=full.correlation_order,
                   help="ace: highest correlation order nu (body order nu + 1)")
    f.add_argument("--max-degree", type=float, nargs="+", default=None,
                   help="ace: total degree per correlation order (not set: the descriptor's "
                   "defaults)")
    f.add_argument("--l-max-ace", type=int, default=full.l_max,
                   help="ace: highest angular degree of one-particle functions")
    f.add_argument("--w-l", type=float, default=full.w_l,
                   help="ace: weight of the angular degree in the degree rule")
    f.add_argument("--members", "--committee", dest="members", type=int, default=lin.n_members,
                   help="committee size (as potlearn train --committee)")
    f.add_argument("--epochs", type=int, default=None,
                   help=f"nonlinear and neural: maximum epochs (default {RESIDUAL_DEFAULTS.epochs} "
                   f"and {nn.epochs})")
    f.add_argument("--seed", type=int, default=0, help="seeds the committee")
    add_label_key_arguments(f)
    f.set_defaults(func=_cmd_fit)

    e = subparsers.add_parser("eval",
                              help="errors and sigma coverage of a model on labelled structures")
    e.add_argument("model", help="model file")
    e.add_argument("data", help="labelled structures")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("--plot", metavar="DIR", default=None,
                   help="write parity, error-vs-sigma, calibration PNGs into DIR")
    e.add_argument("--group-by", default="config_type", metavar="KEY",
                   help="info key whose values get their own rows")
    add_label_key_arguments(e)
    e.set_defaults(func=_cmd_eval)
