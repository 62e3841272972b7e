"""The i-PI wire format, without a server: message bodies, units and the FORCEREADY reply."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.units import Bohr, Hartree

from potlearn_ase.engines.ipi.protocol import (
    FORCEREADY,
    HDRLEN,
    check_init,
    forces_message,
    read_init,
    read_posdata,
    socket_path,
)
from potlearn_ase.errors import EngineError


def _reader(data: bytes):
    pos = 0

    def recv(n: int) -> bytes:
        nonlocal pos
        out, pos = data[pos : pos + n], pos + n
        assert len(out) == n
        return out

    return recv


def test_headers_sockets_and_init():
    assert len(FORCEREADY) == HDRLEN and FORCEREADY.startswith(b"FORCEREADY")
    assert socket_path("cu") == "/tmp/ipi_cu" and socket_path("/run/x") == "/run/x"
    text = b"batch_size:1"
    body = np.int32(7).tobytes() + np.int32(len(text)).tobytes() + text
    assert read_init(_reader(body)) == (7, "batch_size:1")
    check_init("batch_size:1")
    with pytest.raises(EngineError, match="batch_size"):
        check_init("x:2, batch_size: 4")


def test_posdata_in_bohr_becomes_angstrom():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    h = atoms.cell.array.T / Bohr  # i-PI sends the cell vectors as columns
    body = (
        h.tobytes()
        + np.linalg.inv(h).tobytes()
        + np.int32(len(atoms)).tobytes()
        + (atoms.positions / Bohr).tobytes()
    )
    cell, positions = read_posdata(_reader(body), len(atoms))
    np.testing.assert_allclose(cell, atoms.cell.array)
    np.testing.assert_allclose(positions, atoms.positions)
    with pytest.raises(EngineError, match="template structure has 5"):
        read_posdata(_reader(body), 5)


def test_forces_message_layout_units_and_extras():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    rng = np.random.default_rng(0)
    forces = rng.normal(size=(len(atoms), 3))
    members = rng.normal(size=3)
    results = {
        "energy": -1.5,
        "forces": forces,
        "stress": np.zeros(6),
        "energy_committee": members,
        "labelled": True,
    }
    msg = forces_message(results, atoms, periodic=True, request_id=3)
    assert msg[:HDRLEN] == FORCEREADY
    body = msg[HDRLEN:]
    assert np.frombuffer(body[:8], np.float64)[0] == pytest.approx(-1.5 / Hartree)
    nat = int(np.frombuffer(body[8:12], np.int32)[0])
    f = np.frombuffer(body[12 : 12 + 24 * nat], np.float64).reshape(nat, 3)
    np.testing.assert_allclose(f, forces * Bohr / Hartree)
    rest = body[12 + 24 * nat + 72 :]
    extras = json.loads(rest[4:])
    assert int(np.frombuffer(rest[:4], np.int32)[0]) == len(rest) - 4
    assert extras["labelled"] == 1 and extras["request_id"] == 3
    assert np.mean(extras["committee_pot"]) == pytest.approx(-1.5 / Hartree)
    plain = forces_message(results, atoms, periodic=True, extras=False)
    assert plain.endswith(np.int32(0).tobytes())
    with pytest.raises(EngineError, match="no 'forces'"):
        forces_message({"energy": 0.0}, atoms, periodic=False)
