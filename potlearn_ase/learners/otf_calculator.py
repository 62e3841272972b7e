"""The ASE calculator face of an on-the-fly learner: one force call is one MD step.

``atoms.calc = learner.calculator`` (an :class:`OTFCalculator`) lets any ASE dynamics drive
:meth:`OnTheFlyLearner.step <potlearn_ase.learners.otf.OnTheFlyLearner.step>`; the results
are the committee's, or the reference's on a labelled step. Importable from
:mod:`potlearn_ase.learners.otf`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from potlearn_ase.calculators.committee import CommitteeCalculator

if TYPE_CHECKING:
    from potlearn_ase.learners.otf import OnTheFlyLearner

__all__ = ["OTFCalculator"]


class OTFCalculator(Calculator):
    """ASE calculator face of an :class:`OnTheFlyLearner` (one call = one MD step).

    Results are the committee's (mean and calibrated spread), except on a labelled step, where
    ``energy``, ``forces`` and ``stress`` are the reference's and ``labelled`` is True.
    """

    implemented_properties = CommitteeCalculator.implemented_properties

    def __init__(self, learner: OnTheFlyLearner, **kwargs: Any):
        super().__init__(**kwargs)
        self.learner = learner

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | tuple[str, ...] = ("energy",),
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        temperature = None
        if self.atoms.get_momenta().any():
            temperature = float(self.atoms.get_temperature())
        results, _ = self.learner.step(self.atoms, temperature=temperature)
        self.results = results
