"""Batches of structures as flat torch tensors, and an iterator over a data set in batches."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from potlearn_ase.data.dataset import Dataset
from potlearn_ase.data.validate import get_labels
from potlearn_ase.errors import ConfigError, DataFormatError

__all__ = ["AtomsBatch", "BatchIterator", "collate", "resolve_device", "set_cpu_threads"]

#: below this many atoms, one CPU thread is faster than several: thread start-up and
#: contention dominate the small tensor operations (and a loaded machine makes it far worse)
SMALL_SYSTEM_ATOMS = 256


def resolve_device(device: str | torch.device | None = "cpu") -> torch.device:
    """A :class:`torch.device` from a name.

    Parameters
    ----------
    device
        ``"auto"`` means CUDA when :func:`torch.cuda.is_available`, else CPU; ``None`` means
        CPU; anything else is passed to :class:`torch.device` (``"cpu"``, ``"cuda:1"``, ...).
        A CUDA device that this machine does not have is a :class:`ConfigError`.

    Returns
    -------
    torch.device
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        out = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"unknown device {device!r}: {err}") from err
    if out.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r}: this machine has no CUDA device (use 'cpu' or 'auto')"
            )
        if out.index is not None and out.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    return out


def set_cpu_threads(n_atoms: int | None = None, *, threads: int | None = None) -> int:
    """Set torch's CPU thread count for the rest of the process, once, before a run.

    Predictions never change the thread count themselves (it is process-wide state): call
    this once before MD, as :func:`~potlearn_ase.learners.run.run_otf` does with its
    starting structure.

    Parameters
    ----------
    n_atoms : int, optional
        Size of the structures the run computes: below ``SMALL_SYSTEM_ATOMS`` (256) one
        thread, otherwise every core this process may use.
    threads : int, optional
        An explicit count (overrides ``n_atoms``).

    Returns
    -------
    int
        The thread count now in force.
    """
    if threads is None:
        if n_atoms is not None and n_atoms < SMALL_SYSTEM_ATOMS:
            threads = 1
        else:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
                os.cpu_count() or 1
            )
    if threads < 1:
        raise ConfigError(f"threads: must be at least 1, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(int(threads))
    return int(threads)


@dataclass
class AtomsBatch:
    """Several structures as flat tensors; atoms of all structures are concatenated.

    Attributes
    ----------
    positions : torch.Tensor
        ``(n, 3)`` Cartesian positions, Angstrom (``n`` atoms over all structures).
    numbers : torch.Tensor
        ``(n,)`` int64 atomic numbers.
    cell : torch.Tensor
        ``(B, 3, 3)`` cell vectors as rows, Angstrom.
    pbc : torch.Tensor
        ``(B, 3)`` bool periodicity.
    batch : torch.Tensor
        ``(n,)`` int64 index of the structure each atom belongs to.
    n_atoms : torch.Tensor
        ``(B,)`` int64 atoms per structure.
    energy, forces, stress : torch.Tensor or None
        Labels: ``(B,)`` eV, ``(n, 3)`` eV/Angstrom, ``(B, 6)`` Voigt eV/Angstrom^3. A label
        is ``None`` when no structure of the batch has it; otherwise entries of structures
        lacking it are zero and the masks below tell which are real.
    has_energy, has_forces, has_stress : torch.Tensor
        ``(B,)`` bool masks of the structures carrying each label.
    """

    positions: torch.Tensor
    numbers: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    batch: torch.Tensor
    n_atoms: torch.Tensor
    has_energy: torch.Tensor
    has_forces: torch.Tensor
    has_stress: torch.Tensor
    energy: torch.Tensor | None = None
    forces: torch.Tensor | None = None
    stress: torch.Tensor | None = None

    @property
    def n_structures(self) -> int:
        """Number of structures ``B``."""
        return int(self.n_atoms.shape[0])

    @property
    def device(self) -> torch.device:
        """Device of the tensors."""
        return self.positions.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point dtype of positions, cell and labels."""
        return self.positions.dtype

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> AtomsBatch:
        """A new batch on ``device``; floating tensors cast to ``dtype`` when given.

        Integer and boolean tensors keep their dtype.
        """
        dev = resolve_device(device)
        changes = {}
        for f in dataclasses.fields(self):
            t = getattr(self, f.name)
            if t is None:
                continue
            if dtype is not None and t.is_floating_point():
                changes[f.name] = t.to(device=dev, dtype=dtype)
            else:
                changes[f.name] = t.to(device=dev)
        return dataclasses.replace(self, **changes)


def collate(
    frames: Sequence[Atoms],
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> AtomsBatch:
    """Stack structures and their labels into one :class:`AtomsBatch`.

    Parameters
    ----------
    frames
        At least one structure.
    dtype
        Floating-point dtype of positions, cell and labels.
    device
        Where the tensors go (``"auto"`` allowed, see :func:`resolve_device`).

    Raises
    ------
    ValueError
        For an empty sequence.
    DataFormatError
        For forces not ``(N, 3)`` or stress not Voigt 6.
    """
    frames = list(frames)
    if not frames:
        raise ValueError("cannot collate an empty sequence of structures")
    dev = resolve_device(device)
    B = len(frames)
    n_atoms = np.array([len(a) for a in frames], dtype=np.int64)
    n = int(n_atoms.sum())
    labels = [get_labels(a) for a in frames]

    has_e = np.array(["energy" in lab for lab in labels], dtype=bool)
    has_f = np.array(["forces" in lab for lab in labels], dtype=bool)
    has_s = np.array(["stress" in lab for lab in labels], dtype=bool)
    energy = forces = stress = None
    if has_e.any():
        energy = np.array([lab.get("energy", 0.0) for lab in labels], dtype=np.float64)
    if has_f.any():
        forces = np.zeros((n, 3))
        start = 0
        for k, (a, lab) in enumerate(zip(frames, labels, strict=True)):
            if "forces" in lab:
                if lab["forces"].shape != (len(a), 3):
                    raise DataFormatError(
                        f"structure {k} of the batch: forces have shape {lab['forces'].shape}, "
                        f"expected ({len(a)}, 3)"
                    )
                forces[start : start + len(a)] = lab["forces"]
            start += len(a)
    if has_s.any():
        stress = np.zeros((B, 6))
        for k, lab in enumerate(labels):
            if "stress" in lab:
                if lab["stress"].shape != (6,):
                    raise DataFormatError(
                        f"structure {k} of the batch: stress has shape {lab['stress'].shape}, "
                        "expected (6,)"
                    )
                stress[k] = lab["stress"]

    def f(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=dtype).to(dev)

    def i(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.int64).to(dev)

    def b(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.bool).to(dev)

    return AtomsBatch(
        positions=f(np.concatenate([a.positions for a in frames]).reshape(n, 3)),
        numbers=i(np.concatenate([a.numbers for a in frames])),
        cell=f(np.stack([a.cell.array for a in frames])),
        pbc=b(np.stack([a.pbc for a in frames])),
        batch=i(np.repeat(np.arange(B), n_atoms)),
        n_atoms=i(n_atoms),
        has_energy=b(has_e),
        has_forces=b(has_f),
        has_stress=b(has_s),
        energy=None if energy is None else f(energy),
        forces=None if forces is None else f(forces),
        stress=None if stress is None else f(stress),
    )


class BatchIterator:
    """Iterate over a data set in batches of :class:`AtomsBatch`.

    Parameters
    ----------
    dataset
        The structures.
    batch_size
        Structures per batch; the last batch may be smaller.
    shuffle
        Visit the structures in a new random order each epoch (each ``iter()``).
    rng
        :class:`numpy.random.Generator` or integer seed for the shuffling. Each epoch draws
        a new permutation from it, so equal seeds give equal sequences of epochs.
        ``None`` seeds from the operating system.
    dtype, device
        Passed to :func:`collate`.
    """

    def __init__(
        self,
        dataset: Dataset | Sequence[Atoms],
        batch_size: int,
        *,
        shuffle: bool = True,
        rng: np.random.Generator | int | None = None,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ):
        if int(batch_size) != batch_size or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.rng = np.random.default_rng(rng)
        self.dtype = dtype
        self.device = resolve_device(device)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def order(self) -> np.ndarray:
        """The frame order of a new epoch (draws from ``rng`` when shuffling)."""
        n = len(self.dataset)
        return self.rng.permutation(n) if self.shuffle else np.arange(n)

    def __iter__(self) -> Iterator[AtomsBatch]:
        idx = self.order()
        for start in range(0, len(idx), self.batch_size):
            chunk = idx[start : start + self.batch_size]
            yield collate(
                [self.dataset[int(k)] for k in chunk], dtype=self.dtype, device=self.device
            )
