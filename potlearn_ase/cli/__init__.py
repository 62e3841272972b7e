"""The ``potlearn`` command.

Sub-commands::

    potlearn demo                      on-the-fly learning of fcc Cu with EMT (the README demo)
    potlearn otf config.yaml           an on-the-fly learning run from a configuration
    potlearn otf --resume RUN_DIR      continue a killed run without repeating reference calls
    potlearn fit train.xyz -o model.pt fit a committee to labelled structures
    potlearn eval model.pt test.xyz    errors and uncertainty calibration on labelled structures
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from potlearn_ase import __version__
from potlearn_ase.cli.common import DefaultsHelpFormatter, add_label_key_arguments
from potlearn_ase.errors import PotlearnError, UnknownElementError

__all__ = ["main", "DEMO_CONFIG"]

DEMO_CONFIG: dict[str, Any] = {
    "structure": {
        "bulk": "Cu",
        "crystalstructure": "fcc",
        "a": 3.61,
        "cubic": True,
        "repeat": [2, 2, 2],
    },
    "reference": "emt",
    "model": {"kind": "linear", "cutoff": 5.0, "n_radial": 6, "l_max": 2, "n_members": 8},
    "md": {
        "ensemble": "langevin",
        "timestep_fs": 2.0,
        "steps": 2000,
        "temperature_K": [300.0, 1200.0],
        "friction": 0.02,
        "seed": 0,
    },
    "trigger": {"kind": "adaptive", "factor": 1.2, "min_gap": 5},
    "initial": {"n_labels": 1, "rattle": 0.05},
    "validation": {"temperatures_K": [300.0, 700.0, 1200.0], "frames": 10, "every": 20},
    "run_dir": "demo-run",
}


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"MD steps:                 {summary['steps']}")
    print(
        f"reference calls:          {summary['reference_calls']} "
        f"(including {summary.get('initial_reference_calls', 0)} for the starting structure)"
    )
    print(
        f"wall time:                {summary['wall_time_s']:.1f} s "
        f"(reference {summary['reference_time_s']:.2f} s)"
    )
    if "force_rmse" in summary:
        print(
            f"held-out force RMSE:      {summary['force_rmse']:.4f} eV/A "
            f"on {summary['validation_frames']} independent reference frames"
        )
        for T, v in summary["force_rmse_by_temperature"].items():
            print(f"  at {T:>5s} K:             {v:.4f} eV/A")
        print(
            f"|error| <= sigma for      {100 * summary['sigma_coverage_1']:.1f} % "
            "of force components (68.3 % expected)"
        )
    note = ""
    if not summary.get("label_steps"):
        note = " (not calibrated: no label was taken after the start; sigma is the raw spread)"
    print(f"calibration alpha:        {summary['calibration']:.3f}{note}")


def _cmd_demo(args: argparse.Namespace) -> int:
    from potlearn_ase.learners.run import run_otf

    cfg = dict(DEMO_CONFIG)
    cfg["run_dir"] = args.run_dir
    if args.steps is not None:
        cfg["md"] = {**cfg["md"], "steps": args.steps}
    run_dir = Path(args.run_dir)
    from potlearn_ase.learners.run_dir import prepare_demo_dir

    prepare_demo_dir(run_dir, cfg)  # replaces only a run the demo made (marker file)
    print("potlearn demo: on-the-fly learning of fcc Cu (32 atoms) with ASE's EMT as reference,")
    print(
        f"Langevin MD heating 300 -> 1200 K over {cfg['md']['steps']} steps of 2 fs, "
        "starting from one labelled structure."
    )
    summary = run_otf(cfg)
    _print_summary(summary)
    print(f"run directory: {run_dir} (summary.json, model.pt, labels.h5, plots)")
    return 0


def _cmd_otf(args: argparse.Namespace) -> int:
    from potlearn_ase.learners.run import run_otf

    if args.resume:
        summary = run_otf(args.resume, resume=True)
    else:
        if args.config is None:
            raise SystemExit("potlearn otf: give a config file or --resume RUN_DIR")
        summary = run_otf(args.config, run_dir=args.run_dir)
    _print_summary(summary)
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:

    from potlearn_ase.data.io import read
    from potlearn_ase.data.labels import LabelKeys
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.errors import DataFormatError
    from potlearn_ase.models import LinearFitConfig, fit_linear
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
    desc = ACEDescriptor(
        elements,
        ACEConfig(
            cutoff=args.cutoff, n_radial=args.n_radial, l_max=args.l_max, body_order=args.body_order
        ),
    )
    stage(f"fitting a {args.kind} committee of {args.members} to {len(train)} structures "
          f"({desc.n_features} features per element)")
    if args.kind == "linear":
        config = LinearFitConfig(
            n_members=args.members,
            energy_weight=args.energy_weight,
            force_weight=args.force_weight,
            stress_weight=args.stress_weight,
            lam=parse_lam(args.lam),
            temper=args.temper,
            weights=args.weights,
        )
        model = fit_linear(desc, train, config, rng=args.seed, progress=True)
        if model.noise is not None:
            e, f, s = model.noise.sigma
            stage(f"inferred noise: energy {1000 * e:.3g} meV/atom, forces {f:.3g} eV/A, "
                  f"stress {1000 * s:.3g} meV/atom (virial)")
    else:
        from potlearn_ase.training.trainer import NeuralTrainConfig, train_neural

        model, _ = train_neural(
            desc,
            train,
            val or None,
            NeuralTrainConfig(n_members=args.members, epochs=args.epochs, seed=args.seed),
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="potlearn",
        description="Active learning of machine-learned interatomic potentials for ASE.",
    )
    p.add_argument("--version", action="version", version=f"potlearn-ase {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="on-the-fly learning of fcc Cu with EMT")
    d.add_argument("--run-dir", default="demo-run")
    d.add_argument("--steps", type=int, default=None, help="MD steps (default 2000)")
    d.set_defaults(func=_cmd_demo)

    o = sub.add_parser("otf", help="on-the-fly learning from a YAML configuration")
    o.add_argument("config", nargs="?", help="configuration file (YAML)")
    o.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    o.add_argument("--run-dir", default=None, help="override the configuration's run_dir")
    o.set_defaults(func=_cmd_otf)

    f = sub.add_parser("fit", help="fit a committee to labelled structures (extxyz)")
    f.add_argument("train")
    f.add_argument("-o", "--output", default="model.pt")
    f.add_argument("--val", help="validation structures (calibration and metrics)")
    f.add_argument("--kind", choices=["linear", "neural"], default="linear")
    f.add_argument("--cutoff", type=float, default=5.0,
                   help="descriptor cutoff radius in Angstrom (default %(default)s)")
    f.add_argument("--n-radial", type=int, default=8,
                   help="radial functions per neighbour element (default %(default)s)")
    f.add_argument("--l-max", type=int, default=2,
                   help="highest angular degree, 0 to 3 (default %(default)s)")
    f.add_argument("--body-order", type=int, default=3, choices=[3, 4],
                   help="3 (pair correlations) or 4 (adds radial triple products) "
                   "(default %(default)s)")
    unset = "default 30, 1 and 1 for energy, force and stress"
    f.add_argument("--energy-weight", type=float, default=None, metavar="W",
                   help=f"linear: weight of a per-atom energy residual in 1/(eV/atom) ({unset})")
    f.add_argument("--force-weight", type=float, default=None, metavar="W",
                   help=f"linear: weight of a force component residual in 1/(eV/A) ({unset})")
    f.add_argument("--stress-weight", type=float, default=None, metavar="W",
                   help="linear: weight of a virial-per-atom residual in 1/(eV/atom), 0 ignores "
                   f"stress ({unset})")
    f.add_argument("--lam", default="evidence",
                   help="linear: ridge parameter (dimensionless, relative to the weighted, "
                   "scaled features) or 'evidence' to maximise the marginal likelihood "
                   "(default %(default)s)")
    f.add_argument("--weights", choices=["fixed", "inferred"], default="fixed",
                   help="linear: fixed weights, or each label type's noise level inferred from "
                   "the data (then give no weight) (default %(default)s)")
    f.add_argument("--temper", choices=["structures", "none"], default="structures",
                   help="linear, inferred weights: each label type weighs as much as its "
                   "structures, or every row counts alike (default %(default)s)")
    f.add_argument("--members", "--committee", dest="members", type=int, default=8,
                   help="committee size (as potlearn train --committee)")
    f.add_argument("--epochs", type=int, default=200)
    f.add_argument("--seed", type=int, default=0)
    add_label_key_arguments(f)
    f.set_defaults(func=_cmd_fit)

    e = sub.add_parser("eval", help="errors and sigma coverage of a model on labelled structures")
    e.add_argument("model")
    e.add_argument("data")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("--plot", metavar="DIR", help="write parity, error-vs-sigma, calibration PNGs")
    e.add_argument("--group-by", default="config_type", metavar="KEY",
                   help="info key whose values get their own rows (default config_type)")
    add_label_key_arguments(e)
    e.set_defaults(func=_cmd_eval)

    import importlib

    for module in _EXTENSIONS:
        importlib.import_module(module).add_subparser(sub)
    for command in sub.choices.values():  # every option's help ends with its default
        command.formatter_class = DefaultsHelpFormatter
    return p


#: modules that register further sub-commands (each has ``add_subparser(subparsers)``)
_EXTENSIONS = [
    "potlearn_ase.cli.ipi",
    "potlearn_ase.cli.lammps",
    "potlearn_ase.cli.select",
    "potlearn_ase.cli.al",
    "potlearn_ase.cli.train",
    "potlearn_ase.cli.analysis",
]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return int(args.func(args))
    except (PotlearnError, FileNotFoundError) as exc:
        print(f"potlearn: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
