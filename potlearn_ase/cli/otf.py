"""``potlearn demo`` and ``potlearn otf``: on-the-fly learning runs from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["DEMO_CONFIG", "add_subparser"]

DEMO_CONFIG: dict[str, Any] = {
    "structure": {
        "bulk": "Cu",
        "crystalstructure": "fcc",
        "a": 3.61,
        "cubic": True,
        "repeat": [2, 2, 2],
    },
    "reference": "emt",
    "model": {
        "kind": "linear",
        "descriptor": {"cutoff": 5.0, "n_radial": 6, "l_max": 2},
        "fit": {"energy_weight": 30.0, "force_weight": 1.0, "stress_weight": 1.0, "n_members": 8},
    },
    "md": {
        "ensemble": "langevin",
        "timestep_fs": 2.0,
        "steps": 2000,
        "temperature_K": [300.0, 1200.0],
        "friction": 0.02,
        "seed": 0,
    },
    "trigger": {"kind": "target", "force_error": 0.02},  # eV/A; the default target is 0.05
    "initial": {"n_labels": 1, "rattle": 0.1},
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
        note = " (from cross-validation on the starting labels; no label was taken after them)"
    print(f"calibration alpha:        {summary['calibration']:.3f}{note}")
    pe = summary.get("predicted_force_error") or {}
    if pe:
        print(
            f"predicted force error:    median {pe['median']:.4f}, 90 % {pe['p90']:.4f}, "
            f"99 % {pe['p99']:.4f}, max {pe['max']:.4f} eV/A over {pe['steps']} steps "
            "(the predicted force RMSE of each step)"
        )
        if "misfit" in pe:
            print(f"  of which the model's misfit, which labels cannot remove: {pe['misfit']:.4f}")
        if "target" in pe:
            print(
                f"  against the target {pe['target']:.4f} eV/A: above it at "
                f"{100 * pe['fraction_above_target']:.1f} % of the steps, "
                f"{100 * pe['fraction_above_target_last_tenth']:.1f} % of the last tenth"
            )


def _cmd_demo(args: argparse.Namespace) -> int:
    from potlearn_ase.learners.run import run_otf

    cfg = dict(DEMO_CONFIG)
    cfg["run_dir"] = args.run_dir
    cfg["md"] = {**cfg["md"], "steps": args.steps}
    run_dir = Path(args.run_dir)
    from potlearn_ase.learners.run_dir import prepare_demo_dir

    prepare_demo_dir(run_dir, cfg)  # replaces only a run the demo made (marker file)
    print("potlearn demo: on-the-fly learning of fcc Cu (32 atoms) with ASE's EMT as reference,")
    print(
        f"Langevin MD heating 300 -> 1200 K over {cfg['md']['steps']} steps of 2 fs, "
        "starting from one labelled structure; the reference is called only where the "
        f"predicted force error passes {cfg['trigger']['force_error']} eV/A."
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


def add_subparser(subparsers: Any) -> None:
    """Register ``potlearn demo`` and ``potlearn otf``."""
    d = subparsers.add_parser("demo", help="on-the-fly learning of fcc Cu with EMT")
    d.add_argument("--run-dir", default=DEMO_CONFIG["run_dir"],
                   help="run directory (replaced only when an earlier demo made it)")
    d.add_argument("--steps", type=int, default=DEMO_CONFIG["md"]["steps"],
                   help="MD steps of 2 fs")
    d.set_defaults(func=_cmd_demo)

    o = subparsers.add_parser("otf", help="on-the-fly learning from a YAML configuration")
    o.add_argument("config", nargs="?", help="configuration file (YAML, see docs/otf.md)")
    o.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR (no reference call is repeated)")
    o.add_argument("--run-dir", default=None, help="override the configuration's run_dir")
    o.set_defaults(func=_cmd_otf)
