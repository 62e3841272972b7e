"""An ordered, validated collection of labelled structures."""

from __future__ import annotations

import collections.abc
import os
from collections.abc import Iterable
from typing import Any, overload

import numpy as np
from ase import Atoms
from ase.calculators.calculator import all_properties
from ase.calculators.singlepoint import SinglePointCalculator

from potlearn_ase.data.validate import check_structure, get_labels

__all__ = ["Dataset", "copy_labelled"]


def copy_labelled(atoms: Atoms) -> Atoms:
    """A copy of ``atoms`` that keeps its labels.

    ``Atoms.copy`` drops the calculator; this attaches a
    :class:`~ase.calculators.singlepoint.SinglePointCalculator` holding copies of every
    standard ASE result (energy, forces, stress, ...) of the original's calculator.

    Parameters
    ----------
    atoms
        The structure to copy.

    Returns
    -------
    ase.Atoms
        An independent copy (positions, cell, info, arrays and labels).
    """
    out = atoms.copy()
    results = getattr(getattr(atoms, "calc", None), "results", None) or {}
    kept = {k: np.array(v, copy=True) for k, v in results.items() if k in all_properties}
    if kept:
        for key in ("energy", "free_energy"):
            if key in kept:
                kept[key] = float(kept[key])
        out.calc = SinglePointCalculator(out, **kept)
    return out


class Dataset(collections.abc.Sequence):
    """An ordered collection of :class:`ase.Atoms`, each checked on entry.

    Parameters
    ----------
    frames
        Initial structures. Each is checked with
        :func:`~potlearn_ase.data.validate.check_structure`; the Atoms objects are stored,
        not copied (use :meth:`copy` for an independent data set).
    source
        Where the frames come from (a file name); used in error messages.

    Notes
    -----
    Indexing with an integer returns the stored :class:`ase.Atoms`; indexing with a slice, an
    integer sequence or a boolean mask returns a new :class:`Dataset` sharing those Atoms.
    Labels are read from each structure's calculator results (see
    :func:`~potlearn_ase.data.validate.get_labels`).
    """

    def __init__(self, frames: Iterable[Atoms] = (), *, source: str | os.PathLike | None = None):
        self.source: str | None = None if source is None else os.fspath(source)
        self._frames: list[Atoms] = []
        self.extend(frames)

    # --- construction -------------------------------------------------------------------
    def _where(self, k: int) -> str:
        return f"{self.source}, frame {k}" if self.source else f"frame {k}"

    def append(self, atoms: Atoms) -> None:
        """Check ``atoms`` and add it at the end."""
        check_structure(atoms, where=self._where(len(self._frames)))
        self._frames.append(atoms)

    def extend(self, frames: Iterable[Atoms]) -> None:
        """Check and add every structure of ``frames``, in order."""
        for atoms in frames:
            self.append(atoms)

    def copy(self) -> Dataset:
        """An independent data set: every structure and its labels copied."""
        return Dataset([copy_labelled(a) for a in self._frames], source=self.source)

    @classmethod
    def read(
        cls,
        path: str | os.PathLike,
        index: Any = ":",
        format: str | None = None,
        **kwargs: Any,
    ) -> Dataset:
        """Read structures from a file; see :func:`potlearn_ase.data.io.read`."""
        from potlearn_ase.data.io import read

        return read(path, index=index, format=format, **kwargs)

    def write(self, path: str | os.PathLike, format: str | None = None, **kwargs: Any) -> None:
        """Write every structure to a file; see :func:`potlearn_ase.data.io.write`."""
        from potlearn_ase.data.io import write

        write(path, self, format=format, **kwargs)

    # --- sequence protocol --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._frames)

    @overload
    def __getitem__(self, index: int | np.integer) -> Atoms: ...

    @overload
    def __getitem__(
        self, index: slice | Iterable[int] | Iterable[bool] | np.ndarray
    ) -> Dataset: ...

    def __getitem__(self, index: Any) -> Atoms | Dataset:
        if isinstance(index, (int, np.integer)):
            return self._frames[index]
        if isinstance(index, slice):
            return self._subset(self._frames[index])
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(
                    f"boolean mask of shape {idx.shape} for a data set of {len(self)} frames"
                )
            idx = np.flatnonzero(idx)
        elif idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(
                f"Dataset indices must be int, slice, an integer array or a boolean mask, "
                f"got {type(index).__name__} of dtype {idx.dtype}"
            )
        return self._subset([self._frames[int(i)] for i in idx])

    def _subset(self, frames: list[Atoms]) -> Dataset:
        out = Dataset(source=self.source)
        out._frames = frames  # already checked
        return out

    def __repr__(self) -> str:
        src = f", source={self.source!r}" if self.source else ""
        return f"Dataset({len(self)} frames, elements={self.elements}{src})"

    # --- summaries ----------------------------------------------------------------------
    @property
    def elements(self) -> list[str]:
        """Sorted unique chemical symbols over all frames."""
        return sorted({s for a in self._frames for s in a.get_chemical_symbols()})

    @property
    def n_atoms(self) -> np.ndarray:
        """Number of atoms of each frame, ``(n_frames,)`` int64."""
        return np.array([len(a) for a in self._frames], dtype=np.int64)

    @property
    def energies(self) -> np.ndarray:
        """Energy of each frame in eV, ``(n_frames,)``; NaN where a frame has none."""
        return np.array(
            [get_labels(a).get("energy", np.nan) for a in self._frames], dtype=np.float64
        )

    @property
    def forces(self) -> list[np.ndarray]:
        """Forces of each frame, ``(N_k, 3)`` in eV/Angstrom; filled with NaN where absent."""
        out = []
        for a in self._frames:
            f = get_labels(a).get("forces")
            out.append(f if f is not None else np.full((len(a), 3), np.nan))
        return out

    @property
    def stresses(self) -> np.ndarray:
        """Stress of each frame, ``(n_frames, 6)`` Voigt, eV/Angstrom^3; NaN where absent."""
        out = np.full((len(self), 6), np.nan)
        for k, a in enumerate(self._frames):
            s = get_labels(a).get("stress")
            if s is not None:
                out[k] = s
        return out

    @property
    def has_energy(self) -> np.ndarray:
        """Whether each frame carries an energy, ``(n_frames,)`` bool."""
        return np.array(["energy" in get_labels(a) for a in self._frames], dtype=bool)

    @property
    def has_forces(self) -> np.ndarray:
        """Whether each frame carries forces, ``(n_frames,)`` bool."""
        return np.array(["forces" in get_labels(a) for a in self._frames], dtype=bool)

    @property
    def has_stress(self) -> np.ndarray:
        """Whether each frame carries a stress, ``(n_frames,)`` bool."""
        return np.array(["stress" in get_labels(a) for a in self._frames], dtype=bool)
