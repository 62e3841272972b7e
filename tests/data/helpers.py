"""Small EMT-labelled structures shared by the data-layer tests."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator


def emt_label(atoms: Atoms, *, stress: bool = True) -> Atoms:
    """A copy of ``atoms`` with EMT energy, forces (and stress) in a SinglePointCalculator."""
    work = atoms.copy()
    work.calc = EMT()
    results = {"energy": work.get_potential_energy(), "forces": work.get_forces()}
    if stress:
        results["stress"] = work.get_stress()
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, **results)
    return out


def cu_cu3au_frames(n: int = 6, seed: int = 0) -> list[Atoms]:
    """Rattled bulk Cu and Cu3Au cells with labels and a little ``info``."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) if k % 2 else _cu3au()
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        labelled = emt_label(atoms)
        labelled.info["temperature_K"] = 300.0 + 10 * k
        labelled.info["origin"] = f"md-{k}"
        frames.append(labelled)
    return frames


def _cu3au() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.75, cubic=True)
    atoms.numbers[0] = 79
    return atoms


def labelled_molecule(name: str = "H2O") -> Atoms:
    """A non-periodic molecule labelled without stress."""
    atoms = molecule(name)
    atoms.center(vacuum=3.0)
    return emt_label(atoms, stress=False)
