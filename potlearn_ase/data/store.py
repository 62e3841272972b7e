"""Crash-safe, append-only store of labelled structures (HDF5 plus a write-ahead journal).

Layout on disk, for a store at ``labels.h5``:

``labels.h5``
    The folded records. Never modified in place: a fold copies it to ``labels.h5.tmp``, appends
    the journalled records there, fsyncs, and moves the copy over the original with
    ``os.replace`` (then fsyncs the directory). A reader therefore always sees a complete file.
``labels.h5.journal``
    The records acknowledged since the last fold. A header (magic and the store's id), then one
    record after another: ``magic | payload length | CRC32 | payload``. Each ``append`` writes
    one record and fsyncs before it returns. Records carry their table and index, so replaying
    a journal whose records were already folded is harmless. A torn last record (the writer was
    killed mid-write) fails its length or CRC check and is ignored. After a fold the journal is
    reset by moving a fresh, empty journal over it, so a reader holding the old one still reads
    a consistent file.
``labels.h5.lock``
    Held (``flock``) by the one writer; a second writer is refused.

A process killed at any moment, a fold included, leaves files that open with every
acknowledged record and no partial one. Records live in two tables: ``labels`` (energy,
forces, optional stress) and ``failures`` (reference calls that failed, with the error).
Variable atom counts are stored as concatenated per-atom arrays with per-record ``n_atoms``.
Energies are per structure, never per atom; stress is ASE Voigt order, NaN when absent.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import logging
import operator
import os
import shutil
import struct
import uuid
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from potlearn_ase.errors import (
    DataFormatError,
    InvalidStructureError,
    MissingLabelError,
    StoreError,
)

__all__ = ["PROVENANCE_KEYS", "FailureRecord", "LabelStore", "structure_hash"]

logger = logging.getLogger(__name__)

FORMAT = "potlearn-ase/label-store"
VERSION = 1
PROVENANCE_KEYS = (
    "reference",
    "reference_params",
    "engine",
    "md_step",
    "uncertainty",
    "wall_time",
    "timestamp",
)
"""Keys every stored provenance holds (missing ones are filled with ``None`` or ``{}``)."""

_LABELS, _FAILURES = "labels", "failures"
_KINDS = (_LABELS, _FAILURES)
_JOURNAL_MAGIC = b"PLJOURN1"
_JOURNAL_HEADER_SIZE = len(_JOURNAL_MAGIC) + 16
_RECORD = struct.Struct("<4sQI")  # magic, payload length, crc32 of (length, payload)
_RECORD_MAGIC = b"PLR1"
_GRID = 1e8  # structure_hash rounds lengths to 1e-8 Angstrom
_STR = h5py.string_dtype("utf-8")
_COMMON: dict[str, tuple[str, Any, tuple[int, ...]]] = {
    "n_atoms": ("record", "<i8", ()),
    "numbers": ("atom", "<i4", ()),
    "positions": ("atom", "<f8", (3,)),
    "cell": ("record", "<f8", (3, 3)),
    "pbc": ("record", "?", (3,)),
    "hash": ("record", "S64", ()),
    "info": ("record", _STR, ()),
    "provenance": ("record", _STR, ()),
}
_SCHEMA = {
    _LABELS: {
        **_COMMON,
        "energy": ("record", "<f8", ()),
        "forces": ("atom", "<f8", (3,)),
        "stress": ("record", "<f8", (6,)),
        "has_stress": ("record", "?", ()),
    },
    _FAILURES: {**_COMMON, "error": ("record", _STR, ())},
}


def _grid(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(np.abs(values) > 1e10):
        raise InvalidStructureError(f"{what} are not finite (or beyond 1e10 Angstrom)")
    return np.rint(values * _GRID).astype("<i8")


def _hash_arrays(
    numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray
) -> str:
    h = hashlib.sha256(b"potlearn-ase structure v1\0")
    h.update(struct.pack("<q", len(numbers)))
    h.update(np.asarray(numbers, dtype="<i8").tobytes())
    h.update(_grid(positions, "positions").tobytes())
    h.update(_grid(cell, "cell vectors").tobytes())
    h.update(np.asarray(pbc, dtype=bool).astype("u1").tobytes())
    return h.hexdigest()


def structure_hash(atoms: Atoms) -> str:
    """Content hash of a structure: sha256 of species, positions, cell and pbc.

    Positions and cell are rounded to 1e-8 Angstrom first, so the hash survives a round trip
    through any file format that keeps 8 decimals. Atom order matters, and positions are not
    wrapped: the hash names exactly the structure a reference calculator saw.

    Raises
    ------
    InvalidStructureError
        If positions or cell are not finite.
    """
    return _hash_arrays(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)


@dataclass(frozen=True)
class FailureRecord:
    """A reference call that failed: the structure, the error message and its provenance."""

    index: int
    atoms: Atoms
    error: str
    provenance: dict[str, Any]


@dataclass
class _Record:
    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    info: dict[str, Any]
    provenance: dict[str, Any]
    hash: str
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    error: str | None = None

    def to_atoms(self) -> Atoms:
        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        atoms.info.update(self.info)
        atoms.info["provenance"] = copy.deepcopy(self.provenance)
        if self.energy is not None:
            atoms.calc = SinglePointCalculator(
                atoms, energy=self.energy, forces=self.forces, stress=self.stress
            )
        return atoms


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _provenance(provenance: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    if provenance is not None and not isinstance(provenance, Mapping):
        raise DataFormatError(
            f"provenance of {what} must be a mapping, not {type(provenance).__name__}"
        )
    out: dict[str, Any] = {
        "reference": None,
        "reference_params": {},
        "engine": None,
        "md_step": None,
        "uncertainty": {},
        "wall_time": None,
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }
    out.update(provenance or {})
    for key in ("reference_params", "uncertainty"):
        out[key] = {} if out[key] is None else out[key]
        if not isinstance(out[key], Mapping):
            raise DataFormatError(f"provenance key {key!r} of {what} must be a mapping")
    try:
        out["uncertainty"] = {str(k): float(v) for k, v in out["uncertainty"].items()}
    except (TypeError, ValueError) as exc:
        raise DataFormatError(
            f"provenance key 'uncertainty' of {what} must map names to floats: {exc}"
        ) from None
    for key, value in out.items():
        try:
            out[key] = json.loads(json.dumps(value, default=_json_default))
        except (TypeError, ValueError) as exc:
            raise DataFormatError(f"provenance key {key!r} of {what} is not JSON: {exc}") from None
    return out


def _info_scalars(info: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, np.generic):
            value = value.item()
        if (
            isinstance(key, str)
            and key != "provenance"
            and (value is None or isinstance(value, (str, bool, int, float)))
        ):
            out[key] = value
    return out


def _make_record(
    atoms: Atoms, provenance: Mapping[str, Any] | None, *, labelled: bool, error: str | None = None
) -> _Record:
    what = f"structure {atoms.get_chemical_formula() or '(empty)'}"
    rec = _Record(
        numbers=np.array(atoms.numbers, dtype=np.int64),
        positions=np.array(atoms.positions, dtype=np.float64),
        cell=np.array(atoms.cell.array, dtype=np.float64),
        pbc=np.array(atoms.pbc, dtype=bool),
        info=_info_scalars(atoms.info),
        provenance=_provenance(provenance, what),
        hash=structure_hash(atoms),
        error=error,
    )
    if not labelled:
        return rec
    calc = atoms.calc
    if calc is None:
        raise MissingLabelError(f"{what} has no calculator: energy and forces are required")
    if getattr(calc, "atoms", None) is not None and calc.check_state(atoms):
        raise MissingLabelError(f"{what} changed since its calculation: its labels are stale")
    results = getattr(calc, "results", {})
    for key in ("energy", "forces"):
        if results.get(key) is None:
            raise MissingLabelError(f"{what} has no {key!r} label")
    rec.energy = float(results["energy"])
    rec.forces = np.array(results["forces"], dtype=np.float64)
    if rec.forces.shape != (len(atoms), 3):
        raise DataFormatError(
            f"forces of {what} have shape {rec.forces.shape}, expected ({len(atoms)}, 3)"
        )
    if not (np.isfinite(rec.energy) and np.all(np.isfinite(rec.forces))):
        raise MissingLabelError(f"{what} has a non-finite energy or force label")
    stress = results.get("stress")
    if stress is not None:
        stress = np.array(stress, dtype=np.float64)
        if stress.shape == (3, 3):
            stress = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        if stress.shape != (6,):
            raise DataFormatError(f"stress of {what} has shape {stress.shape}, expected (6,)")
        rec.stress = stress
    return rec


def _encode(kind: str, index: int, rec: _Record) -> bytes:
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
    if kind == _LABELS:
        stress = rec.stress if rec.stress is not None else np.full(6, np.nan)
        parts += [
            struct.pack("<d", rec.energy),
            rec.forces.astype("<f8").tobytes(),
            stress.astype("<f8").tobytes(),
        ]
    payload = b"".join(parts)
    length = struct.pack("<Q", len(payload))
    return (
        _RECORD.pack(_RECORD_MAGIC, len(payload), zlib.crc32(payload, zlib.crc32(length))) + payload
    )


def _decode(payload: bytes) -> tuple[str, int, _Record]:
    (meta_len,) = struct.unpack_from("<I", payload)
    pos = 4 + meta_len
    meta = json.loads(payload[4:pos])
    n = meta["n_atoms"]

    def take(dtype: str, count: int) -> np.ndarray:
        nonlocal pos
        arr = np.frombuffer(payload, dtype=dtype, count=count, offset=pos).copy()
        pos += arr.nbytes
        return arr

    rec = _Record(
        numbers=take("<i8", n),
        positions=take("<f8", 3 * n).reshape(n, 3),
        cell=take("<f8", 9).reshape(3, 3),
        pbc=take("u1", 3).astype(bool),
        info=meta["info"],
        provenance=meta["provenance"],
        hash=meta["hash"],
        error=meta["error"],
    )
    if meta["kind"] == _LABELS:
        rec.energy = float(take("<f8", 1)[0])
        rec.forces = take("<f8", 3 * n).reshape(n, 3)
        stress = take("<f8", 6)
        rec.stress = stress if meta["has_stress"] else None
    return meta["kind"], int(meta["index"]), rec


def _parse_journal(data: bytes, store_id: bytes, path: Path) -> tuple[list, int]:
    """Valid records of a journal and the length of its valid prefix."""
    if not data:
        return [], 0
    if data[: len(_JOURNAL_MAGIC)] != _JOURNAL_MAGIC or len(data) < _JOURNAL_HEADER_SIZE:
        raise StoreError(f"{path} is not a label-store journal")
    if data[len(_JOURNAL_MAGIC) : _JOURNAL_HEADER_SIZE] != store_id:
        raise StoreError(f"{path} is the journal of another label store")
    entries, pos = [], _JOURNAL_HEADER_SIZE
    while pos + _RECORD.size <= len(data):
        magic, length, crc = _RECORD.unpack_from(data, pos)
        end = pos + _RECORD.size + length
        payload = data[pos + _RECORD.size : end]
        if (
            magic != _RECORD_MAGIC
            or end > len(data)
            or zlib.crc32(payload, zlib.crc32(struct.pack("<Q", length))) != crc
        ):
            break  # a torn or unfinished last record: ignored
        try:
            entries.append(_decode(payload))
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            raise StoreError(
                f"{path}: record at byte {pos} passes its CRC but cannot be decoded: {exc}"
            ) from None
        pos = end
    if pos < len(data):  # normal for a reader racing the writer
        logger.debug("%s: ignoring %d bytes of an unfinished last record", path, len(data) - pos)
    return entries, pos


def _columns(kind: str, recs: list[_Record]) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {
        "n_atoms": np.array([len(r.numbers) for r in recs]),
        "numbers": np.concatenate([r.numbers for r in recs]),
        "positions": np.concatenate([r.positions for r in recs]).reshape(-1, 3),
        "cell": np.stack([r.cell for r in recs]),
        "pbc": np.stack([r.pbc for r in recs]),
        "hash": np.array([r.hash.encode() for r in recs], dtype="S64"),
        "info": np.array([json.dumps(r.info) for r in recs], dtype=object),
        "provenance": np.array([json.dumps(r.provenance) for r in recs], dtype=object),
    }
    if kind == _LABELS:
        cols["energy"] = np.array([r.energy for r in recs])
        cols["forces"] = np.concatenate([r.forces for r in recs]).reshape(-1, 3)
        cols["stress"] = np.stack(
            [r.stress if r.stress is not None else np.full(6, np.nan) for r in recs]
        )
        cols["has_stress"] = np.array([r.stress is not None for r in recs])
    else:
        cols["error"] = np.array([r.error for r in recs], dtype=object)
    return cols


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    _fsync_path(dst.parent)


class LabelStore:
    """Append-only, crash-safe store of labelled structures.

    Parameters
    ----------
    path : str or Path
        The HDF5 file. ``<path>.journal`` and ``<path>.lock`` live next to it.
    mode : {"a", "r"}
        ``"a"`` creates or appends (one writer at a time); ``"r"`` reads a snapshot taken at
        open (or at :meth:`refresh`) and never writes, so it can run while a writer works.
    fold_every : int
        Fold the journal into the HDF5 file after this many appends (also on open and close).

    Raises
    ------
    FileNotFoundError
        Mode ``"r"`` and no file at ``path``.
    StoreError
        The file is not a label store, or another process is writing to it.
    """

    def __init__(
        self, path: str | os.PathLike[str], mode: str = "a", *, fold_every: int = 64
    ) -> None:
        if mode not in ("a", "r"):
            raise ValueError(f"mode must be 'a' or 'r', not {mode!r}")
        if fold_every < 1:
            raise ValueError(f"fold_every must be at least 1, not {fold_every}")
        self.path = Path(path)
        self.mode = mode
        self.fold_every = fold_every
        self._journal_path = self.path.with_name(self.path.name + ".journal")
        self._tmp_path = self.path.with_name(self.path.name + ".tmp")
        self._journal_fd: int | None = None
        self._lock_fd: int | None = None
        self._closed = False
        if mode == "r":
            if not self.path.exists():
                raise FileNotFoundError(2, "label store not found", str(self.path))
            self._load()
            return
        try:
            self._open_writer()
        except BaseException:
            self._release()
            raise

    # -- opening, folding, closing -------------------------------------------------------
    def _open_writer(self) -> None:
        self._lock_fd = os.open(
            self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644
        )
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"{self.path} is already open for writing (one writer at a time; "
                f"use mode 'r' to read)"
            ) from None
        for stale in (
            self._tmp_path,
            self._journal_path.with_name(self._journal_path.name + ".tmp"),
        ):
            stale.unlink(missing_ok=True)  # a fold or reset killed half-way
        if not self.path.exists():
            if self._journal_path.exists() and self._journal_path.stat().st_size:
                raise StoreError(
                    f"{self.path} is missing but its journal {self._journal_path} is not empty"
                )
            self._create()
        size = self._load()
        on_disk = self._journal_path.stat().st_size if self._journal_path.exists() else -1
        if 0 <= size < on_disk:
            logger.warning(
                "%s: dropping %d bytes of a torn last record (the writer was "
                "killed while writing it; it was never acknowledged)",
                self._journal_path,
                on_disk - size,
            )
        if any(self._pending.values()) or size != on_disk or size < _JOURNAL_HEADER_SIZE:
            self._fold()  # replays the journal; drops a torn tail before anything is added
        else:
            self._journal_fd = os.open(self._journal_path, os.O_WRONLY | os.O_APPEND)

    def _create(self) -> None:
        with h5py.File(self._tmp_path, "w", locking=False) as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["store_id"] = uuid.uuid4().hex
            for kind, schema in _SCHEMA.items():
                group = f.create_group(kind)
                for name, (per, dtype, tail) in schema.items():
                    chunk = (1024 if per == "atom" else 256, *tail)
                    group.create_dataset(
                        name, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype, chunks=chunk
                    )
                group["positions"].attrs["units"] = "Angstrom"
                group["cell"].attrs["units"] = "Angstrom"
            f[_LABELS]["energy"].attrs["units"] = "eV (per structure)"
            f[_LABELS]["forces"].attrs["units"] = "eV/Angstrom"
            f[_LABELS]["stress"].attrs["units"] = "eV/Angstrom^3 (ASE Voigt order; NaN if absent)"
        _fsync_path(self._tmp_path)
        _replace(self._tmp_path, self.path)

    def _h5(self) -> h5py.File:
        try:
            f = h5py.File(self.path, "r", locking=False)
        except OSError as exc:
            raise StoreError(f"{self.path} is not a readable label store: {exc}") from None
        fmt, version = f.attrs.get("format"), f.attrs.get("version")
        store_id = f.attrs.get("store_id")
        if fmt != FORMAT or version != VERSION or any(k not in f for k in _KINDS):
            f.close()
            raise StoreError(
                f"{self.path} is not a label store (format {fmt!r}, version "
                f"{version!r}; expected {FORMAT!r} version {VERSION})"
            )
        if getattr(self, "_store_id", None) not in (None, store_id):
            f.close()
            raise StoreError(f"{self.path} was replaced by another label store")
        self._store_id = store_id
        return f

    def _load(self) -> int:
        """Snapshot: the journal first, then the HDF5 file (which holds every record folded
        out of the journal we read, however a concurrent fold interleaves)."""
        try:
            data = self._journal_path.read_bytes()
        except FileNotFoundError:
            data = b""
        offsets: dict[str, np.ndarray] = {}
        hashes: dict[str, list[str]] = {}
        with self._h5() as f:
            for kind in _KINDS:
                offsets[kind] = np.concatenate([[0], np.cumsum(f[kind]["n_atoms"][:])])
                hashes[kind] = [h.decode() for h in f[kind]["hash"][:]]
        entries, size = _parse_journal(data, bytes.fromhex(self._store_id), self._journal_path)
        pending: dict[str, list[_Record]] = {kind: [] for kind in _KINDS}
        for kind, index, rec in entries:
            n_folded = len(hashes[kind])
            if index < n_folded:
                if hashes[kind][index] != rec.hash:
                    raise StoreError(
                        f"{self._journal_path}: {kind} record {index} differs from "
                        f"the one folded into {self.path}"
                    )
                continue
            if index != n_folded + len(pending[kind]):
                raise StoreError(
                    f"{self._journal_path}: {kind} record {index} out of order "
                    f"(expected {n_folded + len(pending[kind])})"
                )
            pending[kind].append(rec)
        self._offsets, self._hashes = offsets, hashes
        self._pending = {kind: [] for kind in _KINDS}
        self._index: dict[str, dict[str, int]] = {kind: {} for kind in _KINDS}
        for kind in _KINDS:
            for i, h in enumerate(hashes[kind]):
                self._index[kind].setdefault(h, i)
            for rec in pending[kind]:
                self._add(kind, rec)
        return size

    def _fold(self) -> None:
        try:
            if any(self._pending.values()):
                shutil.copyfile(self.path, self._tmp_path)
                with h5py.File(self._tmp_path, "r+", locking=False) as f:
                    for kind, recs in self._pending.items():
                        if not recs:
                            continue
                        for name, col in _columns(kind, recs).items():
                            ds = f[kind][name]
                            old = ds.shape[0]
                            ds.resize(old + len(col), axis=0)
                            ds[old:] = col
                _fsync_path(self._tmp_path)
                _replace(self._tmp_path, self.path)
            for kind, recs in self._pending.items():
                sizes = np.cumsum([len(r.numbers) for r in recs], dtype=np.int64)
                self._offsets[kind] = np.concatenate(
                    [self._offsets[kind], self._offsets[kind][-1] + sizes]
                )
                self._hashes[kind].extend(r.hash for r in recs)
                recs.clear()
            self._reset_journal()
        except OSError as exc:
            raise StoreError(
                f"could not fold {self._journal_path} into {self.path}: {exc}"
            ) from exc
        finally:
            self._tmp_path.unlink(missing_ok=True)

    def _reset_journal(self) -> None:
        tmp = self._journal_path.with_name(self._journal_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, _JOURNAL_MAGIC + bytes.fromhex(self._store_id))
            os.fsync(fd)
        finally:
            os.close(fd)
        _replace(tmp, self._journal_path)  # the old journal stays valid until this point
        old, self._journal_fd = (
            self._journal_fd,
            os.open(self._journal_path, os.O_WRONLY | os.O_APPEND),
        )
        if old is not None:
            os.close(old)

    def _release(self) -> None:
        for attr in ("_journal_fd", "_lock_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)

    def __del__(self) -> None:  # releases the lock of a store never closed; no fold
        if getattr(self, "_lock_fd", None) is not None or getattr(self, "_journal_fd", None):
            self._release()

    def close(self) -> None:
        """Fold the journal into the HDF5 file (writer) and release the files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.mode == "a" and any(self._pending.values()):
                self._fold()
        finally:
            self._release()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self) -> None:
        """Reader: take a new snapshot, seeing what the writer acknowledged since."""
        self._check_open()
        if self.mode == "r":
            self._load()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self)} labels, {self.n_failures} failures"
        return f"LabelStore({str(self.path)!r}, mode={self.mode!r}; {state})"

    # -- writing -------------------------------------------------------------------------
    def append(self, atoms: Atoms, *, provenance: Mapping[str, Any] | None = None) -> int:
        """Store a labelled structure; return its index once it is durable on disk.

        Energy, forces and (optionally) stress come from ``atoms.calc.results``; JSON scalars
        of ``atoms.info`` are kept. ``provenance`` (``reference``, ``reference_params``,
        ``engine``, ``md_step``, ``uncertainty``, ``wall_time``, ``timestamp`` and any other
        JSON keys) is stored with it; missing standard keys are filled in.

        Raises
        ------
        MissingLabelError
            No calculator, no energy or forces, or labels stale; nothing is stored.
        """
        return self._append(_LABELS, _make_record(atoms, provenance, labelled=True))

    def append_failure(
        self, atoms: Atoms, *, provenance: Mapping[str, Any] | None, error: str
    ) -> int:
        """Durably record a failed reference call on ``atoms``; return its failure index."""
        return self._append(
            _FAILURES, _make_record(atoms, provenance, labelled=False, error=str(error))
        )

    def _append(self, kind: str, rec: _Record) -> int:
        self._check_open()
        if self.mode != "a":
            raise StoreError(f"{self.path} is open read-only")
        if self._journal_fd is None:
            raise StoreError(f"{self._journal_path} failed earlier; reopen the store")
        index = self._count(kind)
        blob = _encode(kind, index, rec)
        start = os.fstat(self._journal_fd).st_size
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(self._journal_fd, view) :]
            os.fsync(self._journal_fd)
        except OSError as exc:
            try:
                os.ftruncate(self._journal_fd, start)
            except OSError:  # a torn record could hide later ones: no more appends
                os.close(self._journal_fd)
                self._journal_fd = None
            raise StoreError(f"could not write to {self._journal_path}: {exc}") from exc
        self._add(kind, rec)
        if sum(map(len, self._pending.values())) >= self.fold_every:
            try:
                self._fold()
            except StoreError as exc:  # the record is safe in the journal; fold later
                logger.warning("%s", exc)
        return index

    def _add(self, kind: str, rec: _Record) -> None:
        self._index[kind].setdefault(rec.hash, self._count(kind))
        self._pending[kind].append(rec)

    # -- reading -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.path}: the store is closed")

    def _n_folded(self, kind: str) -> int:
        return len(self._offsets[kind]) - 1

    def _count(self, kind: str) -> int:
        return self._n_folded(kind) + len(self._pending[kind])

    def _records(self, kind: str, start: int, stop: int) -> list[_Record]:
        n_folded = self._n_folded(kind)
        out: list[_Record] = []
        if start < min(stop, n_folded):
            end = min(stop, n_folded)
            off = self._offsets[kind]
            with self._h5() as f:
                g = f[kind]
                cols = {}
                for name, (per, dtype, _) in _SCHEMA[kind].items():
                    ds = g[name].asstr() if dtype is _STR else g[name]
                    cols[name] = ds[off[start] : off[end]] if per == "atom" else ds[start:end]
            for k in range(end - start):
                a, b = off[start + k] - off[start], off[start + k + 1] - off[start]
                rec = _Record(
                    numbers=cols["numbers"][a:b].astype(np.int64),
                    positions=cols["positions"][a:b],
                    cell=cols["cell"][k],
                    pbc=cols["pbc"][k],
                    info=json.loads(cols["info"][k]),
                    provenance=json.loads(cols["provenance"][k]),
                    hash=cols["hash"][k].decode(),
                )
                if kind == _LABELS:
                    rec.energy = float(cols["energy"][k])
                    rec.forces = cols["forces"][a:b]
                    rec.stress = cols["stress"][k] if cols["has_stress"][k] else None
                else:
                    rec.error = str(cols["error"][k])
                out.append(rec)
        pending = self._pending[kind][max(start - n_folded, 0) : max(stop - n_folded, 0)]
        return out + [copy.deepcopy(r) for r in pending]

    def _one(self, kind: str, i: int) -> _Record:
        self._check_open()
        n = self._count(kind)
        i = operator.index(i)
        if not -n <= i < n:
            raise IndexError(f"{kind} record {i} out of range: {self.path} holds {n}")
        i %= n
        return self._records(kind, i, i + 1)[0]

    def __len__(self) -> int:
        """Number of labelled records (failures not included)."""
        return self._count(_LABELS)

    @property
    def n_failures(self) -> int:
        """Number of failure records."""
        return self._count(_FAILURES)

    def __getitem__(self, i: int) -> Atoms:
        """Record ``i`` as Atoms with a SinglePointCalculator and ``info["provenance"]``."""
        return self._one(_LABELS, i).to_atoms()

    def __iter__(self) -> Iterator[Atoms]:
        self._check_open()
        n = len(self)
        for start in range(0, n, 512):
            for rec in self._records(_LABELS, start, min(start + 512, n)):
                yield rec.to_atoms()

    def frames(self) -> list[Atoms]:
        """Every labelled record, in order."""
        self._check_open()
        return [rec.to_atoms() for rec in self._records(_LABELS, 0, len(self))]

    def provenance(self, i: int) -> dict[str, Any]:
        """Provenance of labelled record ``i``."""
        return self._one(_LABELS, i).provenance

    def failures(self) -> list[FailureRecord]:
        """Every failure record, in order."""
        self._check_open()
        return [
            FailureRecord(
                index=k, atoms=rec.to_atoms(), error=rec.error or "", provenance=rec.provenance
            )
            for k, rec in enumerate(self._records(_FAILURES, 0, self.n_failures))
        ]

    def find(self, atoms: Atoms) -> int | None:
        """Index of the first labelled record with the same :func:`structure_hash`, or None."""
        self._check_open()
        return self._index[_LABELS].get(structure_hash(atoms))

    def contains(self, atoms: Atoms) -> bool:
        """Whether this structure is already labelled (failure records do not count)."""
        return self.find(atoms) is not None

    def find_failure(self, atoms: Atoms) -> int | None:
        """Index of the first failure record of this structure, or None."""
        self._check_open()
        return self._index[_FAILURES].get(structure_hash(atoms))
