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
from potlearn_ase.data.labels import add_label_key_arguments
from potlearn_ase.errors import ConfigError, PotlearnError, UnknownElementError

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
    if run_dir.exists() and (run_dir / "state.json").exists():
        import shutil

        import yaml

        try:
            old = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError):
            old = {}
        ours = all(
            (old.get(section) or {}).get(k) == v
            for section in ("structure", "trigger")
            for k, v in DEMO_CONFIG[section].items()
        )
        if not ours:
            raise ConfigError(
                f"{run_dir} holds a potlearn run that is not a demo run; the demo replaces "
                "only its own runs: give another --run-dir"
            )
        shutil.rmtree(run_dir)  # an earlier demo run
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

    keys = LabelKeys.from_args(args)
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
    if args.descriptor == "ace":
        from potlearn_ase.descriptors import FullACEConfig, FullACEDescriptor

        degree = args.max_degree if args.max_degree is None else tuple(args.max_degree)
        desc = FullACEDescriptor(  # type: ignore[assignment]
            elements,
            FullACEConfig(cutoff=args.cutoff, correlation_order=args.correlation_order,
                          max_degree=degree[0] if degree and len(degree) == 1 else degree),
        )
    if args.kind == "linear":
        model = fit_linear(
            desc, train, LinearFitConfig(n_members=args.members), rng=args.seed, progress=True
        )
    else:
        from potlearn_ase.training.trainer import NeuralTrainConfig, train_neural

        model, _ = train_neural(
            desc,
            train,
            val or None,
            NeuralTrainConfig(n_members=args.members, epochs=args.epochs, seed=args.seed),
            progress=True,
        )
    from potlearn_ase.training.cli import save_calibrated

    return save_calibrated(model, train, val, args.output)


def _cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    import potlearn_ase
    from potlearn_ase.data.io import read
    from potlearn_ase.data.labels import LabelKeys
    from potlearn_ase.data.validate import require_labels
    from potlearn_ase.errors import DataFormatError

    calc = potlearn_ase.load(args.model)
    frames = list(read(args.data, labels=LabelKeys.from_args(args)))
    if not frames:
        raise DataFormatError(f"{args.data}: no structures to evaluate")
    elements = set(calc.model.descriptor.elements)
    for k, a in enumerate(frames):
        where = f"{args.data}, frame {k}"
        require_labels(a, energy=True, forces=True, where=where)
        extra = sorted(set(a.get_chemical_symbols()) - elements)
        if extra:
            raise UnknownElementError(extra[0], sorted(elements), where=where)
    err, std, e_err = [], [], []
    for a in frames:
        b = a.copy()
        b.calc = calc
        F = b.get_forces()
        err.append((F - a.get_forces()).ravel())
        std.append(calc.results["forces_std"].ravel())
        e_err.append((b.get_potential_energy() - a.get_potential_energy()) / len(a))
    e, s = np.concatenate(err), np.concatenate(std)
    out = {
        "frames": len(frames),
        "force_rmse": float(np.sqrt(np.mean(e**2))),
        "force_mae": float(np.mean(np.abs(e))),
        "energy_rmse_per_atom": float(np.sqrt(np.mean(np.square(e_err)))),
        "sigma_coverage_1": float(np.mean(np.abs(e) <= s)),
    }
    print(json.dumps(out, indent=2))
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
    f.add_argument("--cutoff", type=float, default=5.0)
    f.add_argument("--n-radial", type=int, default=8)
    f.add_argument("--l-max", type=int, default=2)
    f.add_argument("--body-order", type=int, default=3)
    f.add_argument("--descriptor", choices=["power-spectrum", "ace"], default="power-spectrum",
                   help="power-spectrum (keys --n-radial --l-max --body-order) or the many-body "
                   "ace (keys --correlation-order --max-degree)")
    f.add_argument("--correlation-order", type=int, default=4, help="ace: highest nu")
    f.add_argument("--max-degree", type=float, nargs="+", help="ace: total degree per order")
    f.add_argument("--members", "--committee", dest="members", type=int, default=8,
                   help="committee size (as potlearn train --committee)")
    f.add_argument("--epochs", type=int, default=200)
    f.add_argument("--seed", type=int, default=0)
    add_label_key_arguments(f)
    f.set_defaults(func=_cmd_fit)

    e = sub.add_parser("eval", help="errors and sigma coverage of a model on labelled structures")
    e.add_argument("model")
    e.add_argument("data")
    add_label_key_arguments(e)
    e.set_defaults(func=_cmd_eval)

    import importlib

    for module in _EXTENSIONS:
        importlib.import_module(module).add_subparser(sub)
    return p


#: modules that register further sub-commands (each has ``add_subparser(subparsers)``)
_EXTENSIONS = [
    "potlearn_ase.calculators.ipi",
    "potlearn_ase.calculators.lammps_cli",
    "potlearn_ase.selection.cli",
    "potlearn_ase.learners.pool_cli",
    "potlearn_ase.training.cli",
    "potlearn_ase.analysis.cli",
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
