"""The i-PI client against a fake server: a server that goes away is an error, EXIT is not."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.units import Bohr

from potlearn_ase.engines.ipi.client import IPIClient
from potlearn_ase.engines.ipi.protocol import (
    EXIT,
    GETFORCE,
    HAVEDATA,
    HDRLEN,
    INIT,
    NEEDINIT,
    POSDATA,
    READY,
    STATUS,
)
from potlearn_ase.errors import EngineError


def _recv(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        assert chunk, "the client closed the socket"
        buf += chunk
    return buf


def _serve(server: socket.socket, atoms, n_structures: int, end: str, served: list) -> None:
    """Handshake, send ``n_structures`` structures, then EXIT or just close (``end``)."""
    conn, _ = server.accept()
    try:
        h = atoms.cell.array.T / Bohr
        body = (
            h.tobytes() + np.linalg.inv(h).tobytes() + np.int32(len(atoms)).tobytes()
            + (atoms.positions / Bohr).tobytes()
        )
        for _ in range(n_structures):
            conn.sendall(STATUS)
            if _recv(conn, HDRLEN) == NEEDINIT:
                conn.sendall(INIT + np.int32(0).tobytes() + np.int32(0).tobytes())
                conn.sendall(STATUS)
                assert _recv(conn, HDRLEN) == READY
            conn.sendall(POSDATA + body)
            conn.sendall(STATUS)
            assert _recv(conn, HDRLEN) == HAVEDATA
            conn.sendall(GETFORCE)
            _recv(conn, HDRLEN + 8 + 4 + 24 * len(atoms) + 72)
            n_extra = int(np.frombuffer(_recv(conn, 4), np.int32)[0])
            _recv(conn, n_extra)
            served.append(1)
        if end == "exit":
            conn.sendall(EXIT)
    finally:
        conn.close()


@pytest.fixture()
def fake_server(request):
    folder = tempfile.mkdtemp(prefix="ipi-", dir="/tmp")  # unix socket paths are short
    path = os.path.join(folder, "sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    threads = []

    def start(atoms, n, end):
        served: list = []
        t = threading.Thread(target=_serve, args=(server, atoms, n, end, served), daemon=True)
        t.start()
        threads.append(t)
        return served

    yield path, start
    for t in threads:
        t.join(timeout=10)
    server.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("end", ["exit", "close"])
def test_a_server_that_goes_away_is_an_error_and_exit_is_not(fake_server, end):
    path, start = fake_server
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    served = start(atoms, 3, end)
    client = IPIClient.from_calculator(EMT(), atoms, unixsocket=path, connect_timeout=10)
    if end == "exit":
        assert client.run().evaluations == 3
    else:
        with pytest.raises(EngineError, match="went away without sending EXIT, after 3 structures"):
            client.run()
    assert len(served) == 3


@pytest.mark.parametrize("end", ["exit", "close"])
def test_potlearn_ipi_exits_nonzero_when_the_server_goes_away(
    fake_server, tmp_path, cu_train, capsys, end
):
    from potlearn_ase.calculators import CommitteeCalculator
    from potlearn_ase.cli import main
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.models import LinearFitConfig, fit_linear

    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.0, n_radial=4, l_max=1))
    model = fit_linear(desc, cu_train[:4], LinearFitConfig(n_members=4), rng=0)
    CommitteeCalculator(model=model).save(tmp_path / "model.pt")
    atoms = cu_train[0].copy()
    atoms.write(tmp_path / "start.xyz")
    path, start = fake_server
    start(atoms, 2, end)
    code = main(["ipi", "--model", str(tmp_path / "model.pt"), "--structure",
                 str(tmp_path / "start.xyz"), "--socket", path])
    out = capsys.readouterr()
    if end == "exit":
        assert code == 0 and "served 2 structures" in out.out
    else:
        assert code != 0 and "went away" in out.err and "served" not in out.out
