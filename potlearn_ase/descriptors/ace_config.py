"""Hyperparameters of the ACE-like descriptor.

:class:`ACEConfig` configures :class:`~potlearn_ase.descriptors.ace.ACEDescriptor` and is
importable from :mod:`potlearn_ase.descriptors.ace` too; its fields are the keys
:meth:`~potlearn_ase.descriptors.ace.ACEDescriptor.todict` writes next to the elements.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ACEConfig"]


@dataclass(frozen=True)
class ACEConfig:
    """Hyperparameters of the ACE-like descriptor.

    Attributes
    ----------
    cutoff : float
        Cutoff radius in Angstrom.
    n_radial : int
        Radial functions per neighbour element.
    l_max : int
        Highest angular degree (0 to 3).
    body_order : int
        3 (pair correlations of the atomic base) or 4 (adds triple products of the radial,
        ``l = 0`` densities: radial four-body terms, no angular four-body couplings).
    """

    cutoff: float = 5.0
    n_radial: int = 8
    l_max: int = 2
    body_order: int = 3

    def __post_init__(self) -> None:
        if not self.cutoff > 0:
            raise ValueError(f"cutoff must be positive, got {self.cutoff}")
        if self.n_radial < 1:
            raise ValueError(f"n_radial must be at least 1, got {self.n_radial}")
        if not 0 <= self.l_max <= 3:
            raise ValueError(f"l_max must be 0 to 3, got {self.l_max}")
        if self.body_order not in (3, 4):
            raise ValueError(f"body_order must be 3 or 4, got {self.body_order}")
