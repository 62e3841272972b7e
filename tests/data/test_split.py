"""Random splits and per-element reference energies."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from potlearn_ase.data import Dataset, fit_reference_energies, train_val_test_split
from potlearn_ase.errors import ConfigError, MissingLabelError, UnknownElementError


def _numbered(n: int) -> Dataset:
    frames = []
    for k in range(n):
        atoms = bulk("Cu", cubic=True)
        atoms.info["id"] = k
        frames.append(atoms)
    return Dataset(frames)


def _ids(d: Dataset) -> list[int]:
    return [a.info["id"] for a in d]


@pytest.mark.parametrize("n", [1, 7, 10, 53])
def test_split_is_disjoint_covering_and_sized(n):
    data = _numbered(n)
    train, val, test = train_val_test_split(data, (0.6, 0.25, 0.15), rng=3)
    ids = _ids(train) + _ids(val) + _ids(test)
    assert sorted(ids) == list(range(n))  # covering and disjoint
    exact = np.array([0.6, 0.25, 0.15]) * n
    sizes = np.array([len(train), len(val), len(test)])
    assert np.all(np.abs(sizes - exact) < 1)


def test_split_reproducible_for_equal_seeds_and_generators():
    data = _numbered(40)
    a = [_ids(d) for d in train_val_test_split(data, rng=7)]
    b = [_ids(d) for d in train_val_test_split(data, rng=np.random.default_rng(7))]
    c = [_ids(d) for d in train_val_test_split(data, rng=8)]
    assert a == b
    assert a != c
    assert [len(x) for x in a] == [32, 4, 4]
    assert _ids(data) == list(range(40))  # the input is untouched


def test_split_accepts_lists_and_rejects_bad_fractions():
    frames = list(_numbered(5))
    train, val, test = train_val_test_split(frames, (1.0, 0.0, 0.0), rng=0)
    assert len(train) == 5 and len(val) == len(test) == 0
    for bad in [(0.5, 0.5), (0.8, 0.3, -0.1), (0.5, 0.2, 0.2)]:
        with pytest.raises(ConfigError, match="fractions"):
            train_val_test_split(frames, bad, rng=0)


def _synthetic(mu: dict[str, float], rng: np.random.Generator, n: int = 12) -> list[Atoms]:
    """Random Cu/Au compositions with E = sum_e n_e mu_e exactly."""
    frames = []
    for _ in range(n):
        natoms = int(rng.integers(2, 9))
        symbols = list(rng.choice(["Cu", "Au"], natoms))
        atoms = Atoms(symbols, positions=rng.uniform(0, 8, (natoms, 3)), cell=[8, 8, 8], pbc=True)
        e = sum(mu[s] for s in symbols)
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=np.zeros((natoms, 3)))
        frames.append(atoms)
    return frames


def test_reference_energies_recover_known_values_exactly():
    mu = {"Cu": -3.51234567, "Au": -2.9876543}
    frames = _synthetic(mu, np.random.default_rng(0))
    unlabelled = Atoms("Cu", cell=[3, 3, 3], pbc=True)  # skipped: no energy
    refs = fit_reference_energies(Dataset([*frames, unlabelled]))
    assert list(refs) == ["Au", "Cu"]
    for e in mu:
        assert refs[e] == pytest.approx(mu[e], rel=1e-12, abs=1e-12)


def test_reference_energies_with_explicit_elements_and_errors():
    mu = {"Cu": -3.5, "Au": -3.0}
    frames = _synthetic(mu, np.random.default_rng(1))
    refs = fit_reference_energies(frames, elements=["Cu", "Au", "Ag"])
    assert refs["Ag"] == 0.0  # absent element
    assert refs["Cu"] == pytest.approx(-3.5, abs=1e-12)
    cu = []
    for k in (1, 2):
        atoms = bulk("Cu", cubic=True)
        atoms.calc = SinglePointCalculator(atoms, energy=-3.5 * 4 + k)
        cu.append(atoms)
    mixed = [a for a in frames if "Au" in a.get_chemical_symbols()][:1]
    data = [Atoms("Au", cell=[3, 3, 3], pbc=True), *cu, *mixed]  # frame 0 has no energy
    with pytest.raises(UnknownElementError, match="frame 3: unknown element 'Au'") as info:
        fit_reference_energies(data, elements=["Cu"])
    assert info.value.element == "Au"
    with pytest.raises(MissingLabelError, match="no frame carries an energy"):
        fit_reference_energies([Atoms("Cu"), Atoms("Au")])


def test_group_split_keeps_each_trajectory_in_one_subset():
    frames = []
    for t in range(10):
        for k in range(5):
            a = bulk("Cu", "fcc", a=3.6 + 0.01 * t)
            a.info["trajectory"] = f"md-{t}"
            a.info["frame"] = k
            frames.append(a)
    train, val, test = train_val_test_split(frames, (0.6, 0.2, 0.2), rng=0, groups="trajectory")
    subsets = [{a.info["trajectory"] for a in d} for d in (train, val, test)]
    assert not (subsets[0] & subsets[1] or subsets[0] & subsets[2] or subsets[1] & subsets[2])
    assert (len(train), len(val), len(test)) == (30, 10, 10)
    again = train_val_test_split(frames, (0.6, 0.2, 0.2), rng=0, groups="trajectory")
    assert [id(a) for a in again[1]] == [id(a) for a in val]
    labels = [a.info["trajectory"] for a in frames]
    by_list = train_val_test_split(frames, (0.6, 0.2, 0.2), rng=0, groups=labels)
    assert [id(a) for a in by_list[0]] == [id(a) for a in train]
    with pytest.raises(ConfigError, match="frame 0 has no info key 'run'"):
        train_val_test_split(frames, rng=0, groups="run")
    with pytest.raises(ConfigError, match="3 labels for 50 frames"):
        train_val_test_split(frames, rng=0, groups=[1, 2, 3])
