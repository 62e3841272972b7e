"""The journal's record format: round trip, torn tails, CRC and store-id checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from potlearn_ase.data.journal import HEADER_SIZE, MAGIC, Journal, encode, parse
from potlearn_ase.data.records import FAILURES, LABELS, make_record
from potlearn_ase.errors import StoreError

STORE_ID = bytes(range(16))


def _labelled(n: int, stress: bool) -> Atoms:
    rng = np.random.default_rng(n)
    atoms = Atoms(numbers=[29] * n, positions=rng.uniform(0, 4, (n, 3)), cell=4 * np.eye(3))
    atoms.pbc = True
    atoms.calc = SinglePointCalculator(
        atoms,
        energy=float(rng.normal()),
        forces=rng.normal(size=(n, 3)),
        stress=rng.normal(size=6) if stress else None,
    )
    return atoms


def _journal(records) -> bytes:
    return MAGIC + STORE_ID + b"".join(encode(k, i, r) for k, i, r in records)


def test_records_round_trip_through_the_journal(tmp_path: Path) -> None:
    recs = [
        (LABELS, 0, make_record(_labelled(3, True), {"md_step": 1}, labelled=True)),
        (LABELS, 1, make_record(_labelled(1, False), None, labelled=True)),
        (FAILURES, 0, make_record(_labelled(2, False), None, labelled=False, error="SCF")),
    ]
    data = _journal(recs)
    entries, size = parse(data, STORE_ID, tmp_path / "j")
    assert size == len(data)
    for (kind, index, rec), (k2, i2, r2) in zip(recs, entries):
        assert (kind, index) == (k2, i2)
        assert r2.hash == rec.hash and r2.error == rec.error and r2.provenance == rec.provenance
        np.testing.assert_array_equal(r2.positions, rec.positions)
        if kind == LABELS:
            assert r2.energy == rec.energy
            np.testing.assert_array_equal(r2.forces, rec.forces)
            assert (r2.stress is None) == (rec.stress is None)


def test_a_torn_or_corrupt_last_record_is_ignored(tmp_path: Path) -> None:
    recs = [(LABELS, i, make_record(_labelled(2, False), None, labelled=True)) for i in range(2)]
    data = _journal(recs)
    first_end = len(_journal(recs[:1]))
    for cut in range(first_end, len(data)):
        entries, size = parse(data[:cut], STORE_ID, tmp_path / "j")
        assert (len(entries), size) == (1, first_end)
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF  # the CRC no longer matches
    assert parse(bytes(flipped), STORE_ID, tmp_path / "j")[1] == first_end


def test_the_header_names_the_store(tmp_path: Path) -> None:
    assert parse(b"", STORE_ID, tmp_path / "j") == ([], 0)
    assert parse(MAGIC + STORE_ID, STORE_ID, tmp_path / "j") == ([], HEADER_SIZE)
    with pytest.raises(StoreError, match="another label store"):
        parse(MAGIC + bytes(16), STORE_ID, tmp_path / "j")
    with pytest.raises(StoreError, match="not a label-store journal"):
        parse(b"something else entirely", STORE_ID, tmp_path / "j")


def test_reset_then_append_is_durable_and_replayable(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "s.h5.journal")
    assert journal.size_on_disk() == -1 and journal.read_bytes() == b""
    journal.reset(STORE_ID)
    rec = make_record(_labelled(4, True), None, labelled=True)
    journal.append(LABELS, 0, rec)
    journal.close()
    entries, size = parse(journal.read_bytes(), STORE_ID, journal.path)
    assert size == journal.size_on_disk() and [e[2].hash for e in entries] == [rec.hash]
    with pytest.raises(StoreError, match="failed earlier"):
        journal.append(LABELS, 1, rec)
