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

This module is the store's protocol: one writer under a lock, snapshots for readers, replay
and folding. What a record holds is in :mod:`~potlearn_ase.data.records`, the journal's format
in :mod:`~potlearn_ase.data.journal` and the HDF5 layout in :mod:`~potlearn_ase.data.hdf5`.
"""

from __future__ import annotations

import copy
import fcntl
import logging
import operator
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from ase import Atoms

from potlearn_ase.data import hdf5
from potlearn_ase.data.hdf5 import FORMAT as FORMAT
from potlearn_ase.data.hdf5 import VERSION as VERSION
from potlearn_ase.data.journal import HEADER_SIZE, Journal, fsync_path, parse, replace
from potlearn_ase.data.records import (
    FAILURES,
    KINDS,
    LABELS,
    PROVENANCE_KEYS,
    FailureRecord,
    Record,
    make_record,
    reference_of,
    structure_hash,
)
from potlearn_ase.errors import StoreError

__all__ = ["PROVENANCE_KEYS", "FailureRecord", "LabelStore", "structure_hash"]

logger = logging.getLogger(__name__)


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
        self._journal = Journal(self.path.with_name(self.path.name + ".journal"))
        self._tmp_path = self.path.with_name(self.path.name + ".tmp")
        self._lock_fd: int | None = None
        self._closed = False
        self._reference: tuple[str | None, str] | None = None
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
        for stale in (self._tmp_path, self._journal.tmp_path):
            stale.unlink(missing_ok=True)  # a fold or reset killed half-way
        if not self.path.exists():
            if self._journal.size_on_disk() > 0:
                raise StoreError(
                    f"{self.path} is missing but its journal {self._journal.path} is not empty"
                )
            self._create()
        size = self._load()
        on_disk = self._journal.size_on_disk()
        if 0 <= size < on_disk:
            logger.warning(
                "%s: dropping %d bytes of a torn last record (the writer was "
                "killed while writing it; it was never acknowledged)",
                self._journal.path,
                on_disk - size,
            )
        if any(self._pending.values()) or size != on_disk or size < HEADER_SIZE:
            self._fold()  # replays the journal; drops a torn tail before anything is added
        else:
            self._journal.open()

    def _create(self) -> None:
        hdf5.create(self._tmp_path)
        fsync_path(self._tmp_path)
        replace(self._tmp_path, self.path)

    def _h5(self) -> h5py.File:
        f = hdf5.open_file(self.path, getattr(self, "_store_id", None))
        self._store_id = f.attrs.get("store_id")
        return f

    def _load(self) -> int:
        """Snapshot: the journal first, then the HDF5 file (which holds every record folded
        out of the journal we read, however a concurrent fold interleaves)."""
        data = self._journal.read_bytes()
        with self._h5() as f:
            offsets, hashes = hdf5.read_index(f)
        entries, size = parse(data, bytes.fromhex(self._store_id), self._journal.path)
        pending: dict[str, list[Record]] = {kind: [] for kind in KINDS}
        for kind, index, rec in entries:
            n_folded = len(hashes[kind])
            if index < n_folded:
                if hashes[kind][index] != rec.hash:
                    raise StoreError(
                        f"{self._journal.path}: {kind} record {index} differs from "
                        f"the one folded into {self.path}"
                    )
                continue
            if index != n_folded + len(pending[kind]):
                raise StoreError(
                    f"{self._journal.path}: {kind} record {index} out of order "
                    f"(expected {n_folded + len(pending[kind])})"
                )
            pending[kind].append(rec)
        self._offsets, self._hashes = offsets, hashes
        self._pending = {kind: [] for kind in KINDS}
        self._index: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
        for kind in KINDS:
            for i, h in enumerate(hashes[kind]):
                self._index[kind].setdefault(h, i)
            for rec in pending[kind]:
                self._add(kind, rec)
        return size

    def _fold(self) -> None:
        try:
            if any(self._pending.values()):
                shutil.copyfile(self.path, self._tmp_path)
                hdf5.append_records(self._tmp_path, self._pending)
                fsync_path(self._tmp_path)
                replace(self._tmp_path, self.path)
            for kind, recs in self._pending.items():
                sizes = np.cumsum([len(r.numbers) for r in recs], dtype=np.int64)
                self._offsets[kind] = np.concatenate(
                    [self._offsets[kind], self._offsets[kind][-1] + sizes]
                )
                self._hashes[kind].extend(r.hash for r in recs)
                recs.clear()
            self._journal.reset(bytes.fromhex(self._store_id))
        except OSError as exc:
            raise StoreError(
                f"could not fold {self._journal.path} into {self.path}: {exc}"
            ) from exc
        finally:
            self._tmp_path.unlink(missing_ok=True)

    def _release(self) -> None:
        self._journal.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __del__(self) -> None:  # releases the lock of a store never closed; no fold
        journal = getattr(self, "_journal", None)
        if getattr(self, "_lock_fd", None) is not None or (journal is not None and journal.fd):
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
        return self._append(LABELS, make_record(atoms, provenance, labelled=True))

    def append_failure(
        self, atoms: Atoms, *, provenance: Mapping[str, Any] | None, error: str
    ) -> int:
        """Durably record a failed reference call on ``atoms``; return its failure index."""
        return self._append(
            FAILURES, make_record(atoms, provenance, labelled=False, error=str(error))
        )

    def check_reference(self, reference: str, params: Mapping[str, Any] | None) -> None:
        """Refuse labels of any other reference than ``reference`` with ``params``.

        Every stored record (labels and failures) is checked now, and a writer refuses every
        later append whose provenance names another reference or other parameters, so a run
        never mixes labels made under different reference settings.

        Raises
        ------
        StoreError
            A stored record came from another reference, naming the store, the record and
            both references.
        """
        self._check_open()
        want = reference_of(reference, params or {})
        for kind in KINDS:
            n = self._count(kind)
            for start in range(0, n, 512):
                recs = self._records(kind, start, min(start + 512, n))
                for i, rec in enumerate(recs, start):
                    got = reference_of(rec.provenance)
                    if got != want:
                        raise StoreError(
                            f"{self.path}: {kind} record {i} was made by reference "
                            f"{got[0]!r} with {got[1]}, not by this run's {want[0]!r} with "
                            f"{want[1]}; use another run directory (or label store) for "
                            "other reference settings"
                        )
        self._reference = want

    def _append(self, kind: str, rec: Record) -> int:
        self._check_open()
        if self.mode != "a":
            raise StoreError(f"{self.path} is open read-only")
        if self._reference is not None and reference_of(rec.provenance) != self._reference:
            got, want = reference_of(rec.provenance), self._reference
            raise StoreError(
                f"{self.path}: refusing a label from reference {got[0]!r} with {got[1]}: this "
                f"store holds labels of {want[0]!r} with {want[1]} only"
            )
        index = self._count(kind)
        self._journal.append(kind, index, rec)
        self._add(kind, rec)
        if sum(map(len, self._pending.values())) >= self.fold_every:
            try:
                self._fold()
            except StoreError as exc:  # the record is safe in the journal; fold later
                logger.warning("%s", exc)
        return index

    def _add(self, kind: str, rec: Record) -> None:
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

    def _records(self, kind: str, start: int, stop: int) -> list[Record]:
        n_folded = self._n_folded(kind)
        out: list[Record] = []
        if start < min(stop, n_folded):
            end = min(stop, n_folded)
            with self._h5() as f:
                out = hdf5.read_records(f, kind, self._offsets[kind], start, end)
        pending = self._pending[kind][max(start - n_folded, 0) : max(stop - n_folded, 0)]
        return out + [copy.deepcopy(r) for r in pending]

    def _one(self, kind: str, i: int) -> Record:
        self._check_open()
        n = self._count(kind)
        i = operator.index(i)
        if not -n <= i < n:
            raise IndexError(f"{kind} record {i} out of range: {self.path} holds {n}")
        i %= n
        return self._records(kind, i, i + 1)[0]

    def __len__(self) -> int:
        """Number of labelled records (failures not included)."""
        return self._count(LABELS)

    @property
    def n_failures(self) -> int:
        """Number of failure records."""
        return self._count(FAILURES)

    def __getitem__(self, i: int) -> Atoms:
        """Record ``i`` as Atoms with a SinglePointCalculator and ``info["provenance"]``."""
        return self._one(LABELS, i).to_atoms()

    def __iter__(self) -> Iterator[Atoms]:
        self._check_open()
        n = len(self)
        for start in range(0, n, 512):
            for rec in self._records(LABELS, start, min(start + 512, n)):
                yield rec.to_atoms()

    def frames(self) -> list[Atoms]:
        """Every labelled record, in order."""
        self._check_open()
        return [rec.to_atoms() for rec in self._records(LABELS, 0, len(self))]

    def provenance(self, i: int) -> dict[str, Any]:
        """Provenance of labelled record ``i``."""
        return self._one(LABELS, i).provenance

    def failures(self) -> list[FailureRecord]:
        """Every failure record, in order."""
        self._check_open()
        return [
            FailureRecord(
                index=k, atoms=rec.to_atoms(), error=rec.error or "", provenance=rec.provenance
            )
            for k, rec in enumerate(self._records(FAILURES, 0, self.n_failures))
        ]

    def find(self, atoms: Atoms) -> int | None:
        """Index of the first labelled record with the same :func:`structure_hash`, or None."""
        self._check_open()
        return self._index[LABELS].get(structure_hash(atoms))

    def contains(self, atoms: Atoms) -> bool:
        """Whether this structure is already labelled (failure records do not count)."""
        return self.find(atoms) is not None

    def find_failure(self, atoms: Atoms) -> int | None:
        """Index of the first failure record of this structure, or None."""
        self._check_open()
        return self._index[FAILURES].get(structure_hash(atoms))
