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
from typing import Any

import torch
from ase import Atoms

from potlearn_ase.data.validate import species_indices

__all__ = ["Descriptor", "DescriptorOutput", "species_indices", "strain_to_voigt_stress"]


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


class Descriptor(abc.ABC):
    """Base class: hyperparameters live in a frozen dataclass ``config``.

    Subclasses set ``elements`` (tuple of chemical symbols, the order of species indices),
    ``n_features`` (K) and implement :meth:`compute`.
    """

    elements: tuple[str, ...]
    n_features: int
    family: str = "base"

    @abc.abstractmethod
    def compute(self, atoms: Atoms, *, derivatives: bool = True) -> DescriptorOutput:
        """Features (and, when asked, their derivatives) of one structure."""

    @abc.abstractmethod
    def todict(self) -> dict[str, Any]:
        """JSON-able hyperparameters; ``descriptor_from_dict`` restores the descriptor."""
