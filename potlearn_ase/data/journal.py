"""The write-ahead journal of a label store: record framing, CRC32, replay and fsync.

A journal (``<store>.journal``) is a header, ``MAGIC`` followed by the 16 bytes of the store's
id, then one record after another, each framed as ``magic | payload length | CRC32 | payload``
(the CRC covers the length and the payload). The payload is a JSON header (kind, index,
info, provenance, hash, error) followed by the record's arrays in little-endian binary.

The writer appends a record with :meth:`Journal.append`, which returns only once the record
is on disk (``fsync``). :func:`parse` replays a journal: it returns every complete record and
stops at the first one whose frame or CRC does not check out, which is a torn last record of a
writer killed mid-write (or a reader racing the writer), never an acknowledged one.
:meth:`Journal.reset` empties the journal by moving a fresh one over it, so a reader holding
the old file still reads a consistent one. :func:`fsync_path` and :func:`replace` are the
durable file operations the store builds on.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from potlearn_ase.data.records import LABELS, Record
from potlearn_ase.errors import StoreError

__all__ = ["HEADER_SIZE", "MAGIC", "Journal", "decode", "encode", "fsync_path", "parse", "replace"]

logger = logging.getLogger(__name__)

MAGIC = b"PLJOURN1"
"""The first bytes of every journal."""
HEADER_SIZE = len(MAGIC) + 16
"""Bytes of the header: ``MAGIC`` and the store's id."""
_FRAME = struct.Struct("<4sQI")  # magic, payload length, crc32 of (length, payload)
_RECORD_MAGIC = b"PLR1"


def encode(kind: str, index: int, rec: Record) -> bytes:
    meta = {
        "kind": kind,
        "index": index,
        "n_atoms": len(rec.numbers),
        "info": rec.info,
        "provenance": rec.provenance,
        "hash": rec.hash,
        "error": rec.error,
        "has_stress": rec.stress is not None,
    }
    meta_bytes = json.dumps(meta).encode()
    parts = [
        struct.pack("<I", len(meta_bytes)),
        meta_bytes,
        rec.numbers.astype("<i8").tobytes(),
        rec.positions.astype("<f8").tobytes(),
        rec.cell.astype("<f8").tobytes(),
        rec.pbc.astype("u1").tobytes(),
    ]
    if kind == LABELS:
        stress = rec.stress if rec.stress is not None else np.full(6, np.nan)
        parts += [
            struct.pack("<d", rec.energy),
            rec.forces.astype("<f8").tobytes(),
            stress.astype("<f8").tobytes(),
        ]
    payload = b"".join(parts)
    length = struct.pack("<Q", len(payload))
    return (
        _FRAME.pack(_RECORD_MAGIC, len(payload), zlib.crc32(payload, zlib.crc32(length))) + payload
    )


def decode(payload: bytes) -> tuple[str, int, Record]:
    (meta_len,) = struct.unpack_from("<I", payload)
    pos = 4 + meta_len
    meta = json.loads(payload[4:pos])
    n = meta["n_atoms"]

    def take(dtype: str, count: int) -> np.ndarray:
        nonlocal pos
        arr = np.frombuffer(payload, dtype=dtype, count=count, offset=pos).copy()
        pos += arr.nbytes
        return arr

    rec = Record(
        numbers=take("<i8", n),
        positions=take("<f8", 3 * n).reshape(n, 3),
        cell=take("<f8", 9).reshape(3, 3),
        pbc=take("u1", 3).astype(bool),
        info=meta["info"],
        provenance=meta["provenance"],
        hash=meta["hash"],
        error=meta["error"],
    )
    if meta["kind"] == LABELS:
        rec.energy = float(take("<f8", 1)[0])
        rec.forces = take("<f8", 3 * n).reshape(n, 3)
        stress = take("<f8", 6)
        rec.stress = stress if meta["has_stress"] else None
    return meta["kind"], int(meta["index"]), rec


def parse(data: bytes, store_id: bytes, path: Path) -> tuple[list, int]:
    """Valid records of a journal and the length of its valid prefix."""
    if not data:
        return [], 0
    if data[: len(MAGIC)] != MAGIC or len(data) < HEADER_SIZE:
        raise StoreError(f"{path} is not a label-store journal")
    if data[len(MAGIC) : HEADER_SIZE] != store_id:
        raise StoreError(f"{path} is the journal of another label store")
    entries, pos = [], HEADER_SIZE
    while pos + _FRAME.size <= len(data):
        magic, length, crc = _FRAME.unpack_from(data, pos)
        end = pos + _FRAME.size + length
        payload = data[pos + _FRAME.size : end]
        if (
            magic != _RECORD_MAGIC
            or end > len(data)
            or zlib.crc32(payload, zlib.crc32(struct.pack("<Q", length))) != crc
        ):
            break  # a torn or unfinished last record: ignored
        try:
            entries.append(decode(payload))
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            raise StoreError(
                f"{path}: record at byte {pos} passes its CRC but cannot be decoded: {exc}"
            ) from None
        pos = end
    if pos < len(data):  # normal for a reader racing the writer
        logger.debug("%s: ignoring %d bytes of an unfinished last record", path, len(data) - pos)
    return entries, pos


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    fsync_path(dst.parent)


class Journal:
    """The journal file of one store, and the writer's descriptor open on it for appending.

    Parameters
    ----------
    path : Path
        The journal, ``<store>.journal``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    @property
    def tmp_path(self) -> Path:
        """Where :meth:`reset` writes the fresh journal before moving it over the old one."""
        return self.path.with_name(self.path.name + ".tmp")

    def read_bytes(self) -> bytes:
        """The whole journal as it is on disk now (empty if there is none)."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""

    def size_on_disk(self) -> int:
        """Bytes of the journal on disk, -1 if there is none."""
        return self.path.stat().st_size if self.path.exists() else -1

    def open(self) -> None:
        """Open the existing journal for appending."""
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def append(self, kind: str, index: int, rec: Record) -> None:
        """Append one record and return once it is durable on disk (fsync).

        Raises
        ------
        StoreError
            The write failed: the journal is truncated back to its previous end, or, if even
            that fails, closed (a torn record could hide later ones: no more appends).
        """
        if self.fd is None:
            raise StoreError(f"{self.path} failed earlier; reopen the store")
        blob = encode(kind, index, rec)
        start = os.fstat(self.fd).st_size
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(self.fd, view) :]
            os.fsync(self.fd)
        except OSError as exc:
            try:
                os.ftruncate(self.fd, start)
            except OSError:  # a torn record could hide later ones: no more appends
                os.close(self.fd)
                self.fd = None
            raise StoreError(f"could not write to {self.path}: {exc}") from exc

    def reset(self, store_id: bytes) -> None:
        """Replace the journal by an empty one (header only) and reopen it for appending."""
        tmp = self.tmp_path
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, MAGIC + store_id)
            os.fsync(fd)
        finally:
            os.close(fd)
        replace(tmp, self.path)  # the old journal stays valid until this point
        old, self.fd = self.fd, os.open(self.path, os.O_WRONLY | os.O_APPEND)
        if old is not None:
            os.close(old)

    def close(self) -> None:
        """Close the writer's descriptor (idempotent)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
