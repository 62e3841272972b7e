"""Old import paths of modules that moved, kept working for one release with a warning.

``import potlearn_ase.lammpsutil`` (or any ``from`` import of it) still works: a finder placed
first on :data:`sys.meta_path` hands back the module under its new name, with a
:class:`DeprecationWarning` that names the new path. Names that moved between packages are
served the same way by :func:`moved_attribute` (a package's ``__getattr__``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["MOVED_MODULES", "RENAMED_CONFIGS", "install", "moved_attribute"]

#: old module path -> new module path (release 0.2 layout: one folder per concept)
MOVED_MODULES: dict[str, str] = {
    "potlearn_ase.lammpsutil": "potlearn_ase.engines.lammps.library",
    "potlearn_ase.calculators.lammps_driver": "potlearn_ase.engines.lammps.driver",
    "potlearn_ase.calculators.lammps_native": "potlearn_ase.engines.lammps.native",
    "potlearn_ase.calculators.lammps_cli": "potlearn_ase.cli.lammps",
    "potlearn_ase.calculators.ipi": "potlearn_ase.engines.ipi.client",
    "potlearn_ase.calculators.ipi_protocol": "potlearn_ase.engines.ipi.protocol",
    "potlearn_ase.calculators.ipi_cli": "potlearn_ase.cli.ipi",
    "potlearn_ase.models.snap_export": "potlearn_ase.engines.lammps.snap_export",
    "potlearn_ase.learners.engines": "potlearn_ase.engines",
    "potlearn_ase.learners.engines.lammps": "potlearn_ase.engines.lammps.learning",
    "potlearn_ase.learners.engines.ipi": "potlearn_ase.engines.ipi.learning",
    "potlearn_ase.learners.engines.config": "potlearn_ase.engines.learning",
    "potlearn_ase.learners.pool_cli": "potlearn_ase.learners.report",
    "potlearn_ase.training.least_squares": "potlearn_ase.models.posterior",
    "potlearn_ase.training.cli": "potlearn_ase.cli.train",
    "potlearn_ase.selection.cli": "potlearn_ase.selection.registry",
    "potlearn_ase.analysis.cli": "potlearn_ase.cli.analysis",
}


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} has moved to {new}; the old name will be removed in the next release",
        DeprecationWarning,
        stacklevel=3,
    )


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and loads it as the module at its new path."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> ModuleType:
        new = MOVED_MODULES[spec.name]
        _warn(spec.name, new)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """The module at the new path is already executed."""


def install() -> None:
    """Put the finder first on :data:`sys.meta_path` (once)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())


def moved_attribute(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving ``names`` with a warning.

    ``names`` maps an old attribute to its new home: ``"module.path"`` (same name there) or
    ``"module.path:NewName"`` (renamed).
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, new = names[name].partition(":")
        new = new or name
        _warn(f"{package}.{name}", f"{module}.{new}")
        return getattr(importlib.import_module(module), new)

    return __getattr__


#: configuration classes renamed to ``*Config`` in release 0.2: old name -> "module:new name"
RENAMED_CONFIGS: dict[str, str] = {
    "OTFSettings": "potlearn_ase.learners.otf:OTFConfig",
    "PoolSettings": "potlearn_ase.learners.pool:PoolConfig",
    "StructureSpec": "potlearn_ase.learners.run:StructureConfig",
    "ModelSpec": "potlearn_ase.learners.run:ModelConfig",
    "MDSpec": "potlearn_ase.learners.run:MDConfig",
    "InitialSpec": "potlearn_ase.learners.run:InitialConfig",
    "ValidationSpec": "potlearn_ase.learners.run:ValidationConfig",
}
