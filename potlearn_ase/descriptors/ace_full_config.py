"""Hyperparameters of the many-body atomic cluster expansion (:class:`FullACEDescriptor`).

The basis is chosen by a total-degree rule per correlation order ``nu`` (ACE1.jl, pacemaker):
a product of one-particle functions ``(n_1, l_1) ... (n_nu, l_nu)`` is kept when
``sum_t (n_t + w_l l_t) <= D_nu``. ``max_degree`` sets the ``D_nu``: one number for every
order, or one per order; by default :data:`DEFAULT_DEGREES`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from potlearn_ase.errors import ConfigError

__all__ = ["DEFAULT_DEGREES", "FullACEConfig"]

#: ``D_nu`` for ``nu = 1..5`` when ``max_degree`` is not given
DEFAULT_DEGREES: tuple[float, ...] = (12.0, 16.0, 14.0, 11.0, 9.0)


@dataclass(frozen=True)
class FullACEConfig:
    """Hyperparameters of the many-body ACE descriptor.

    Attributes
    ----------
    cutoff : float
        Cutoff radius in Angstrom (1 to 15).
    correlation_order : int
        Highest correlation order ``nu`` (body order ``nu + 1``), 1 to 6.
    max_degree : float or tuple of float, optional
        Total degree ``D_nu`` per correlation order (a single number applies to every order).
        Default: the first ``correlation_order`` entries of :data:`DEFAULT_DEGREES`.
    w_l : float
        Weight of the angular degree ``l`` in the degree rule.
    l_max : int
        Highest angular degree of any one-particle function.
    core : str
        ``"zbl"``: add a shifted ZBL core repulsion (zero beyond ``core_radius``) to the
        energy outside the linear part; ``"none"``: no core.
    core_radius : float or mapping, optional
        Outer radius of the core (Angstrom); one number, or ``{"A-B": r}`` per element pair.
        Pairs not given use 0.7 x the sum of covalent radii.
    mixing_seed : int
        Seed of the radial mixing matrices of unlike element pairs.
    """

    cutoff: float = 5.0
    correlation_order: int = 4
    max_degree: float | tuple[float, ...] | None = None
    w_l: float = 1.0
    l_max: int = 5
    core: str = "zbl"
    core_radius: float | Mapping[str, float] | None = None
    mixing_seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.max_degree, list):
            object.__setattr__(self, "max_degree", tuple(self.max_degree))
        c = self.cutoff
        if not (isinstance(c, (int, float)) and math.isfinite(c) and 1.0 <= c <= 15.0):
            raise ConfigError(f"key 'cutoff': {c!r} Angstrom is not a physical cutoff (1 to 15)")
        if not (isinstance(self.correlation_order, int) and 1 <= self.correlation_order <= 6):
            raise ConfigError(
                f"key 'correlation_order': must be an integer 1 to 6, got "
                f"{self.correlation_order!r}"
            )
        if not self.w_l > 0:
            raise ConfigError(f"key 'w_l': must be positive, got {self.w_l!r}")
        if not (isinstance(self.l_max, int) and 0 <= self.l_max <= 10):
            raise ConfigError(f"key 'l_max': must be an integer 0 to 10, got {self.l_max!r}")
        if self.core not in ("zbl", "none"):
            raise ConfigError(f"key 'core': must be 'zbl' or 'none', got {self.core!r}")
        degrees = self.degrees()
        if len(degrees) != self.correlation_order:
            raise ConfigError(
                f"key 'max_degree': {len(degrees)} degrees for correlation_order "
                f"{self.correlation_order}"
            )
        for nu, D in enumerate(degrees, start=1):
            if not D >= nu:  # every factor costs at least n = 1
                raise ConfigError(
                    f"key 'max_degree': D_{nu} = {D} leaves no basis function of correlation "
                    f"order {nu} (needs D_{nu} >= {nu})"
                )
        r = self.core_radius
        values = r.values() if isinstance(r, Mapping) else [] if r is None else [r]
        for v in values:
            if not 0.0 < float(v) < self.cutoff:
                raise ConfigError(
                    f"key 'core_radius': {v!r} Angstrom must lie between 0 and the cutoff"
                )

    def degrees(self) -> tuple[float, ...]:
        """``D_nu`` for ``nu = 1 .. correlation_order``."""
        d = self.max_degree
        if d is None:
            if self.correlation_order > len(DEFAULT_DEGREES):
                raise ConfigError(
                    f"key 'max_degree': give it for correlation_order {self.correlation_order}"
                )
            return DEFAULT_DEGREES[: self.correlation_order]
        if isinstance(d, (int, float)):
            return (float(d),) * self.correlation_order
        return tuple(float(x) for x in d)

    def todict(self) -> dict[str, Any]:
        """JSON-able keys (tuples as lists, mappings as dicts)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if isinstance(out["max_degree"], tuple):
            out["max_degree"] = list(out["max_degree"])
        if isinstance(out["core_radius"], Mapping):
            out["core_radius"] = dict(out["core_radius"])
        return out
