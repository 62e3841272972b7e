"""Training: least squares (linear) and the torch trainer (neural)."""

from potlearn_ase.training.least_squares import NormalEquations, Posterior, solve_posterior

__all__ = ["NormalEquations", "Posterior", "solve_posterior"]
