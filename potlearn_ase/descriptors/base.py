"""The descriptor interface shared by every family (ACE-like in torch, SNAP through LAMMPS).

A descriptor maps one structure to per-atom features ``B`` of shape ``(n_atoms, K)``. Models
are functions of these features, so everything a model needs for forces and stress is a
*vector-Jacobian product*: given the derivative of each member's energy with respect to every
feature, ``G`` of shape ``(M, n_atoms, K)``, return the derivative of each member's energy with
respect to the positions and to the strain. Sharing the descriptor's derivatives across the
``M`` members in this one product is what makes a committee cost about as much as one member.

Sign conventions (ASE): ``forces = -dE/dx``; ``stress = (1/V) dE/d(strain)`` in Voigt order
``xx, yy, zz, yz, xz, xy``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from ase import Atoms

from potlearn_ase.data.validate import species_indices
from potlearn_ase.errors import ConfigError

if TYPE_CHECKING:
    from potlearn_ase.descriptors.neighbours import PaddedNeighbours, SkinNeighbourList

__all__ = [
    "Descriptor",
    "DescriptorBatchOutput",
    "DescriptorOutput",
    "StackedOutput",
    "species_indices",
    "strain_to_voigt_stress",
]


def strain_to_voigt_stress(dEde: torch.Tensor, volume: float) -> torch.Tensor:
    """Turn strain derivatives ``(..., 3, 3)`` into ASE Voigt stress ``(..., 6)`` (eV/A^3)."""
    s = 0.5 * (dEde + dEde.transpose(-1, -2)) / volume
    return torch.stack(
        [s[..., 0, 0], s[..., 1, 1], s[..., 2, 2], s[..., 1, 2], s[..., 0, 2], s[..., 0, 1]],
        dim=-1,
    )


class DescriptorOutput(abc.ABC):
    """Features of one structure and the derivatives a model needs.

    Attributes
    ----------
    features : torch.Tensor
        ``(n_atoms, K)`` per-atom features.
    species : torch.Tensor
        ``(n_atoms,)`` int64 index of each atom's element in the descriptor's ``elements``.
    n_species : int
        Number of elements the descriptor knows.
    volume : float
        Cell volume in A^3 (0.0 for a structure that is not fully periodic).
    """

    features: torch.Tensor
    species: torch.Tensor
    n_species: int
    volume: float

    @property
    def n_atoms(self) -> int:
        return int(self.features.shape[0])

    @abc.abstractmethod
    def vjp(self, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member derivatives from per-atom feature cotangents.

        Parameters
        ----------
        G : torch.Tensor
            ``(M, n_atoms, K)``: ``dE_m / dB_ik`` for each member ``m``.

        Returns
        -------
        dE_dx : torch.Tensor
            ``(M, n_atoms, 3)``, the derivative of each member's energy by positions (eV/A).
        dE_dstrain : torch.Tensor
            ``(M, 3, 3)``, the derivative by the strain (eV); stress is this over the volume.
        """

    def linear_vjp(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`vjp` for linear models whose weights depend on the element only.

        ``W`` has shape ``(M, n_species, K)``; member ``m``'s energy is
        ``sum_i W[m, species_i] . B_i`` (plus constants that do not move atoms).
        """
        return self.vjp(W[:, self.species, :])

    @abc.abstractmethod
    def linear_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows of the design matrix of a linear model, for fitting.

        Returns
        -------
        energy_row : torch.Tensor
            ``(n_species, K)``: features summed over the atoms of each element.
        dE_dx : torch.Tensor
            ``(n_atoms, 3, n_species, K)``: derivatives of ``energy_row`` by positions.
        dE_dstrain : torch.Tensor
            ``(3, 3, n_species, K)``: derivatives of ``energy_row`` by the strain.
        """


class DescriptorBatchOutput(abc.ABC):
    """Features of several structures and the derivatives a model needs.

    Attributes
    ----------
    features : torch.Tensor
        ``(n_atoms, K)`` per-atom features of all the structures, in order.
    species : torch.Tensor
        ``(n_atoms,)`` int64 element index of each atom.
    batch : torch.Tensor
        ``(n_atoms,)`` int64 index of each atom's structure.
    volumes : list of float
        Cell volume of each structure (0.0 unless fully periodic).
    """

    features: torch.Tensor
    species: torch.Tensor
    volumes: list[float]

    @property
    @abc.abstractmethod
    def batch(self) -> torch.Tensor:
        """``(n_atoms,)`` structure index of each atom."""

    @property
    def n_structures(self) -> int:
        return len(self.volumes)

    @abc.abstractmethod
    def vjp(self, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`DescriptorOutput.vjp`; the strain part is ``(M, n_structures, 3, 3)``."""

    def linear_vjp(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`DescriptorOutput.linear_vjp`, strain part ``(M, n_structures, 3, 3)``."""
        return self.vjp(W[:, self.species, :])

    @abc.abstractmethod
    def linear_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Design-matrix rows of a linear model for every structure of the batch.

        Returns
        -------
        energy_rows : torch.Tensor
            ``(n_structures, n_species, K)``.
        dE_dx : torch.Tensor
            ``(n_atoms, 3, n_species, K)``.
        dE_dstrain : torch.Tensor
            ``(n_structures, 3, 3, n_species, K)``.
        """


class StackedOutput(DescriptorBatchOutput):
    """A batch made of one :class:`DescriptorOutput` per structure (the default batch).

    Descriptors that cannot share work across structures (SNAP through LAMMPS) batch this
    way: every method runs on each structure and stacks the results.
    """

    def __init__(self, outputs: Sequence[DescriptorOutput], *, n_species: int, n_features: int):
        self.outputs = list(outputs)
        self.n_species = n_species
        feats = [o.features for o in self.outputs]
        empty = torch.zeros(0, n_features, dtype=torch.float64)
        self.features = torch.cat(feats) if feats else empty
        species = [o.species for o in self.outputs]
        self.species = torch.cat(species) if species else torch.zeros(0, dtype=torch.int64)
        self.volumes = [float(o.volume) for o in self.outputs]
        counts = torch.tensor([o.n_atoms for o in self.outputs], dtype=torch.int64)
        index = torch.arange(len(self.outputs), dtype=torch.int64)
        self._batch = torch.repeat_interleave(index, counts).to(self.features.device)

    @property
    def batch(self) -> torch.Tensor:
        return self._batch

    def _slices(self) -> list[slice]:
        out, start = [], 0
        for o in self.outputs:
            out.append(slice(start, start + o.n_atoms))
            start += o.n_atoms
        return out

    def vjp(self, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [o.vjp(G[:, sl]) for o, sl in zip(self.outputs, self._slices())]
        return _stack_derivatives(parts, G)

    def linear_vjp(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _stack_derivatives([o.linear_vjp(W) for o in self.outputs], W)

    def linear_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        terms = [o.linear_terms() for o in self.outputs]
        if not terms:
            K = int(self.features.shape[1])
            z = self.features.new_zeros
            return z(0, self.n_species, K), z(0, 3, self.n_species, K), z(
                0, 3, 3, self.n_species, K
            )
        e, dx, de = zip(*terms)
        return torch.stack(e), torch.cat(dx), torch.stack(de)


def _stack_derivatives(
    parts: list[tuple[torch.Tensor, torch.Tensor]], like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    if not parts:
        M = like.shape[0]
        return like.new_zeros(M, 0, 3), like.new_zeros(M, 0, 3, 3)
    dx, de = zip(*parts)
    return torch.cat(dx, dim=1), torch.stack(de, dim=1)


class Descriptor(abc.ABC):
    """Base class: hyperparameters live in a frozen dataclass ``config``.

    Subclasses set ``elements`` (tuple of chemical symbols, the order of species indices),
    ``n_features`` (K), ``dtype`` and ``device`` (of the tensors it returns) and implement
    :meth:`compute` and :meth:`todict`. They override :meth:`compute_batch` when several
    structures can share one pass, :meth:`to` when they can run elsewhere than the CPU, and
    :meth:`neighbour_list` when they work on the padded neighbour layout of
    :mod:`~potlearn_ase.descriptors.neighbours` (which lets a calculator reuse it between MD
    steps).

    Attributes
    ----------
    elements : tuple of str
        Chemical symbols, in the order of species indices.
    n_features : int
        Number of features ``K`` per atom.
    family : str
        Name of the descriptor family in model files (``"ace"``, ``"snap"``).
    dtype : torch.dtype
        Floating-point type of the features and derivatives.
    device : torch.device
        Where the features and derivatives are.
    """

    elements: tuple[str, ...]
    n_features: int
    family: str = "base"
    dtype: torch.dtype = torch.float64
    device: torch.device = torch.device("cpu")

    @abc.abstractmethod
    def compute(
        self,
        atoms: Atoms,
        *,
        derivatives: bool = True,
        neighbours: PaddedNeighbours | None = None,
    ) -> DescriptorOutput:
        """Features (and, when asked, their derivatives) of one structure.

        ``neighbours``, when given, is this structure's layout from :meth:`neighbour_list`
        (built for at least the descriptor's cutoff, with the current positions).
        """

    def compute_batch(
        self, frames: Sequence[Atoms], *, derivatives: bool = True
    ) -> DescriptorBatchOutput:
        """Features of several structures (default: :meth:`compute` on each, stacked)."""
        return StackedOutput(
            [self.compute(a, derivatives=derivatives) for a in frames],
            n_species=len(self.elements),
            n_features=self.n_features,
        )

    def to(self, device: torch.device | str) -> Descriptor:
        """This descriptor on ``device`` (itself when it is there already).

        Raises
        ------
        ConfigError
            The descriptor cannot run on ``device``.
        """
        if torch.device(device) == torch.device(self.device):
            return self
        raise ConfigError(
            f"the {self.family} descriptor runs on {self.device} only, not on {device}"
        )

    def neighbour_list(self, skin: float) -> SkinNeighbourList | None:
        """A reusable neighbour list for :meth:`compute`'s ``neighbours``, or None.

        None (the default) means the descriptor finds neighbours itself on every call.
        """
        return None

    @abc.abstractmethod
    def todict(self) -> dict[str, Any]:
        """JSON-able hyperparameters; ``descriptor_from_dict`` restores the descriptor."""
