"""Typed errors of potlearn-ase.

Every message names the file, line, frame, element or key at fault, so that a user can
find the problem without reading a traceback.
"""

from __future__ import annotations


class PotlearnError(Exception):
    """Base class of every error raised by potlearn-ase."""


class DataFormatError(PotlearnError, ValueError):
    """A data file or an in-memory structure is malformed (names the file and frame)."""


class UnknownElementError(PotlearnError, KeyError):
    """A structure holds an element the model or descriptor was not built for."""

    def __init__(
        self,
        element: str,
        known: list[str] | tuple[str, ...] | None = None,
        *,
        where: str | None = None,
    ):
        self.element = element
        self.known = list(known) if known is not None else None
        msg = f"{where + ': ' if where else ''}unknown element {element!r}"
        if self.known is not None:
            msg += f"; the model knows {', '.join(self.known) or 'no elements'}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the whole message otherwise
        return self.args[0]


class MissingLabelError(PotlearnError, ValueError):
    """A structure lacks a label (energy, forces or stress) that the fit needs."""


class InvalidStructureError(PotlearnError, ValueError):
    """Non-finite positions, a singular cell or another structure no descriptor can take."""


class ConfigError(PotlearnError, ValueError):
    """A configuration file or mapping has an unknown key or a value of the wrong type."""


class ModelFormatError(PotlearnError, ValueError):
    """A saved model has an unknown format version or misses a key."""


class StoreError(PotlearnError, RuntimeError):
    """The label store cannot be opened or written."""


class CheckpointError(PotlearnError, RuntimeError):
    """A checkpoint file of a run (``state.json``, ``history.jsonl``) cannot be read."""


class ReferenceFailure(PotlearnError, RuntimeError):
    """A reference calculation failed after its retries (recorded, never raised into MD)."""


class EngineError(PotlearnError, RuntimeError):
    """An MD engine (LAMMPS, i-PI) could not be driven as asked."""
