"""The ``potlearn`` command: one module per command group.

Sub-commands::

    potlearn demo | otf            on-the-fly learning (:mod:`potlearn_ase.cli.otf`)
    potlearn fit | eval            fit a committee, measure a model (:mod:`potlearn_ase.cli.fit`)
    potlearn train                 fit across MPI ranks (:mod:`potlearn_ase.cli.train`)
    potlearn ipi | lammps          serve i-PI, drive a LAMMPS deck (:mod:`.ipi`, :mod:`.lammps`)
    potlearn select | al           subsampling, pool active learning (:mod:`.select`, :mod:`.al`)
    potlearn hyperopt | qoi        hyperparameters, quantities of interest (:mod:`.analysis`)

Every option's ``--help`` ends with its default, read from the configuration dataclasses.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from potlearn_ase import __version__
from potlearn_ase.cli.common import DefaultsHelpFormatter
from potlearn_ase.cli.otf import DEMO_CONFIG
from potlearn_ase.errors import PotlearnError

__all__ = ["DEMO_CONFIG", "build_parser", "main"]

#: the modules of the sub-commands (each has ``add_subparser(subparsers)``), in --help order
COMMANDS = [
    "potlearn_ase.cli.otf",
    "potlearn_ase.cli.fit",
    "potlearn_ase.cli.ipi",
    "potlearn_ase.cli.lammps",
    "potlearn_ase.cli.select",
    "potlearn_ase.cli.al",
    "potlearn_ase.cli.train",
    "potlearn_ase.cli.analysis",
]


def build_parser() -> argparse.ArgumentParser:
    """The ``potlearn`` parser with every sub-command."""
    p = argparse.ArgumentParser(
        prog="potlearn",
        description="Active learning of machine-learned interatomic potentials for ASE.",
    )
    p.add_argument("--version", action="version", version=f"potlearn-ase {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        importlib.import_module(module).add_subparser(sub)
    for command in sub.choices.values():  # every option's help ends with its default
        command.formatter_class = DefaultsHelpFormatter
    return p


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
