"""Energy and force normalisation: fitted statistics, exact inverses, serialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from potlearn_ase.data import Dataset, Normaliser
from potlearn_ase.errors import ModelFormatError, UnknownElementError
from tests.data.helpers import cu_cu3au_frames

MU = {"Cu": -3.25, "Au": -2.75}


def _synthetic(n: int = 20, seed: int = 0) -> tuple[list[Atoms], np.ndarray]:
    """E = sum mu + N * r_k with known per-atom residuals r_k; forces of known RMS."""
    rng = np.random.default_rng(seed)
    frames, residual = [], []
    for _ in range(n):
        natoms = int(rng.integers(2, 7))
        symbols = list(rng.choice(["Cu", "Au"], natoms))
        atoms = Atoms(symbols, positions=rng.uniform(0, 6, (natoms, 3)), cell=[6, 6, 6], pbc=True)
        r = rng.normal(scale=0.05)
        residual.append(r)
        e = sum(MU[s] for s in symbols) + natoms * r
        atoms.calc = SinglePointCalculator(
            atoms, energy=e, forces=rng.normal(scale=0.7, size=(natoms, 3))
        )
        frames.append(atoms)
    return frames, np.array(residual)


def test_fit_recovers_scales_from_the_data():
    frames, residual = _synthetic()
    norm = Normaliser.fit(Dataset(frames))
    assert norm.elements == ("Au", "Cu")
    # Residuals are not exactly orthogonal to the compositions, so refit them: the scale is
    # the spread of the per-atom residual after the least-squares references.
    A = np.array([[a.get_chemical_symbols().count(e) for e in norm.elements] for a in frames])
    E = np.array([a.get_potential_energy() for a in frames])
    mu = np.array([norm.reference_energies[e] for e in norm.elements])
    np.testing.assert_allclose(mu, np.linalg.lstsq(A, E, rcond=None)[0], rtol=1e-12)
    assert norm.energy_scale == pytest.approx(np.std((E - A @ mu) / A.sum(1)), rel=1e-12)
    assert 0.5 * residual.std() < norm.energy_scale < 2 * residual.std()
    f = np.concatenate([a.get_forces().ravel() for a in frames])
    assert norm.force_scale == pytest.approx(np.sqrt(np.mean(f**2)), rel=1e-12)


def test_normalised_labels_are_centred_and_unit_scaled():
    frames = cu_cu3au_frames(10, seed=2)  # all of 4 atoms: least-squares residuals sum to 0
    norm = Normaliser.fit(frames)
    per_atom = np.array(
        [norm.normalise_energy(a.get_potential_energy(), a) / len(a) for a in frames]
    )
    assert abs(per_atom.mean()) < 1e-8 * max(1.0, np.abs(per_atom).max())
    assert per_atom.std() == pytest.approx(1.0, rel=1e-10)
    f = np.concatenate([norm.normalise_forces(a.get_forces()) for a in frames])
    assert np.sqrt(np.mean(f**2)) == pytest.approx(1.0, rel=1e-12)


def test_inverses_round_trip_to_1e_12_for_every_input_kind():
    frames, _ = _synthetic(8, seed=3)
    norm = Normaliser.fit(frames)
    E = np.array([a.get_potential_energy() for a in frames])
    counts = np.array([[a.get_chemical_symbols().count(e) for e in norm.elements] for a in frames])
    for comp in (counts, frames, [a.numbers for a in frames]):
        e = norm.normalise_energy(E, comp)
        back = norm.denormalise_energy(e, comp)
        np.testing.assert_allclose(back, E, rtol=1e-12, atol=0)
    e0 = norm.normalise_energy(float(E[0]), frames[0].numbers)
    assert isinstance(e0, float)
    assert norm.denormalise_energy(e0, frames[0]) == pytest.approx(E[0], rel=1e-12)
    expected0 = E[0] - sum(norm.reference_energies[s] for s in frames[0].get_chemical_symbols())
    assert e0 == pytest.approx(expected0 / norm.energy_scale, rel=1e-12)

    F = frames[1].get_forces()
    np.testing.assert_allclose(norm.denormalise_forces(norm.normalise_forces(F)), F, rtol=1e-12)

    Et = torch.tensor(E, dtype=torch.float64)
    ct = torch.tensor(counts, dtype=torch.int64)
    et = norm.normalise_energy(Et, ct)
    assert isinstance(et, torch.Tensor) and et.dtype == torch.float64
    np.testing.assert_allclose(et.numpy(), norm.normalise_energy(E, counts), rtol=1e-12)
    torch.testing.assert_close(norm.denormalise_energy(et, ct), Et, rtol=1e-12, atol=0)


def test_dict_round_trip_and_format_errors():
    norm = Normaliser.fit(_synthetic()[0])
    d = json.loads(json.dumps(norm.to_dict()))
    assert Normaliser.from_dict(d) == norm
    with pytest.raises(ModelFormatError, match="version 99"):
        Normaliser.from_dict({**d, "version": 99})
    with pytest.raises(ModelFormatError, match="force_scale"):
        Normaliser.from_dict({k: v for k, v in d.items() if k != "force_scale"})


def test_unknown_element_and_wrong_count_columns():
    norm = Normaliser(("Cu",), {"Cu": -3.0}, energy_scale=0.1, force_scale=0.5)
    with pytest.raises(UnknownElementError, match="'Au'"):
        norm.normalise_energy(-5.0, Atoms("CuAu"))
    with pytest.raises(ValueError, match="2 columns"):
        norm.normalise_energy(np.zeros(3), np.ones((3, 2)))
    with pytest.raises(ValueError, match="energy_scale"):
        Normaliser(("Cu",), {"Cu": -3.0}, energy_scale=0.0)
    assert norm.normalise_energy(-3.0 * 4 + 0.2, Atoms("Cu4")) == pytest.approx(2.0)
