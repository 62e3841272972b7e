"""Shared fixtures: small EMT-labelled data sets made from reference MD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from potlearn_ase.data.generate import reference_md_frames

# tests use small structures, for which one thread is fastest (and robust to a loaded machine)
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cu_train() -> list[Atoms]:
    """30 frames of 32-atom fcc Cu, EMT MD at 300, 800 and 1200 K."""
    return (
        reference_md_frames(300, 10, rng=1)
        + reference_md_frames(800, 10, rng=2)
        + reference_md_frames(1200, 10, rng=3)
    )


@pytest.fixture(scope="session")
def cu_test() -> list[Atoms]:
    """Independent frames at 300, 700 and 1200 K."""
    return (
        reference_md_frames(300, 5, rng=11)
        + reference_md_frames(700, 5, rng=12)
        + reference_md_frames(1200, 5, rng=13)
    )


@pytest.fixture()
def rattled_cu() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
    atoms.rattle(0.1, seed=3)
    return atoms


@pytest.fixture()
def rattled_cuau() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
    atoms.numbers[[1, 3, 6]] = 79
    atoms.rattle(0.1, seed=4)
    return atoms


def finite_difference_forces(energy, atoms: Atoms, h: float = 1e-5) -> np.ndarray:
    """-dE/dx by central differences; ``energy(atoms) -> float or array``."""
    out = None
    for i in range(len(atoms)):
        for c in range(3):
            a1 = atoms.copy()
            a1.positions[i, c] += h
            a2 = atoms.copy()
            a2.positions[i, c] -= h
            d = -(np.asarray(energy(a1)) - np.asarray(energy(a2))) / (2 * h)
            if out is None:
                out = np.zeros(d.shape + (len(atoms), 3))
            out[..., i, c] = d
    assert out is not None
    return out


def finite_difference_stress(energy, atoms: Atoms, h: float = 1e-5) -> np.ndarray:
    """(1/V) dE/d(strain) in Voigt order by central differences of a symmetric strain."""
    V = atoms.get_volume()
    voigt = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    out = []
    for a, b in voigt:
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h if a != b else h
        if a != b:
            eps *= 0.5
        vals = []
        for sgn in (1, -1):
            at = atoms.copy()
            at.set_cell(atoms.cell @ (np.eye(3) + sgn * eps), scale_atoms=True)
            vals.append(np.asarray(energy(at)))
        d = (vals[0] - vals[1]) / (2 * h)
        out.append(d / V)
    return np.moveaxis(np.array(out), 0, -1)


def energy_force_rmse(model, frames) -> tuple[float, float]:
    """RMSE of the committee mean: energy per atom (eV/atom) and force components (eV/A)."""
    e = [(model.predict(a, stress=False)["energy"].mean() - a.get_potential_energy()) / len(a)
         for a in frames]
    f = np.concatenate([(model.predict(a, stress=False)["forces"].mean(0)
                         - a.get_forces()).ravel() for a in frames])
    return float(np.sqrt(np.mean(np.square(e)))), float(np.sqrt(np.mean(f**2)))
