"""The outcome of one reference labelling (the labelled structure, or a recorded failure), and
the optional log of every reference call.

A :class:`LabelResult` is what :meth:`~potlearn_ase.learners.reference.Reference.label` and
:meth:`~potlearn_ase.learners.reference.Reference.label_many` return: ``ok=True`` with a
labelled copy of the structure, or ``ok=False`` with the last error, and in both cases the
attempts and wall time spent. Importable from :mod:`potlearn_ase.learners.reference`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ase import Atoms

from potlearn_ase.errors import ReferenceFailure

__all__ = ["CALL_LOG_ENV", "LabelResult", "log_reference_call"]


@dataclass
class LabelResult:
    """The outcome of one reference labelling.

    Attributes
    ----------
    atoms : ase.Atoms or None
        A copy of the input structure with a ``SinglePointCalculator`` holding ``energy``
        (eV), ``forces`` (eV/Angstrom) and, when computed, ``stress`` (eV/Angstrom^3, Voigt);
        None on failure.
    ok : bool
        Whether the labelling succeeded.
    error : str or None
        The last attempt's error (type and message) on failure.
    wall_time : float
        Seconds spent, over every attempt.
    attempts : int
        Calculations tried (1 + retries used).
    """

    atoms: Atoms | None
    ok: bool
    error: str | None = None
    wall_time: float = 0.0
    attempts: int = 0

    def unwrap(self) -> Atoms:
        """The labelled structure, or raise :class:`~potlearn_ase.errors.ReferenceFailure`."""
        if not self.ok or self.atoms is None:
            raise ReferenceFailure(
                f"reference calculation failed after {self.attempts} attempt(s): {self.error}"
            )
        return self.atoms


CALL_LOG_ENV = "POTLEARN_REFERENCE_LOG"
"""Environment variable: a file to which every :meth:`Reference.label` call appends a JSON
line when it starts and when it ends (``event``, structure ``hash``, ``ok``, ``pid``).
Off unless set; ``benchmarks/sigkill.py`` counts reference calls across kills with it."""


def log_reference_call(event: str, atoms: Atoms, ok: bool | None = None) -> None:
    """Append one line to the file named by :data:`CALL_LOG_ENV`, when it is set."""
    path = os.environ.get(CALL_LOG_ENV)
    if not path:
        return
    from potlearn_ase.data.records import structure_hash

    line = json.dumps(
        {"event": event, "hash": structure_hash(atoms), "ok": ok, "pid": os.getpid()}
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())  # one write: lines of processes never interleave
    finally:
        os.close(fd)
