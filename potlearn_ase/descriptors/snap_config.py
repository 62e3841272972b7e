"""Hyperparameters of the SNAP bispectrum, with the names of LAMMPS's ``compute sna/atom``.

:class:`SNAPConfig` configures :class:`~potlearn_ase.descriptors.snap.SNAPDescriptor` and is
importable from :mod:`potlearn_ase.descriptors.snap` too; its fields are the keys
:meth:`~potlearn_ase.descriptors.snap.SNAPDescriptor.todict` writes next to the elements.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from potlearn_ase.errors import ConfigError

__all__ = ["SNAPConfig"]

_DEFAULT_RADIUS = 0.5
_DEFAULT_WEIGHT = 1.0


@dataclass(frozen=True)
class SNAPConfig:
    """Hyperparameters of the SNAP bispectrum, with the names of LAMMPS's ``compute sna/atom``.

    Attributes
    ----------
    twojmax : int
        Band limit ``2 j_max`` of the bispectrum (6 gives 30 components, 8 gives 55).
    rcutfac : float
        Scale of the cutoff: atoms ``i`` and ``j`` interact below ``rcutfac (R_i + R_j)``.
    rfac0 : float
        Distance-to-angle conversion factor (between 0 and 1).
    rmin0 : float
        Distance-to-angle offset (Angstrom).
    radii : dict
        Element -> radius ``R`` (Angstrom); elements not listed get 0.5.
    weights : dict
        Element -> neighbour weight ``w``; elements not listed get 1.0.
    bzeroflag : int
        1 subtracts the bispectrum of an isolated atom, 0 does not.
    switchflag : int
        1 applies the smooth cosine switching function at the cutoff.
    quadratic : bool
        Append the quadratic products of the bispectrum components.
    """

    twojmax: int = 6
    rcutfac: float = 4.7
    rfac0: float = 0.99363
    rmin0: float = 0.0
    radii: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    bzeroflag: int = 1
    switchflag: int = 1
    quadratic: bool = False

    def __post_init__(self) -> None:
        if int(self.twojmax) != self.twojmax or self.twojmax < 0:
            raise ConfigError(f"snap.twojmax must be a non-negative integer, got {self.twojmax}")
        if not self.rcutfac > 0:
            raise ConfigError(f"snap.rcutfac must be positive, got {self.rcutfac}")
        if not 0 < self.rfac0 <= 1:
            raise ConfigError(f"snap.rfac0 must lie in (0, 1], got {self.rfac0}")
        if not self.rmin0 >= 0:
            raise ConfigError(f"snap.rmin0 must be non-negative, got {self.rmin0}")
        for key in ("bzeroflag", "switchflag"):
            if getattr(self, key) not in (0, 1):
                raise ConfigError(f"snap.{key} must be 0 or 1, got {getattr(self, key)!r}")
        for name in ("radii", "weights"):
            table = getattr(self, name)
            if not isinstance(table, Mapping):
                raise ConfigError(f"snap.{name} must map elements to numbers, got {table!r}")
            for el, v in table.items():
                if not float(v) > 0:
                    raise ConfigError(f"snap.{name}[{el!r}] must be positive, got {v}")
            object.__setattr__(self, name, {str(k): float(v) for k, v in table.items()})

    def radius(self, element: str) -> float:
        """The radius ``R`` of an element (Angstrom)."""
        return self.radii.get(element, _DEFAULT_RADIUS)

    def weight(self, element: str) -> float:
        """The neighbour weight ``w`` of an element."""
        return self.weights.get(element, _DEFAULT_WEIGHT)
