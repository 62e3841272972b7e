"""Training of neural committees (torch trainer, warm start, devices) and committee training
spread over MPI ranks. Linear models are fitted in closed form by :mod:`potlearn_ase.models`."""

from potlearn_ase._moved import moved_attribute

__getattr__ = moved_attribute(
    __name__,
    {name: "potlearn_ase.models.posterior" for name in ("NormalEquations", "Posterior",
                                                        "solve_posterior")},
)
