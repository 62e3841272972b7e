"""``potlearn ipi``: serve a model to a running i-PI, optionally learning on the fly.

The command reads the model and the structure i-PI starts from, connects an
:class:`~potlearn_ase.engines.ipi.client.IPIClient` to i-PI's socket and answers its force
requests until i-PI sends EXIT; with ``--learn CONFIG`` it runs
:func:`~potlearn_ase.engines.ipi.learning.run_ipi_learning` instead. :func:`add_subparser`
registers the command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ase import Atoms

from potlearn_ase.engines.ipi.protocol import DEFAULT_SOCKETS_PREFIX
from potlearn_ase.errors import ConfigError

__all__ = ["add_subparser"]


def _read_structure(path: str) -> Atoms:
    import ase.io

    if not Path(path).exists():
        raise FileNotFoundError(f"structure file not found: {path}")
    try:
        atoms = ase.io.read(path, index=0)
    except (ValueError, KeyError, IndexError, StopIteration) as exc:
        raise ConfigError(f"{path}: cannot read a structure ({exc})") from None
    assert isinstance(atoms, Atoms)
    return atoms


def _cmd_ipi(args: argparse.Namespace) -> int:
    import potlearn_ase
    from potlearn_ase.engines.ipi.client import IPIClient

    atoms = _read_structure(args.structure)
    potlearn_ase.set_cpu_threads(len(atoms))  # once for the run (one thread for small cells)
    calc = potlearn_ase.load(args.model)
    where: dict[str, Any] = (
        {"unixsocket": args.socket, "sockets_prefix": args.sockets_prefix}
        if args.port is None
        else {"host": args.host, "port": args.port}
    )
    if args.resume and not args.learn:
        raise ConfigError("--resume continues a learning run: give --learn config.yaml")
    if args.learn:
        from potlearn_ase.engines.ipi.learning import run_ipi_learning

        summary = run_ipi_learning(calc, atoms, args.learn, resume=args.resume, **where)
        print(json.dumps(summary, indent=2, default=float))
        return 0
    client = IPIClient.from_calculator(calc, atoms, extras=not args.no_extras, **where)
    stats = client.run()
    per = stats.served_seconds / max(stats.evaluations, 1)
    print(
        f"served {stats.evaluations} structures to i-PI: {1e3 * per:.2f} ms each "
        f"({1e3 * stats.evaluate_seconds / max(stats.evaluations, 1):.2f} ms in the model)"
    )
    return 0


def add_subparser(subparsers: Any) -> None:
    """Register ``potlearn ipi``: serve a model (optionally learning) to a running i-PI."""
    p = subparsers.add_parser(
        "ipi",
        help="serve a committee model to i-PI over a socket (optionally learning on the fly)",
        description="Connect to a running `i-pi input.xml` and answer its force requests until "
        "it sends EXIT. The committee goes to i-PI as JSON extras (ffcommittee, parse_json).",
    )
    p.add_argument("--model", required=True, help="model file written by `potlearn fit`")
    p.add_argument(
        "--structure",
        required=True,
        help="the structure i-PI starts from (species and periodicity; i-PI sends positions only)",
    )
    p.add_argument(
        "--socket", default="potlearn", help="i-PI <address> of a unix socket, or a path"
    )
    p.add_argument(
        "--sockets-prefix",
        default=DEFAULT_SOCKETS_PREFIX,
        help="i-PI's sockets_prefix (default /tmp/ipi_)",
    )
    p.add_argument("--port", type=int, default=None, help="use an inet socket on this port")
    p.add_argument("--host", default="localhost", help="loopback host for --port")
    p.add_argument("--no-extras", action="store_true", help="do not send the committee extras")
    p.add_argument(
        "--learn",
        metavar="CONFIG",
        default=None,
        help="learn on the fly: YAML with reference, trigger, run_dir (see docs)",
    )
    p.add_argument("--resume", action="store_true", help="continue the --learn run in run_dir")
    p.set_defaults(func=_cmd_ipi)
