"""Reading and writing labelled structures through :mod:`ase.io`.

Extended XYZ is the native format: energies, forces, stress and ``atoms.info`` survive a round
trip (per-atom columns to the 8 decimals ASE writes, per-frame values exactly). Any other
format :mod:`ase.io` knows is passed through, e.g. LAMMPS data (``format="lammps-data"``, with
``style=``/``atom_style=``, ``specorder=``, ``masses=``) and LAMMPS text dumps
(``format="lammps-dump-text"``, with ``specorder=``, ``order=``); keyword arguments go to the
ASE reader or writer unchanged.

Extended XYZ files are scanned frame by frame before ASE parses them, so that a malformed file
raises :class:`~potlearn_ase.errors.DataFormatError` naming the file, the frame and the line.
Frame numbers are 0-based (the ``index`` ASE and :func:`read` take); line numbers are 1-based
(as an editor shows them). For example ``"train.xyz, frame 3, line 27: ..."`` is the fourth
frame of the file, whose problem lies on its 27th line.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import logging
import lzma
import os
from collections.abc import Iterable, Sequence
from io import StringIO
from pathlib import Path
from typing import Any

import ase.io
from ase import Atoms
from ase.io.extxyz import XYZError, key_val_str_to_dict, parse_properties
from ase.io.formats import UnknownFileTypeError, filetype, ioformats, string2index

from potlearn_ase.data.dataset import Dataset
from potlearn_ase.data.labels import LabelKeys, apply_label_keys, check_labels
from potlearn_ase.data.validate import check_structure
from potlearn_ase.errors import DataFormatError

__all__ = ["read", "write"]

log = logging.getLogger(__name__)

_EXTXYZ = {"extxyz", "xyz"}
_ALIASES = {"lammpstrj": "lammps-dump-text"}
_DEFAULT_PROPERTIES = "species:S:1:pos:R:3"
# What ASE's readers raise on malformed input.
_PARSE_ERRORS = (ValueError, IndexError, KeyError, TypeError, XYZError, AssertionError)


# --- formats and files --------------------------------------------------------------------
def _format_of(path: Path, format: str | None, *, reading: bool) -> str:
    if format is not None:
        fmt = _ALIASES.get(format, format)
        if fmt not in ioformats:
            raise DataFormatError(f"{path}: unknown format {format!r}")
        return fmt
    try:
        fmt = filetype(str(path), read=False, guess=False)
    except UnknownFileTypeError:
        fmt = None
    fmt = _ALIASES.get(fmt, fmt) if fmt else None
    if fmt is None or fmt not in ioformats:
        if reading and path.stat().st_size > 0:
            try:
                fmt = filetype(str(path), read=True)
            except UnknownFileTypeError:
                fmt = None
        if fmt is None or fmt not in ioformats:
            raise DataFormatError(
                f"{path}: cannot tell the file format from its name; pass format= "
                f"(e.g. 'extxyz', 'lammps-data', 'lammps-dump-text')"
            )
    return fmt


def _read_text(path: Path) -> str:
    opener: Any = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix, open)
    try:
        with opener(path, "rt") as fh:
            return fh.read()
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not a text file ({err})") from err


def _frame_numbers(index: Any, n: int, path: Path) -> list[int]:
    if isinstance(index, str):
        index = string2index(index)
    if isinstance(index, slice):
        return list(range(n)[index])
    if isinstance(index, int):
        if not -n <= index < n:
            raise IndexError(f"{path}: frame {index} requested, the file holds {n} frames")
        return [index % n]
    raise TypeError(f"index must be an int, a slice or a string like ':' or '2:10', got {index!r}")


# --- extended XYZ -------------------------------------------------------------------------
class _Frame:
    __slots__ = ("start", "natoms", "nvec", "convs", "properties")

    def __init__(self, start: int, natoms: int, nvec: int, convs: list, properties: str):
        self.start = start  # 0-based line of the atom count
        self.natoms = natoms
        self.nvec = nvec
        self.convs = convs
        self.properties = properties

    @property
    def stop(self) -> int:
        return self.start + 2 + self.natoms + self.nvec


def _error(path: Path, frame: int, line: int, msg: str) -> DataFormatError:
    """``line`` is 0-based here and 1-based in the message."""
    return DataFormatError(f"{path}, frame {frame}, line {line + 1}: {msg}")


def _scan_extxyz(lines: Sequence[str], path: Path) -> list[_Frame]:
    """Locate every frame and check its header, comment line and column counts."""
    frames: list[_Frame] = []
    n = len(lines)
    i = 0
    while i < n:
        k = len(frames)
        line = lines[i]
        if not line.strip():
            rest = next((j for j in range(i + 1, n) if lines[j].strip()), None)
            if rest is None:
                break
            raise _error(
                path, k, i,
                f"blank line where the atom count of frame {k} was expected, but the file "
                f"continues on line {rest + 1}",
            )
        try:
            natoms = int(line)
        except ValueError:
            prev = frames[-1] if frames else None
            if prev is not None and len(prev.convs) > 1 and len(line.split()) == len(prev.convs):
                raise _error(
                    path, k - 1, i,
                    f"an atom line follows the {prev.natoms} atoms that frame {k - 1} "
                    f"declares on line {prev.start + 1}: its atom count is too small",
                ) from None
            raise _error(
                path, k, i, f"expected the atom count of frame {k}, got {line.strip()!r}"
            ) from None
        if natoms < 0:
            raise _error(path, k, i, f"negative atom count {natoms}")
        if i + 1 >= n:
            raise _error(path, k, i, "the file ends before the comment line")
        comment = lines[i + 1].strip()
        try:
            info = key_val_str_to_dict(comment) if comment else {}
            properties = str(info.get("Properties", _DEFAULT_PROPERTIES))
            convs = parse_properties(properties)[3]
        except _PARSE_ERRORS as err:
            raise _error(path, k, i + 1, f"cannot parse the comment line: {err}") from err
        ncols = len(convs)
        for j in range(natoms):
            at = i + 2 + j
            if at >= n:
                raise _error(
                    path, k, n - 1,
                    f"the file ends after {j} of the {natoms} atom lines declared on line "
                    f"{i + 1}",
                )
            got = len(lines[at].split())
            if got != ncols:
                hint = (
                    f"; the atom count {natoms} on line {i + 1} may be too large"
                    if got <= 1 or j == natoms - 1
                    else ""
                )
                raise _error(
                    path, k, at,
                    f"atom line has {got} columns, Properties={properties} needs {ncols}{hint}",
                )
        m = i + 2 + natoms
        nvec = 0
        while m < n and lines[m].lstrip().startswith("VEC"):
            nvec += 1
            m += 1
        frames.append(_Frame(i, natoms, nvec, convs, properties))
        i = m
    return frames


def _diagnose(lines: Sequence[str], frame: _Frame) -> tuple[int, str] | None:
    """The first atom line whose values do not convert, as (0-based line, message)."""
    for j in range(frame.natoms):
        at = frame.start + 2 + j
        for col, (conv, tok) in enumerate(zip(frame.convs, lines[at].split(), strict=True)):
            try:
                ok = conv(tok) is not None
            except ValueError:
                ok = False
            if not ok:
                return at, (
                    f"column {col + 1} of atom {j} is {tok!r}, which does not convert "
                    f"(Properties={frame.properties})"
                )
    return None


def _read_extxyz(path: Path, index: Any, **kwargs: Any) -> tuple[list[Atoms], list[int]]:
    lines = _read_text(path).splitlines(keepends=True)
    frames = _scan_extxyz(lines, path)
    numbers = _frame_numbers(index, len(frames), path)
    out = []
    for k in numbers:
        fr = frames[k]
        text = "".join(lines[fr.start : fr.stop])
        try:
            atoms = ase.io.read(StringIO(text), index=0, format="extxyz", **kwargs)
        except _PARSE_ERRORS as err:
            found = _diagnose(lines, fr)
            line, msg = found if found else (fr.start, f"ASE cannot read the frame: {err}")
            raise _error(path, k, line, msg) from err
        out.append(atoms)
    return out, numbers


# --- public API ---------------------------------------------------------------------------
def read(
    path: str | os.PathLike,
    index: int | slice | str = ":",
    format: str | None = None,
    *,
    labels: LabelKeys | None = None,
    **kwargs: Any,
) -> Dataset:
    """Read labelled structures from a file.

    Parameters
    ----------
    path
        The file. Extended XYZ may be compressed (``.gz``, ``.bz2``, ``.xz``).
    index
        Which frames, 0-based: an int, a slice, or a string such as ``":"``, ``"-1"`` or
        ``"0:100:10"``. An int still returns a :class:`Dataset` (of one frame).
    format
        An :mod:`ase.io` format name; guessed from the file name when omitted (``.xyz`` and
        ``.extxyz`` are extended XYZ). LAMMPS files need ``"lammps-data"`` or
        ``"lammps-dump-text"`` (``.lammpstrj`` is recognised).
    labels
        Where the file keeps its labels (:class:`~potlearn_ase.data.labels.LabelKeys`, e.g.
        ``LabelKeys(energy="REF_energy", forces="REF_forces")``); by default ASE's names, and
        a ``virial`` becomes a stress.
    **kwargs
        Passed to the ASE reader (e.g. ``style="atomic"``, ``specorder=["Cu", "Au"]``).

    Returns
    -------
    Dataset
        The frames, each checked with :func:`~potlearn_ase.data.validate.check_structure`
        and :func:`~potlearn_ase.data.labels.check_labels`; ``source`` is the path.

    Raises
    ------
    FileNotFoundError
        Naming the missing file.
    DataFormatError
        For a malformed file, naming it, and for extended XYZ the 0-based frame and the
        1-based line at fault.
        Also for a label that is not a number or has the wrong shape.
    InvalidStructureError
        For a frame with non-finite positions or a singular cell (naming file and frame).
    MissingLabelError
        For a NaN or infinite label (naming file, frame and key).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, f"no such data file: {p}", str(p))
    if p.is_dir():
        raise DataFormatError(f"{p}: is a directory, not a data file")
    fmt = _format_of(p, format, reading=True)
    if fmt in _EXTXYZ:
        frames, numbers = _read_extxyz(p, index, **kwargs)
    else:
        try:
            every = ase.io.read(p, index=":", format=fmt, **kwargs)
        except _PARSE_ERRORS as err:
            raise DataFormatError(f"{p}: ASE cannot read it as {fmt}: {err}") from err
        numbers = _frame_numbers(index, len(every), p)
        frames = [every[k] for k in numbers]
    keys = labels or LabelKeys()
    for atoms, k in zip(frames, numbers, strict=True):
        where = f"{p}, frame {k}"
        check_structure(atoms, where=where)
        apply_label_keys(atoms, keys, where)
        check_labels(atoms, where)
    log.debug("read %d frames from %s (%s)", len(frames), p, fmt)
    return Dataset(frames, source=p)


def write(
    path: str | os.PathLike,
    frames: Atoms | Iterable[Atoms],
    format: str | None = None,
    **kwargs: Any,
) -> None:
    """Write structures, with their labels and ``info``, to a file.

    The file is written next to its destination under a temporary name and moved into
    place, so a reader never sees a half-written file.

    Parameters
    ----------
    path
        The destination; its name gives the format when ``format`` is omitted.
    frames
        One structure, a :class:`Dataset` or any iterable of :class:`ase.Atoms`.
    format
        An :mod:`ase.io` format name (``"extxyz"``, ``"lammps-data"``, ...).
    **kwargs
        Passed to the ASE writer (e.g. ``specorder=["Cu", "Au"]``, ``masses=True``).

    Raises
    ------
    DataFormatError
        For an unknown or read-only format, or several frames for a one-frame format.
    """
    p = Path(path)
    images = [frames] if isinstance(frames, Atoms) else list(frames)
    fmt = _format_of(p, format, reading=False)
    io = ioformats[fmt]
    if not io.can_write:
        raise DataFormatError(f"{p}: ASE cannot write the format {fmt!r}")
    if io.single and len(images) != 1:
        raise DataFormatError(
            f"{p}: the format {fmt!r} holds exactly one structure, {len(images)} given"
        )
    if not p.parent.exists():
        raise FileNotFoundError(errno.ENOENT, f"no such directory: {p.parent}", str(p.parent))
    tmp = p.with_name(f".tmp-{os.getpid()}-{p.name}")
    try:
        ase.io.write(tmp, images[0] if io.single else images, format=fmt, **kwargs)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    log.debug("wrote %d frames to %s (%s)", len(images), p, fmt)
