"""The HDF5 file of a label store: its schema, and reading and appending records in it.

One group per kind of record (``labels`` and ``failures``), one dataset per field. Per-record
fields have one row per record; per-atom fields (``numbers``, ``positions``, ``forces``) are
the records' arrays concatenated, cut apart by the per-record ``n_atoms``. ``info`` and
``provenance`` are JSON strings, ``hash`` the :func:`~potlearn_ase.data.records.structure_hash`.
Energies are per structure (eV), forces in eV/Angstrom, stress in eV/Angstrom^3 in ASE Voigt
order (NaN, and ``has_stress`` false, when absent). The root attributes name the format, its
version and the store's id (which its journal repeats).

The file is never modified in place: the store writes a copy (:func:`create`,
:func:`append_records`) and moves it over the original; see :mod:`potlearn_ase.data.store`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from potlearn_ase.data.records import FAILURES, KINDS, LABELS, Record
from potlearn_ase.errors import StoreError

__all__ = [
    "FORMAT",
    "SCHEMA",
    "VERSION",
    "append_records",
    "create",
    "open_file",
    "read_index",
    "read_records",
]

FORMAT = "potlearn-ase/label-store"
VERSION = 1
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
SCHEMA = {
    LABELS: {
        **_COMMON,
        "energy": ("record", "<f8", ()),
        "forces": ("atom", "<f8", (3,)),
        "stress": ("record", "<f8", (6,)),
        "has_stress": ("record", "?", ()),
    },
    FAILURES: {**_COMMON, "error": ("record", _STR, ())},
}
"""kind -> field -> (``"record"`` or ``"atom"``, dtype, shape of one row)."""


def create(path: Path) -> None:
    """Write an empty store file with a new store id at ``path`` (not fsynced)."""
    with h5py.File(path, "w", locking=False) as f:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["store_id"] = uuid.uuid4().hex
        for kind, schema in SCHEMA.items():
            group = f.create_group(kind)
            for name, (per, dtype, tail) in schema.items():
                chunk = (1024 if per == "atom" else 256, *tail)
                group.create_dataset(
                    name, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype, chunks=chunk
                )
            group["positions"].attrs["units"] = "Angstrom"
            group["cell"].attrs["units"] = "Angstrom"
        f[LABELS]["energy"].attrs["units"] = "eV (per structure)"
        f[LABELS]["forces"].attrs["units"] = "eV/Angstrom"
        f[LABELS]["stress"].attrs["units"] = "eV/Angstrom^3 (ASE Voigt order; NaN if absent)"


def open_file(path: Path, store_id: str | None = None) -> h5py.File:
    """Open a store file read-only, checking its format (and its id, unless None).

    Raises
    ------
    StoreError
        Not readable, not a label store, or a store with another id.
    """
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise StoreError(f"{path} is not a readable label store: {exc}") from None
    fmt, version = f.attrs.get("format"), f.attrs.get("version")
    if fmt != FORMAT or version != VERSION or any(k not in f for k in KINDS):
        f.close()
        raise StoreError(
            f"{path} is not a label store (format {fmt!r}, version "
            f"{version!r}; expected {FORMAT!r} version {VERSION})"
        )
    if store_id not in (None, f.attrs.get("store_id")):
        f.close()
        raise StoreError(f"{path} was replaced by another label store")
    return f


def read_index(f: h5py.File) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Per kind: the atom offsets of the records (``n + 1`` of them) and their hashes."""
    offsets: dict[str, np.ndarray] = {}
    hashes: dict[str, list[str]] = {}
    for kind in KINDS:
        offsets[kind] = np.concatenate([[0], np.cumsum(f[kind]["n_atoms"][:])])
        hashes[kind] = [h.decode() for h in f[kind]["hash"][:]]
    return offsets, hashes


def read_records(
    f: h5py.File, kind: str, offsets: np.ndarray, start: int, end: int
) -> list[Record]:
    """Records ``start:end`` of ``kind``; ``offsets`` as from :func:`read_index`."""
    off = offsets
    g = f[kind]
    cols = {}
    for name, (per, dtype, _) in SCHEMA[kind].items():
        ds = g[name].asstr() if dtype is _STR else g[name]
        cols[name] = ds[off[start] : off[end]] if per == "atom" else ds[start:end]
    out: list[Record] = []
    for k in range(end - start):
        a, b = off[start + k] - off[start], off[start + k + 1] - off[start]
        rec = Record(
            numbers=cols["numbers"][a:b].astype(np.int64),
            positions=cols["positions"][a:b],
            cell=cols["cell"][k],
            pbc=cols["pbc"][k],
            info=json.loads(cols["info"][k]),
            provenance=json.loads(cols["provenance"][k]),
            hash=cols["hash"][k].decode(),
        )
        if kind == LABELS:
            rec.energy = float(cols["energy"][k])
            rec.forces = cols["forces"][a:b]
            rec.stress = cols["stress"][k] if cols["has_stress"][k] else None
        else:
            rec.error = str(cols["error"][k])
        out.append(rec)
    return out


def append_records(path: Path, records: Mapping[str, list[Record]]) -> None:
    """Append records (per kind) to the store file at ``path`` (not fsynced)."""
    with h5py.File(path, "r+", locking=False) as f:
        for kind, recs in records.items():
            if not recs:
                continue
            for name, col in _columns(kind, recs).items():
                ds = f[kind][name]
                old = ds.shape[0]
                ds.resize(old + len(col), axis=0)
                ds[old:] = col


def _columns(kind: str, recs: list[Record]) -> dict[str, np.ndarray]:
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
    if kind == LABELS:
        cols["energy"] = np.array([r.energy for r in recs])
        cols["forces"] = np.concatenate([r.forces for r in recs]).reshape(-1, 3)
        cols["stress"] = np.stack(
            [r.stress if r.stress is not None else np.full(6, np.nan) for r in recs]
        )
        cols["has_stress"] = np.array([r.stress is not None for r in recs])
    else:
        cols["error"] = np.array([r.error for r in recs], dtype=object)
    return cols
