"""Labelled structures from short reference MD, for tests, demos and benchmarks."""

from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin

__all__ = ["label", "reference_md_frames", "thermalize"]


def thermalize(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K`` (ASE's current API where present)."""
    from ase.md import velocitydistribution as vd

    if hasattr(vd, "thermalize_momenta"):
        vd.thermalize_momenta(atoms, temperature_K, rng=rng)
    else:  # ASE < 3.29
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)


def label(atoms: Atoms, calc: Calculator, *, stress: bool | None = None) -> Atoms:
    """A copy of ``atoms`` holding ``calc``'s energy, forces (and stress) as a single point."""
    a = atoms.copy()
    a.calc = calc
    results = {"energy": a.get_potential_energy(), "forces": a.get_forces()}
    if stress if stress is not None else bool(a.pbc.all()):
        results["stress"] = a.get_stress()
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, **results)
    return out


def reference_md_frames(
    temperature_K: float,
    n_frames: int,
    *,
    every: int = 10,
    atoms: Atoms | None = None,
    calc: Calculator | None = None,
    timestep_fs: float = 2.0,
    friction: float = 0.02,
    rng: np.random.Generator | int | None = 0,
) -> list[Atoms]:
    """Frames of Langevin MD driven and labelled by a reference calculator.

    Defaults: fcc Cu, 32 atoms (a 2x2x2 cubic cell), ASE's EMT, 2 fs steps, a frame every 10 steps.
    """
    rng = np.random.default_rng(rng)
    atoms = (atoms if atoms is not None else bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)).copy()
    atoms.calc = calc if calc is not None else EMT()
    thermalize(atoms, temperature_K, rng)
    dyn = Langevin(
        atoms,
        timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=friction,
        rng=rng,
        fixcm=False,
    )
    frames = []
    for _ in range(n_frames):
        dyn.run(every)
        frames.append(label(atoms, atoms.calc))
    return frames
