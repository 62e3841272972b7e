"""The ``potlearn lammps`` command: a deck with a committee, learning, or native SNAP."""

from __future__ import annotations

from typing import Any

from potlearn_ase.engines.lammps.driver import LammpsDriver
from potlearn_ase.errors import ConfigError

__all__ = ["add_subparser"]


def _cmd_lammps(args: Any) -> int:
    import json

    import potlearn_ase

    variables: dict[str, str] = {}
    for item in args.var or []:
        if "=" not in item:
            raise ConfigError(f"--var {item!r}: expected NAME=VALUE")
        name, value = item.split("=", 1)
        variables[name] = value
    if args.native is not None:
        if args.learn:
            raise ConfigError(
                "--native runs without uncertainty: it cannot be combined with --learn"
            )
        path = args.model if args.native is True else args.native
        if path is None:
            raise ConfigError("--native needs a model file: --native model.pt")
        from potlearn_ase.engines.lammps.native import run_native

        lmp = run_native(
            args.deck, potlearn_ase.load(path).model, prefix=args.snap_prefix,
            variables=variables, elements=args.elements,
        )
        print(json.dumps({"native": True, "energy": lmp.get_thermo("pe")}))
        lmp.close()
        return 0
    if args.learn:
        from potlearn_ase.engines.lammps.learning import run_lammps_learning

        summary = run_lammps_learning(
            args.deck,
            args.learn,
            model=args.model,
            elements=args.elements,
            variables=variables,
            resume=args.resume,
            snap_prefix=args.snap_prefix,
        )
        print(json.dumps(summary, indent=2, default=float))
        return 0
    if args.resume:
        raise ConfigError("--resume continues a learning run: give --learn config.yaml")
    if args.model is None:
        raise ConfigError("give --model model.pt (or --learn config.yaml to start from scratch)")
    calc = potlearn_ase.load(args.model)
    driver = LammpsDriver(args.deck, calc, elements=args.elements, variables=variables,
                          log=args.log or False, screen=args.screen)
    try:
        driver.run()
        print(
            json.dumps({"force_calls": driver.n_calls, "energy": driver.last_results.get("energy")})
        )
    finally:
        driver.close()
    return 0


def add_subparser(subparsers: Any) -> None:
    """Register ``potlearn lammps``."""
    p = subparsers.add_parser(
        "lammps",
        help="run a LAMMPS deck with a committee model (optionally learning on the fly)",
        description=_driver_doc(),
    )
    p.add_argument("deck", help="LAMMPS input with pair_style zero and fix external pf/callback")
    p.add_argument("--model", help="model file (potlearn fit / otf)")
    p.add_argument(
        "--learn",
        metavar="CONFIG",
        help="YAML: reference, trigger, run_dir, settings (and model, initial without --model)",
    )
    p.add_argument("--resume", action="store_true", help="continue the --learn run in run_dir")
    p.add_argument(
        "--native",
        nargs="?",
        const=True,
        default=None,
        metavar="MODEL",
        help="run a linear SNAP model (MODEL, or --model) natively with pair_style snap",
    )
    p.add_argument(
        "--snap-prefix",
        metavar="PREFIX",
        help="where the SNAP files go (--native), or are re-exported after each label (--learn)",
    )
    p.add_argument("--elements", nargs="+", help="element of each LAMMPS atom type")
    p.add_argument("--var", action="append", metavar="NAME=VALUE", help="LAMMPS -var setting")
    p.add_argument("--log", metavar="FILE", help="LAMMPS log file (thermo output); none by default")
    p.add_argument("--screen", action="store_true", help="print LAMMPS's screen output")
    p.set_defaults(func=_cmd_lammps)


def _driver_doc() -> str:
    from potlearn_ase.engines.lammps import driver as lammps_driver

    return lammps_driver.__doc__ or ""
