"""Serve a potential to i-PI: the driver side of the i-PI socket protocol, with committee extras.

i-PI runs the dynamics (classical MD, path-integral MD with any number of beads) and asks a
*driver* for the energy, forces and virial of each structure over a socket. This module is
that driver for any ASE calculator. For a committee (:class:`~.CommitteeCalculator`) it also
sends, in the JSON *extras* string of every reply, the committee members in the keys that
i-PI's ``<ffcommittee>`` reads with ``<parse_json>true</parse_json>``:

==================== ====================== ==============================================
key                  shape                  meaning (i-PI atomic units)
==================== ====================== ==============================================
committee_pot        (M,)                   members' energies (Hartree)
committee_force      (M, 3N)                members' forces (Hartree/Bohr)
committee_virial     (M, 9)                 members' virials, -V * stress (Hartree);
                                            only for fully periodic structures
energy_std_eV        float                  calibrated energy spread (eV, ASE units)
max_force_std_eV_A   float                  max per-atom force spread (eV/Angstrom)
calibration          float                  the calibration factor alpha already applied
==================== ====================== ==============================================

The members are sent *calibrated* and centred on the reported energetics:
``member_k = sent + alpha * (raw_k - mean(raw))``. So i-PI's committee mean equals the energy
and forces sent (the reference's on a step the on-the-fly learner labelled) and its spread is
our calibrated spread: set i-PI's own ``<alpha>`` to 1. (i-PI's ``committee_uncertainty`` uses
``ddof=1``, ours ``ddof=0``: they differ by ``sqrt(M / (M - 1))``.)

The protocol sends positions and the cell only: the client takes the species (and
periodicity) from a template structure. One client serves all beads in turn; with several
clients connected, i-PI spreads the beads over them. Unix-domain sockets are used by default;
inet sockets are restricted to the loopback interface.

Examples
--------
With ``i-pi input.xml`` running (``<ffsocket mode="unix"><address>cu</address>``)::

    from potlearn_ase.calculators.ipi import IPIClient
    client = IPIClient.from_calculator(potlearn_ase.load("model.pt"), atoms, unixsocket="cu")
    client.run()          # returns when i-PI sends EXIT

or ``potlearn ipi --model model.pt --socket cu --structure init.xyz``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress
from ase.units import Bohr, Hartree

from potlearn_ase.errors import ConfigError, EngineError

__all__ = [
    "DEFAULT_SOCKETS_PREFIX",
    "IPIClient",
    "IPIClientStats",
    "add_subparser",
    "committee_extras",
    "launch_ipi",
    "socket_path",
]

log = logging.getLogger(__name__)

DEFAULT_SOCKETS_PREFIX = "/tmp/ipi_"
"""i-PI's default prefix of unix socket paths: ``<address>cu</address>`` is ``/tmp/ipi_cu``."""

HDRLEN = 12
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}

Evaluator = Callable[[Atoms, int], Mapping[str, Any]]
"""``evaluate(atoms, request_id) -> results``: ASE-named results (eV, eV/A, eV/A^3)."""


def _header(word: str) -> bytes:
    return word.upper().ljust(HDRLEN).encode()


_STATUS, _INIT, _POSDATA, _GETFORCE, _EXIT = (
    _header(w) for w in ("STATUS", "INIT", "POSDATA", "GETFORCE", "EXIT")
)
_READY, _NEEDINIT, _HAVEDATA, _FORCEREADY = (
    _header(w) for w in ("READY", "NEEDINIT", "HAVEDATA", "FORCEREADY")
)


def socket_path(name: str, prefix: str = DEFAULT_SOCKETS_PREFIX) -> str:
    """The file of i-PI's unix socket ``<address>name</address>``.

    A ``name`` holding a ``/`` is taken as the full path already.
    """
    return name if "/" in name else prefix + name


# --------------------------------------------------------------------------- extras
def _virial_hartree(stress_voigt: np.ndarray, volume: float) -> np.ndarray:
    """i-PI's virial (3x3, Hartree, sent transposed like ASE's client) from ASE's stress."""
    return (-volume * voigt_6_to_full_3x3_stress(np.asarray(stress_voigt, float)) / Hartree).T


def committee_extras(
    results: Mapping[str, Any], atoms: Atoms, *, periodic: bool | None = None
) -> dict[str, Any]:
    """The JSON extras i-PI's ``ffcommittee`` (``parse_json``) reads, from ASE results.

    Parameters
    ----------
    results : mapping
        Results of a committee calculator: ``energy``, ``forces``, ``energy_committee`` (M),
        ``forces_committee`` (M, N, 3), ``calibration`` and, for periodic structures,
        ``stress`` and ``stress_committee`` (M, 6).
    atoms : Atoms
        The structure (its volume converts stresses to virials).
    periodic : bool, optional
        Send virials; default: ``atoms.pbc.all()`` and a stress in ``results``.

    Returns
    -------
    dict
        Empty for a calculator without a committee; otherwise the keys in the module docstring,
        members calibrated and centred on ``energy``/``forces``/``stress`` of ``results``.
    """
    if "energy_committee" not in results:
        return {}
    alpha = float(results.get("calibration", 1.0))
    e_members = np.asarray(results["energy_committee"], float)
    pot = (float(results["energy"]) + alpha * (e_members - e_members.mean())) / Hartree
    extras: dict[str, Any] = {"committee_pot": pot.tolist()}
    if "forces_committee" in results:
        f_members = np.asarray(results["forces_committee"], float)
        forces = np.asarray(results["forces"], float)
        f = (forces + alpha * (f_members - f_members.mean(0))) * (Bohr / Hartree)
        extras["committee_force"] = f.reshape(len(f), -1).tolist()
    if periodic is None:
        periodic = bool(atoms.pbc.all()) and "stress" in results
    if periodic and "stress_committee" in results:
        s_members = np.asarray(results["stress_committee"], float)
        s = np.asarray(results["stress"], float) + alpha * (s_members - s_members.mean(0))
        volume = atoms.get_volume()
        extras["committee_virial"] = [_virial_hartree(sk, volume).ravel().tolist() for sk in s]
    if "energy_std" in results:
        extras["energy_std_eV"] = float(results["energy_std"])
    if "max_force_std" in results:
        extras["max_force_std_eV_A"] = float(results["max_force_std"])
    extras["calibration"] = alpha
    return extras


# --------------------------------------------------------------------------- client
@dataclass
class IPIClientStats:
    """Counters of a client run (seconds are wall-clock)."""

    evaluations: int = 0
    evaluate_seconds: float = 0.0
    first_request: float | None = None
    last_reply: float | None = None

    @property
    def served_seconds(self) -> float:
        """Wall time from the first POSDATA to the last reply."""
        if self.first_request is None or self.last_reply is None:
            return 0.0
        return self.last_reply - self.first_request


class IPIClient:
    """A driver for i-PI: answers its STATUS / INIT / POSDATA / GETFORCE / EXIT messages.

    Parameters
    ----------
    atoms : Atoms
        Template structure: species and periodicity (i-PI sends positions and cell only).
        The client keeps its own copy and updates it in place at every request.
    evaluate : callable
        ``evaluate(atoms, request_id) -> results`` with ASE names and units: ``energy``
        (eV), ``forces`` (eV/A), ``stress`` (eV/A^3, Voigt, for periodic structures) and,
        for committees, the keys :func:`committee_extras` reads. ``request_id`` is i-PI's id
        of the request (the bead of a path-integral run, for a single system).
    unixsocket : str, optional
        i-PI's ``<address>`` of a unix socket (``/tmp/ipi_<name>``) or a path with a ``/``.
    host, port : str, int, optional
        An inet socket instead; only loopback hosts are accepted.
    sockets_prefix : str
        The prefix i-PI uses for unix sockets (its ``sockets_prefix`` setting).
    connect_timeout : float
        Seconds to wait for the server's socket to appear.
    extras : bool
        Send the committee extras (JSON) with every reply.
    track_requests : bool
        Ask i-PI for the request id before every structure (one more STATUS exchange per
        evaluation); otherwise the id of the first INIT is kept.
    server : subprocess.Popen, optional
        The i-PI process (e.g. from :func:`launch_ipi`): connecting fails at once if it exits.

    Examples
    --------
    >>> client = IPIClient.from_calculator(calc, atoms, unixsocket="cu")  # doctest: +SKIP
    >>> client.run()                                                      # doctest: +SKIP
    """

    def __init__(
        self,
        atoms: Atoms,
        evaluate: Evaluator,
        *,
        unixsocket: str | None = None,
        host: str | None = None,
        port: int | None = None,
        sockets_prefix: str = DEFAULT_SOCKETS_PREFIX,
        connect_timeout: float = 30.0,
        extras: bool = True,
        track_requests: bool = True,
        server: subprocess.Popen[bytes] | None = None,
    ):
        if (unixsocket is None) == (port is None):
            raise ConfigError("IPIClient: give exactly one of unixsocket=NAME or port=N")
        self.atoms = atoms.copy()
        self.atoms.calc = None
        self.evaluate = evaluate
        self.extras = bool(extras)
        self.track_requests = bool(track_requests)
        self.stats = IPIClientStats()
        self.request_id = 0
        self._periodic = bool(self.atoms.pbc.all())
        self._server = server
        if unixsocket is not None:
            self.address: str | tuple[str, int] = socket_path(unixsocket, sockets_prefix)
            family = socket.AF_UNIX
        else:
            host = host or "localhost"
            if host not in _LOOPBACK:
                raise ConfigError(
                    f"IPIClient: host {host!r} is not a loopback address; use a unix socket or "
                    "one of localhost, 127.0.0.1, ::1"
                )
            assert port is not None
            self.address = (host, int(port))
            family = socket.AF_INET6 if host == "::1" else socket.AF_INET
        self._sock = self._connect(family, connect_timeout)

    @classmethod
    def from_calculator(cls, calc: Any, atoms: Atoms, **kwargs: Any) -> IPIClient:
        """A client serving any ASE calculator (committee extras when it has a committee)."""
        periodic = bool(atoms.pbc.all())

        def evaluate(a: Atoms, request_id: int) -> Mapping[str, Any]:
            calc.get_potential_energy(a)
            calc.get_forces(a)
            if periodic:
                calc.get_stress(a)
            return calc.results

        return cls(atoms, evaluate, **kwargs)

    # ------------------------------------------------------------------ socket
    def _connect(self, family: int, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(family, socket.SOCK_STREAM)
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.connect(self.address)
                log.info("connected to i-PI at %s", self.address)
                return sock
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if self._server is not None and self._server.poll() is not None:
                    raise EngineError(
                        f"i-PI exited (code {self._server.returncode}) before opening "
                        f"{self.address}; see its log"
                    ) from None
                if time.monotonic() > deadline:
                    raise EngineError(
                        f"no i-PI server at {self.address} after {timeout:.0f} s ({exc}); is "
                        "i-pi running with this <address> (and <ffsocket mode=...>)?"
                    ) from None
                time.sleep(0.05)

    def _recv(self, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self._sock.recv_into(view[got:], n - got)
            if k == 0:
                raise ConnectionResetError("i-PI closed the socket")
            got += k
        return bytes(buf)

    def close(self) -> None:
        """Close the socket (i-PI treats it as a disconnected client)."""
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> IPIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ protocol
    def run(self, max_evaluations: int | None = None) -> IPIClientStats:
        """Serve i-PI until it sends EXIT or closes the socket; returns the counters.

        Parameters
        ----------
        max_evaluations : int, optional
            Return (closing the socket) after this many structures.
        """
        initialized = False
        payload: bytes | None = None
        try:
            while True:
                try:
                    msg = self._recv(HDRLEN)
                except (ConnectionResetError, BrokenPipeError):
                    log.info("i-PI closed the connection")
                    break
                if msg == _STATUS:
                    if not initialized:
                        self._sock.sendall(_NEEDINIT)
                    elif payload is not None:
                        self._sock.sendall(_HAVEDATA)
                    else:
                        self._sock.sendall(_READY)
                elif msg == _INIT:
                    self.request_id = int(np.frombuffer(self._recv(4), np.int32)[0])
                    n = int(np.frombuffer(self._recv(4), np.int32)[0])
                    self._check_init(self._recv(n).decode("utf-8", errors="replace") if n else "")
                    initialized = True
                elif msg == _POSDATA:
                    if self.stats.first_request is None:
                        self.stats.first_request = time.perf_counter()
                    payload = self._posdata()
                elif msg == _GETFORCE:
                    if payload is None:
                        raise EngineError("i-PI sent GETFORCE before POSDATA")
                    self._sock.sendall(payload)
                    payload = None
                    self.stats.last_reply = time.perf_counter()
                    initialized = not self.track_requests
                    if max_evaluations is not None and self.stats.evaluations >= max_evaluations:
                        break
                elif msg == _EXIT:
                    log.info("i-PI sent EXIT after %d evaluations", self.stats.evaluations)
                    break
                else:
                    raise EngineError(f"unexpected message from i-PI: {msg!r}")
        finally:
            self.close()
        return self.stats

    @staticmethod
    def _check_init(text: str) -> None:
        for token in text.split(","):
            key, sep, value = token.partition(":")
            if sep and key.strip() == "batch_size" and value.strip() not in ("", "1"):
                raise EngineError(
                    f"i-PI asks for batched requests ({token.strip()}); set batch_size to 1 in "
                    "the <ffsocket> of this client"
                )

    def _posdata(self) -> bytes:
        h = np.frombuffer(self._recv(72), np.float64).reshape(3, 3)
        self._recv(72)  # inverse cell, not needed
        nat = int(np.frombuffer(self._recv(4), np.int32)[0])
        if nat != len(self.atoms):
            raise EngineError(
                f"i-PI sent {nat} atoms but the template structure has {len(self.atoms)}: "
                "give the structure i-PI was started with"
            )
        pos = np.frombuffer(self._recv(24 * nat), np.float64).reshape(nat, 3)
        self.atoms.set_cell(h.T * Bohr, scale_atoms=False)
        self.atoms.positions[:] = pos * Bohr
        t0 = time.perf_counter()
        results = self.evaluate(self.atoms, self.request_id)
        payload = self._pack(results, nat)
        self.stats.evaluate_seconds += time.perf_counter() - t0
        self.stats.evaluations += 1
        return payload

    def _pack(self, results: Mapping[str, Any], nat: int) -> bytes:
        try:
            energy = float(results["energy"])
            forces = np.asarray(results["forces"], np.float64)
        except KeyError as exc:
            raise EngineError(f"the calculator returned no {exc.args[0]!r} for i-PI") from None
        if forces.shape != (nat, 3):
            raise EngineError(f"forces of shape {forces.shape} for {nat} atoms")
        if self._periodic and results.get("stress") is not None:
            virial = _virial_hartree(np.asarray(results["stress"]), self.atoms.get_volume())
        else:
            virial = np.zeros((3, 3))
        extra = b""
        if self.extras:
            xtr = committee_extras(results, self.atoms, periodic=self._periodic)
            if xtr:
                xtr["labelled"] = int(bool(results.get("labelled", False)))
                xtr["request_id"] = self.request_id
                extra = json.dumps(xtr).encode()
        return b"".join(
            (
                _FORCEREADY,
                np.float64(energy / Hartree).tobytes(),
                np.int32(nat).tobytes(),
                np.ascontiguousarray(forces * (Bohr / Hartree)).tobytes(),
                np.ascontiguousarray(virial).tobytes(),
                np.int32(len(extra)).tobytes(),
                extra,
            )
        )


# --------------------------------------------------------------------------- server helper
@contextlib.contextmanager
def launch_ipi(
    input_file: str | os.PathLike,
    *,
    cwd: str | os.PathLike | None = None,
    executable: str = "i-pi",
    log_file: str | os.PathLike | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``i-pi input_file`` in ``cwd`` for the duration of a ``with`` block.

    The server is killed (with its process group) when the block exits, whatever happened.
    Its output goes to ``log_file`` (default ``cwd/ipi.log``).
    """
    cwd = Path(cwd) if cwd is not None else Path(input_file).resolve().parent
    log_path = Path(log_file) if log_file is not None else cwd / "ipi.log"
    exe = executable
    if os.sep not in exe:
        import shutil
        import sys

        local = Path(sys.executable).parent / exe
        exe = str(local) if local.exists() else (shutil.which(exe) or exe)
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [exe, str(Path(input_file).resolve())],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait()


# --------------------------------------------------------------------------- CLI
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

    atoms = _read_structure(args.structure)
    calc = potlearn_ase.load(args.model)
    where: dict[str, Any] = (
        {"unixsocket": args.socket, "sockets_prefix": args.sockets_prefix}
        if args.port is None
        else {"host": args.host, "port": args.port}
    )
    if args.learn:
        from potlearn_ase.learners.engines.ipi import run_ipi_learning

        summary = run_ipi_learning(calc, atoms, args.learn, **where)
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
    p.set_defaults(func=_cmd_ipi)
