"""Labelled structures from reference MD in equilibrium, for tests, demos and benchmarks.

:func:`reference_md_frames` draws velocities at the target temperature, lets Langevin MD
equilibrate for five thermostat times (``5 / friction``) and only then takes frames, so
frames labelled ``T`` are sampled at ``T``. Starting from a perfect lattice, half of the
kinetic energy first flows into the potential energy and the thermostat takes several
``1 / friction`` to bring it back: frames taken before that are colder than their label.
Each frame records its label ``info["temperature_K"]`` and its instantaneous kinetic
temperature ``info["kinetic_temperature_K"]``.
"""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin

__all__ = [
    "DEFAULT_FRICTION",
    "equilibration_steps",
    "label",
    "reference_md_frames",
    "thermalize",
]

#: Langevin friction of :func:`reference_md_frames`, in inverse ASE time units (0.02 / fs:
#: a thermostat time of 50 fs).
DEFAULT_FRICTION = 0.02 / units.fs


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


def equilibration_steps(
    timestep_fs: float, friction: float = DEFAULT_FRICTION, thermostat_times: float = 5.0
) -> int:
    """Langevin steps spanning ``thermostat_times`` thermostat times ``1 / friction``.

    Parameters
    ----------
    timestep_fs : float
        The MD time step in fs.
    friction : float
        The Langevin friction in inverse ASE time units (as ``ase.md.langevin.Langevin``).
    thermostat_times : float
        How many ``1 / friction`` to span.
    """
    if not friction > 0 or not timestep_fs > 0:
        raise ValueError(f"friction and timestep must be positive, got {friction}, {timestep_fs}")
    return int(math.ceil(thermostat_times / (friction * timestep_fs * units.fs)))


def reference_md_frames(
    temperature_K: float,
    n_frames: int,
    *,
    every: int = 10,
    atoms: Atoms | None = None,
    calc: Calculator | None = None,
    timestep_fs: float = 2.0,
    friction: float = DEFAULT_FRICTION,
    equilibrate: int | None = None,
    rng: np.random.Generator | int | None = 0,
) -> list[Atoms]:
    """Frames of equilibrated Langevin MD driven and labelled by a reference calculator.

    Defaults: fcc Cu, 32 atoms (a 2x2x2 cubic cell), ASE's EMT, 2 fs steps, a frame every 10
    steps after :func:`equilibration_steps` (five thermostat times).

    Parameters
    ----------
    temperature_K : float
        Target temperature: of the initial velocities and the thermostat.
    n_frames, every : int
        Number of frames, and MD steps between frames.
    atoms : ase.Atoms, optional
        The starting structure (copied).
    calc : ase Calculator, optional
        The reference driving the MD and labelling the frames (default: EMT).
    timestep_fs, friction : float
        MD time step (fs) and Langevin friction (inverse ASE time units).
    equilibrate : int, optional
        Steps before the first frame; default five thermostat times.
    rng : Generator or int, optional
        Random numbers for the velocities and the thermostat.

    Returns
    -------
    list of ase.Atoms
        Labelled frames; ``info`` holds ``temperature_K`` (the target) and
        ``kinetic_temperature_K`` (the frame's own).
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
    n_eq = equilibration_steps(timestep_fs, friction) if equilibrate is None else int(equilibrate)
    if n_eq > 0:
        dyn.run(n_eq)
    frames = []
    for _ in range(n_frames):
        dyn.run(every)
        frame = label(atoms, atoms.calc)
        frame.info["temperature_K"] = float(temperature_K)
        frame.info["kinetic_temperature_K"] = float(atoms.get_temperature())
        frames.append(frame)
    return frames
