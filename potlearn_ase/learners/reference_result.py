"""The outcome of one reference labelling: the labelled structure, or a recorded failure.

A :class:`LabelResult` is what :meth:`~potlearn_ase.learners.reference.Reference.label` and
:meth:`~potlearn_ase.learners.reference.Reference.label_many` return: ``ok=True`` with a
labelled copy of the structure, or ``ok=False`` with the last error, and in both cases the
attempts and wall time spent. Importable from :mod:`potlearn_ase.learners.reference`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ase import Atoms

from potlearn_ase.errors import ReferenceFailure

__all__ = ["LabelResult"]


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
