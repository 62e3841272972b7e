"""ASE calculators of committee potentials."""

from potlearn_ase.calculators.committee import CommitteeCalculator, committee_results, load

__all__ = ["CommitteeCalculator", "committee_results", "load"]
