"""Checkpoints of a learning run: the MD state and learner state as atomic JSON files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

__all__ = ["checkpoint_atoms", "json_default", "write_json_atomic"]


def checkpoint_atoms(state: dict[str, Any]) -> Atoms:
    """The MD state (positions, momenta, cell) saved in a checkpoint record."""
    a = state["atoms"]
    atoms = Atoms(numbers=a["numbers"], positions=a["positions"], cell=a["cell"], pbc=a["pbc"])
    atoms.set_momenta(np.asarray(a["momenta"]))
    return atoms


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, default=json_default)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to a checkpoint")
