"""Sub-commands ``potlearn hyperopt`` and ``potlearn qoi``.

::

    potlearn hyperopt config.yaml [--output-dir DIR] [--method tpe] [--n-trials 30]
                 [--time-budget SECONDS] [--resume]
    potlearn qoi model.pt --structure bulk:Cu:fcc:3.61 [--reference emt] [--samples 64]
                 [--qoi eos,elastic,vacancy,phonons,rdf] [--plot bands.png] [--json qoi.json]
                 [--sensitivity [N]] [--train train.xyz] [--sensitivity-plot sens.png]

Each module-level ``add_*_subparser(subparsers)`` registers one sub-command whose ``func``
takes the parsed namespace and returns an exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ase import Atoms

from potlearn_ase.errors import ConfigError

__all__ = ["add_hyperopt_subparser", "add_qoi_subparser", "add_subparser", "structure_from_spec"]


def structure_from_spec(spec: str) -> Atoms:
    """A unit cell from ``bulk:<symbol>:<structure>:<a>[:cubic]`` or a structure file.

    Examples: ``bulk:Cu:fcc:3.61`` (primitive fcc Cu, a = 3.61 A), ``bulk:Fe:bcc:2.87:cubic``,
    ``cell.xyz`` (the last frame of any file :func:`ase.io.read` takes).
    """
    if spec.startswith("bulk:"):
        from ase.build import bulk

        parts = spec.split(":")[1:]
        if len(parts) < 2 or len(parts) > 4:
            raise ConfigError(
                f"structure {spec!r}: expected bulk:<symbol>:<structure>[:<a>][:cubic]"
            )
        kwargs: dict[str, Any] = {"crystalstructure": parts[1]}
        rest = parts[2:]
        if rest and rest[-1] == "cubic":
            kwargs["cubic"] = True
            rest = rest[:-1]
        if rest:
            try:
                kwargs["a"] = float(rest[0])
            except ValueError:
                raise ConfigError(
                    f"structure {spec!r}: lattice constant {rest[0]!r} is not a number"
                ) from None
        try:
            return bulk(parts[0], **kwargs)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ConfigError(f"structure {spec!r}: {exc}") from None
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"structure file not found: {path}")
    from ase.io import read

    atoms = read(path, index=-1)
    assert isinstance(atoms, Atoms)
    if not atoms.pbc.all():
        raise ConfigError(f"{path}: the QoIs need a fully periodic cell")
    return atoms


# --------------------------------------------------------------------------- hyperopt
def _cmd_hyperopt(args: argparse.Namespace) -> int:
    from potlearn_ase.analysis.hyperopt import HyperoptConfig, run_hyperopt
    from potlearn_ase.config import load_config

    config = load_config(HyperoptConfig, args.config)
    changes: dict[str, Any] = {}
    if args.method is not None:
        changes["method"] = args.method
    if args.n_trials is not None:
        changes["n_trials"] = args.n_trials
    if args.time_budget is not None:
        changes["time_budget_s"] = args.time_budget
    if changes:
        config = dataclasses.replace(config, **changes)
    out = args.output_dir or config.output_dir or "hyperopt"
    result = run_hyperopt(config, output_dir=out, progress=not args.quiet, resume=args.resume)
    w = config.energy_error_weight
    print(f"error = F RMSE (eV/A) + {w:g} x E RMSE (eV/atom); "
          f"loss = error + {config.cost_weight:g} x cost (us/atom); on the validation set")
    print(f"{'#':>3} {'error':>9} {'F RMSE':>9} {'E RMSE':>9} {'cost':>8} {'loss':>9}  params")
    print(f"{'':>3} {'':>9} {'(eV/A)':>9} {'(meV/at)':>9} {'(us/at)':>8} {'':>9}")
    front = {t.number for t in result.pareto()}
    for t in result.trials:
        mark = "*" if t.number in front else " "
        print(f"{t.number:>3} {t.error:>9.4g} {t.force_rmse:>9.4g} {1e3 * t.energy_rmse:>9.3g} "
              f"{t.cost_us_per_atom:>8.1f} {t.loss:>9.4g} {mark} {t.params}")
    print(f"best (lowest loss): trial {result.best.number}: {result.best.params}")
    if result.stopped == "time_budget":
        print(f"stopped by the time budget ({config.time_budget_s:g} s) after "
              f"{len(result.trials)} of {config.n_trials} trials; --resume continues")
    print(f"(* Pareto front)  wrote {Path(out) / 'trials.jsonl'} (one line per trial), "
          f"{Path(out) / 'trials.json'} and {Path(out) / 'pareto.png'}")
    return 0


def add_hyperopt_subparser(subparsers: Any) -> None:
    """Register ``potlearn hyperopt config.yaml``."""
    p = subparsers.add_parser(
        "hyperopt", help="optimise linear-ACE hyperparameters on validation data"
    )
    p.add_argument("config", help="YAML: train, val, space, method, n_trials, cost_weight, ...")
    p.add_argument("--output-dir", default=None, help="where trials.json and pareto.png go")
    p.add_argument("--method", choices=["grid", "random", "lhs", "tpe"], default=None,
                   help="search method (overrides the configuration's)")
    p.add_argument("--n-trials", type=int, default=None,
                   help="number of trials (overrides the configuration's)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="start no trial after this wall time (config key time_budget_s)")
    p.add_argument("--resume", action="store_true",
                   help="continue the search in the output folder without redoing its trials")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_hyperopt)


# --------------------------------------------------------------------------- qoi
def _cmd_qoi(args: argparse.Namespace) -> int:
    import potlearn_ase
    from potlearn_ase.analysis.qoi import compute_qois, phonon_band_plot, posterior_committee

    calc = potlearn_ase.load(args.model)
    atoms = structure_from_spec(args.structure)
    which = tuple(w.strip() for w in args.qoi.split(",") if w.strip())
    source: Any = calc.model
    if args.samples is not None:
        source = posterior_committee(calc.model, args.samples, rng=args.seed)
    calibration = calc.calibration if args.calibration is None else args.calibration
    ph_opts = {"bands": args.plot is not None, "dos": args.plot is not None}
    report = compute_qois(source, atoms, which=which, calibration=calibration,
                          phonon_options=ph_opts, rng=args.seed, progress=not args.quiet)
    reference = None
    if args.reference:
        from potlearn_ase.learners.reference import Reference

        ref_calc = Reference.from_spec(args.reference).make_calculator()
        reference = compute_qois(ref_calc, atoms, which=which, phonon_options=ph_opts,
                                 rng=args.seed, progress=not args.quiet)
    n = next(iter(report.qois.values())).samples.size if report.qois else 0
    print(f"{args.model}: {n} samples, calibration {calibration:.3g}, structure {args.structure}")
    print(report.table(reference))
    if args.plot and report.phonons is not None:
        phonon_band_plot(report.phonons, args.plot,
                         reference=reference.phonons if reference is not None else None)
        print(f"phonon bands: {args.plot}")
    sens_out = None
    if args.sensitivity is not None:
        sens_out = _sensitivity(args, calc, report, which, ph_opts, calibration)
    if args.json:
        out = {"calibration": calibration, **report.to_dict()}
        if reference is not None:
            out["reference"] = reference.to_dict()
        if sens_out is not None:
            out["sensitivity"] = sens_out
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"table: {args.json}")
    return 0


def _sensitivity(
    args: argparse.Namespace,
    calc: Any,
    report: Any,
    which: tuple[str, ...],
    ph_opts: dict,
    calibration: float,
) -> dict[str, Any]:
    """``--sensitivity``: gradients along posterior directions, shares, training influence."""
    from potlearn_ase.analysis.qoi import compute_qois
    from potlearn_ase.analysis.sensitivity import (
        qoi_sensitivity,
        sensitivity_plot,
        sensitivity_table,
        training_influence,
    )

    if calc.model.kind != "linear" or getattr(calc.model, "posterior", None) is None:
        raise ConfigError(
            f"--sensitivity needs a linear model with its posterior; {args.model} holds a "
            f"{calc.model.kind} model"
        )
    structure = report.structure  # the mean model's equilibrium cell, held fixed

    def qois(model: Any) -> dict[str, Any]:
        return compute_qois(
            model, structure, which=which, relax_lattice=False,
            phonon_options={**ph_opts, "bands": False, "dos": False}, rng=args.seed,
        ).samples()

    n_dir = None if args.sensitivity == 0 else args.sensitivity
    sens = qoi_sensitivity(calc.model, qois, n_directions=n_dir, rng=args.seed)
    influence = None
    if args.train:
        from potlearn_ase.data.io import read

        frames = list(read(args.train))
        influence = training_influence(calc.model, frames, sens)
    print(
        f"\nsensitivity: first-order sigma of the raw posterior (the table above scales the "
        f"spread by the calibration {calibration:.3g}); influence = QoI change when the "
        "structure is left out"
    )
    print(sensitivity_table(sens, influence=influence))
    if args.sensitivity_plot:
        sensitivity_plot(sens, args.sensitivity_plot, influence=influence)
        print(f"sensitivity plot: {args.sensitivity_plot}")
    out: dict[str, Any] = {
        "qoi_names": list(sens.qoi_names),
        "first_order_std": [float(v) ** 0.5 for v in sens.variance],  # raw posterior
        "first_order_std_calibrated": [calibration * float(v) ** 0.5 for v in sens.variance],
        "top_parameters": {q: sens.top_parameters(q) for q in sens.qoi_names},
        "active_eigenvalues": sens.active_eigenvalues.tolist(),
    }
    if influence is not None:
        out["training_influence"] = influence.tolist()
    return out


def add_qoi_subparser(subparsers: Any) -> None:
    """Register ``potlearn qoi model.pt --structure ...``."""
    p = subparsers.add_parser("qoi", help="quantities of interest with committee uncertainty")
    p.add_argument("model", help="a saved potential (model.pt)")
    p.add_argument("--structure", required=True,
                   help="bulk:<symbol>:<structure>:<a>[:cubic] or a structure file")
    p.add_argument("--qoi", default="eos,elastic,vacancy,phonons",
                   help="comma-separated among eos, elastic, vacancy, phonons, rdf")
    p.add_argument("--samples", type=int, default=None,
                   help="draw this many posterior samples (linear models) instead of the members")
    p.add_argument("--calibration", type=float, default=None,
                   help="spread factor (default: the model's calibration)")
    p.add_argument("--reference", default=None, help="also compute with a reference, e.g. emt")
    p.add_argument("--plot", default=None, help="PNG of phonon bands with a sigma band")
    p.add_argument("--json", default=None, help="write the table as JSON")
    p.add_argument("--seed", type=int, default=0, help="seeds the posterior samples")
    p.add_argument(
        "--sensitivity", nargs="?", type=int, const=0, default=None, metavar="N",
        help="linear models: QoI gradients along the N leading posterior directions (all "
        "without N), variance shares per parameter and the active subspace",
    )
    p.add_argument(
        "--train", default=None,
        help="with --sensitivity: the training structures, for each one's influence on the QoIs",
    )
    p.add_argument("--sensitivity-plot", default=None, help="PNG of the sensitivity analysis")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar (stderr)")
    p.set_defaults(func=_cmd_qoi)


def add_subparser(subparsers: Any) -> None:
    """Register both ``potlearn hyperopt`` and ``potlearn qoi``."""
    add_hyperopt_subparser(subparsers)
    add_qoi_subparser(subparsers)
