"""Neighbour lists (vesin) in a padded per-atom layout.

Every descriptor of this package works on the same layout: for each centre atom ``i`` a row of
``max_neighbours`` slots holding neighbour indices ``j`` and the periodic shift of each pair, with
a mask for the unused slots. Batched matrix products over that layout are what keep the
descriptor and its derivatives fast on the CPU, and it moves to the GPU unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from vesin import NeighborList

from potlearn_ase.data.validate import check_structure

__all__ = ["PaddedNeighbours", "SkinNeighbourList", "neighbour_pairs", "padded_neighbours"]


def neighbour_pairs(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbour list of one structure.

    Returns
    -------
    i, j : np.ndarray
        int64 centre and neighbour indices of every pair with ``|r_ij| < cutoff``.
    shifts : np.ndarray
        ``(n_pairs, 3)`` int64 cell shifts: ``r_ij = x_j - x_i + shifts @ cell``.
    """
    pbc = np.asarray(atoms.pbc, dtype=bool)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    if not pbc.all():
        # vesin needs a box even along open directions; give those a length no pair can span.
        cell = cell.copy()
        span = np.ptp(positions, axis=0) if len(positions) else np.zeros(3)
        big = float(span.max() + 2.0 * cutoff + 1.0)
        for k in range(3):
            if not pbc[k]:
                cell[k] = 0.0
                cell[k, k] = big
        if not pbc.any():
            positions = positions - positions.min(axis=0)
    nl = NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, S = nl.compute(points=positions, box=cell, periodic=pbc, quantities="ijS")
    return i.astype(np.int64), j.astype(np.int64), S.astype(np.int64)


@dataclass
class PaddedNeighbours:
    """Neighbours of a batch of structures in a padded per-atom layout.

    Attributes
    ----------
    positions : torch.Tensor
        ``(n_atoms, 3)`` positions of all atoms of the batch.
    cells : torch.Tensor
        ``(n_structures, 3, 3)``.
    batch : torch.Tensor
        ``(n_atoms,)`` structure index of each atom.
    neighbour : torch.Tensor
        ``(n_atoms, max_nb)`` int64 global index of each neighbour (0 in empty slots).
    shift : torch.Tensor
        ``(n_atoms, max_nb, 3)`` cell shifts (float, 0 in empty slots).
    mask : torch.Tensor
        ``(n_atoms, max_nb)`` bool, True for real pairs.
    """

    positions: torch.Tensor
    cells: torch.Tensor
    batch: torch.Tensor
    neighbour: torch.Tensor
    shift: torch.Tensor
    mask: torch.Tensor
    # float64 positions, cells and shifts when the layout is in a lower precision: r_ij is a
    # small difference of possibly large coordinates (unwrapped MD), so it is formed in float64
    exact: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def max_nb(self) -> int:
        return int(self.neighbour.shape[1])

    def vectors(
        self, positions: torch.Tensor | None = None, cells: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``r_ij = x_j - x_i + shift @ cell`` as ``(n_atoms, max_nb, 3)``.

        Pass positions and cells that require grad to differentiate through them. Without
        them, a lower-precision layout forms ``r_ij`` in float64 and then rounds it.
        """
        if positions is None and cells is None and self.exact is not None:
            x64, c64, s64 = self.exact
            off = torch.einsum("ikc,icd->ikd", s64, c64[self.batch])
            return (x64[self.neighbour] - x64[:, None, :] + off).to(self.positions.dtype)
        x = self.positions if positions is None else positions
        c = self.cells if cells is None else cells
        cell_per_atom = c[self.batch]  # (n, 3, 3)
        offset = torch.einsum("ikc,icd->ikd", self.shift, cell_per_atom)
        return x[self.neighbour] - x[:, None, :] + offset


def padded_neighbours(
    frames: Sequence[Atoms],
    cutoff: float,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> PaddedNeighbours:
    """Build the padded neighbour layout of one or more structures.

    Every structure is checked first: non-finite positions or a singular periodic cell raise
    :class:`~potlearn_ase.errors.InvalidStructureError`.
    """
    all_i, all_j, all_S, positions, cells, batch = [], [], [], [], [], []
    offset = 0
    for b, atoms in enumerate(frames):
        check_structure(atoms, where=f"structure {b}")
        i, j, S = neighbour_pairs(atoms, cutoff)
        all_i.append(i + offset)
        all_j.append(j + offset)
        all_S.append(S)
        positions.append(np.asarray(atoms.positions, dtype=np.float64))
        cells.append(np.asarray(atoms.cell.array, dtype=np.float64))
        batch.append(np.full(len(atoms), b, dtype=np.int64))
        offset += len(atoms)
    i = np.concatenate(all_i) if all_i else np.zeros(0, np.int64)
    j = np.concatenate(all_j) if all_j else np.zeros(0, np.int64)
    S = np.concatenate(all_S) if all_S else np.zeros((0, 3), np.int64)
    order = np.argsort(i, kind="stable")
    pos = np.concatenate(positions) if positions else np.zeros((0, 3))
    cel = np.stack(cells) if cells else np.zeros((0, 3, 3))
    bat = np.concatenate(batch) if batch else np.zeros(0, np.int64)
    return _layout(i[order], j[order], S[order], pos, cel, bat, dtype, device)


def _layout(
    i: np.ndarray,
    j: np.ndarray,
    S: np.ndarray,
    pos: np.ndarray,
    cel: np.ndarray,
    batch: np.ndarray,
    dtype: torch.dtype,
    device: torch.device | str,
) -> PaddedNeighbours:
    """The padded layout of pairs ``(i, j, S)`` sorted by ``i`` (``n = len(pos)`` atoms)."""
    n = len(pos)
    counts = np.bincount(i, minlength=n)
    max_nb = max(int(counts.max()) if n else 0, 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n else np.zeros(0, np.int64)
    slot = np.arange(len(i)) - starts[i]
    neighbour = np.zeros((n, max_nb), dtype=np.int64)
    shift = np.zeros((n, max_nb, 3), dtype=np.float64)
    mask = np.zeros((n, max_nb), dtype=bool)
    neighbour[i, slot] = j
    shift[i, slot] = S
    mask[i, slot] = True
    dev = torch.device(device)
    exact = None
    if dtype != torch.float64:
        exact = tuple(
            torch.as_tensor(a, dtype=torch.float64, device=dev) for a in (pos, cel, shift)
        )
    return PaddedNeighbours(
        positions=torch.as_tensor(pos, dtype=dtype, device=dev),
        cells=torch.as_tensor(cel, dtype=dtype, device=dev),
        batch=torch.as_tensor(batch, device=dev),
        neighbour=torch.as_tensor(neighbour, device=dev),
        shift=torch.as_tensor(shift, dtype=dtype, device=dev),
        mask=torch.as_tensor(mask, device=dev),
        exact=exact,  # type: ignore[arg-type]
    )


class SkinNeighbourList:
    """Neighbours of one structure from a list that is reused while the atoms stay close.

    The pair list is built for ``cutoff + skin`` and kept until an atom has moved more than
    ``skin / 2`` since the build, or the cell, the periodicity or the atoms' elements
    change (the rule of ASE's ``NeighborList`` with a skin): no pair closer than ``cutoff``
    can be missing until then. Every :meth:`update` selects from it the pairs now closer
    than ``cutoff`` (from the current positions, in float64) and lays them out as
    :func:`padded_neighbours` does, so a descriptor sees the pairs a new list would give
    (in another order within each atom's row) and does no extra work.

    Parameters
    ----------
    cutoff : float
        The descriptor's cutoff radius (Angstrom).
    skin : float
        Extra distance (Angstrom); 0 builds a new list on every update.
    dtype, device
        As :func:`padded_neighbours`.

    Attributes
    ----------
    n_builds : int
        How many times the pair list was built (the first update included).
    """

    def __init__(
        self,
        cutoff: float,
        skin: float,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ):
        if not skin >= 0.0:
            raise ValueError(f"skin must be a non-negative distance, got {skin!r}")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.dtype = dtype
        self.device = torch.device(device)
        self.n_builds = 0
        self._pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._positions = np.zeros((0, 3))
        self._cell = np.zeros((3, 3))
        self._numbers = np.zeros(0, dtype=np.int64)
        self._pbc = np.zeros(3, dtype=bool)

    def reset(self) -> None:
        """Forget the list: the next :meth:`update` builds a new one."""
        self._pairs = None

    def needs_rebuild(self, atoms: Atoms) -> bool:
        """Whether ``atoms`` moved or changed too much for the current list."""
        if self._pairs is None or self.skin == 0.0:
            return True
        if (
            len(atoms) != len(self._numbers)
            or not np.array_equal(atoms.numbers, self._numbers)
            or not np.array_equal(atoms.pbc, self._pbc)
            or not np.array_equal(atoms.cell.array, self._cell)
        ):
            return True
        if not len(atoms):
            return False
        d = atoms.positions - self._positions
        moved = np.einsum("ij,ij->i", d, d).max()
        return not moved <= (0.5 * self.skin) ** 2  # NaN positions rebuild (and raise)

    def update(self, atoms: Atoms) -> PaddedNeighbours:
        """The layout of ``atoms`` now; the pair list is rebuilt only when needed."""
        if self.needs_rebuild(atoms):
            if self.skin == 0.0:
                self.n_builds += 1
                return padded_neighbours([atoms], self.cutoff, dtype=self.dtype, device=self.device)
            check_structure(atoms)
            i, j, S = neighbour_pairs(atoms, self.cutoff + self.skin)
            order = np.argsort(i, kind="stable")
            self._pairs = (i[order], j[order], S[order])
            self._positions = np.array(atoms.positions, dtype=np.float64)
            self._cell = np.array(atoms.cell.array, dtype=np.float64)
            self._numbers = np.array(atoms.numbers)
            self._pbc = np.array(atoms.pbc, dtype=bool)
            self.n_builds += 1
        assert self._pairs is not None
        i, j, S = self._pairs
        pos = np.asarray(atoms.positions, dtype=np.float64)
        r = pos[j] - pos[i] + S @ self._cell
        keep = np.einsum("ij,ij->i", r, r) < self.cutoff**2
        return _layout(
            i[keep], j[keep], S[keep], pos, self._cell[None], np.zeros(len(pos), np.int64),
            self.dtype, self.device,
        )
