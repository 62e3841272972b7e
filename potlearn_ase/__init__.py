"""potlearn-ase: active learning of machine-learned interatomic potentials for ASE."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
