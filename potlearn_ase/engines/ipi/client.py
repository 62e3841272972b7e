"""Serve a potential to i-PI: the driver side of the i-PI socket protocol, with committee extras.

i-PI runs the dynamics (classical MD, path-integral MD with any number of beads) and asks a
*driver* for the energy, forces and virial of each structure over a socket. This module is
that driver for any ASE calculator. For a committee (:class:`~.CommitteeCalculator`) it also
sends, in the JSON *extras* string of every reply, the committee members in the keys that
i-PI's ``<ffcommittee>`` reads with ``<parse_json>true</parse_json>``, calibrated and centred
on the energetics sent, so i-PI's own ``<alpha>`` must be 1 (see
:mod:`potlearn_ase.engines.ipi.protocol` for the keys, their units and the bytes of every
message).

The protocol sends positions and the cell only: the client takes the species (and
periodicity) from a template structure. One client serves all beads in turn; with several
clients connected, i-PI spreads the beads over them. Unix-domain sockets are used by default;
inet sockets are restricted to the loopback interface.

Examples
--------
With ``i-pi input.xml`` running (``<ffsocket mode="unix"><address>cu</address>``)::

    from potlearn_ase.engines.ipi.client import IPIClient
    client = IPIClient.from_calculator(potlearn_ase.load("model.pt"), atoms, unixsocket="cu")
    client.run()          # returns when i-PI sends EXIT

or ``potlearn ipi --model model.pt --socket cu --structure init.xyz``
(:mod:`potlearn_ase.cli.ipi`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ase import Atoms

from potlearn_ase.engines.ipi.protocol import (
    DEFAULT_SOCKETS_PREFIX,
    EXIT,
    GETFORCE,
    HAVEDATA,
    HDRLEN,
    INIT,
    NEEDINIT,
    POSDATA,
    READY,
    STATUS,
    check_init,
    committee_extras,
    forces_message,
    read_init,
    read_posdata,
    socket_path,
)
from potlearn_ase.errors import ConfigError, EngineError

__all__ = [
    "DEFAULT_SOCKETS_PREFIX",
    "IPIClient",
    "IPIClientStats",
    "committee_extras",
    "launch_ipi",
    "socket_path",
]

log = logging.getLogger(__name__)

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}

Evaluator = Callable[[Atoms, int], Mapping[str, Any]]
"""``evaluate(atoms, request_id) -> results``: ASE-named results (eV, eV/A, eV/A^3)."""


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
        """Serve i-PI until it sends EXIT; returns the counters.

        Parameters
        ----------
        max_evaluations : int, optional
            Return (closing the socket) after this many structures.

        Raises
        ------
        EngineError
            i-PI closed the connection without sending EXIT: the server went away (it was
            killed or crashed), so the run did not end as i-PI's input asked.
        """
        try:
            self._serve(max_evaluations)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise EngineError(
                f"the i-PI server at {self.address} went away without sending EXIT, after "
                f"{self.stats.evaluations} structures ({exc}); see its log"
            ) from None
        finally:
            self.close()
        return self.stats

    def _serve(self, max_evaluations: int | None) -> None:
        """Answer i-PI's messages until EXIT (or ``max_evaluations``)."""
        initialized = False
        payload: bytes | None = None
        while True:
            msg = self._recv(HDRLEN)
            if msg == STATUS:
                if not initialized:
                    self._sock.sendall(NEEDINIT)
                elif payload is not None:
                    self._sock.sendall(HAVEDATA)
                else:
                    self._sock.sendall(READY)
            elif msg == INIT:
                self.request_id, text = read_init(self._recv)
                check_init(text)
                initialized = True
            elif msg == POSDATA:
                if self.stats.first_request is None:
                    self.stats.first_request = time.perf_counter()
                payload = self._posdata()
            elif msg == GETFORCE:
                if payload is None:
                    raise EngineError("i-PI sent GETFORCE before POSDATA")
                self._sock.sendall(payload)
                payload = None
                self.stats.last_reply = time.perf_counter()
                initialized = not self.track_requests
                if max_evaluations is not None and self.stats.evaluations >= max_evaluations:
                    break
            elif msg == EXIT:
                log.info("i-PI sent EXIT after %d evaluations", self.stats.evaluations)
                break
            else:
                raise EngineError(f"unexpected message from i-PI: {msg!r}")

    def _posdata(self) -> bytes:
        cell, positions = read_posdata(self._recv, len(self.atoms))
        self.atoms.set_cell(cell, scale_atoms=False)
        self.atoms.positions[:] = positions
        t0 = time.perf_counter()
        results = self.evaluate(self.atoms, self.request_id)
        payload = forces_message(
            results,
            self.atoms,
            periodic=self._periodic,
            extras=self.extras,
            request_id=self.request_id,
        )
        self.stats.evaluate_seconds += time.perf_counter() - t0
        self.stats.evaluations += 1
        return payload


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
