"""The Dataset sequence: indexing, label summaries, checks on entry, copies."""

from __future__ import annotations

import collections.abc

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from potlearn_ase.data import Dataset, get_labels
from potlearn_ase.errors import InvalidStructureError
from tests.data.helpers import cu_cu3au_frames, labelled_molecule


@pytest.fixture()
def data() -> Dataset:
    frames = cu_cu3au_frames(4) + [labelled_molecule()]
    unlabelled = bulk("Cu", cubic=True)
    energy_only = bulk("Cu", cubic=True)
    energy_only.calc = SinglePointCalculator(energy_only, energy=-1.5)
    return Dataset(frames + [unlabelled, energy_only], source="mem")


def test_sequence_protocol_and_indexing(data):
    assert isinstance(data, collections.abc.Sequence)
    assert len(data) == 7
    assert data[0] is data._frames[0] and data[-1] is data._frames[6]
    assert data[np.int64(2)] is data._frames[2]
    sub = data[1:4]
    assert isinstance(sub, Dataset) and len(sub) == 3 and sub[0] is data[1]
    picked = data[np.array([4, 0])]
    assert [a is b for a, b in zip(picked, (data[4], data[0]), strict=True)] == [True, True]
    mask = np.zeros(7, dtype=bool)
    mask[[2, 5]] = True
    assert [a for a in data[mask]] == [data[2], data[5]]
    assert len(data[[]]) == 0
    assert data[[1, 2]].source == "mem"
    with pytest.raises(IndexError):
        data[np.ones(3, dtype=bool)]
    with pytest.raises(TypeError):
        data[np.array([0.5])]


def test_label_summaries(data):
    assert data.elements == ["Au", "Cu", "H", "O"]
    np.testing.assert_array_equal(data.n_atoms, [4, 4, 4, 4, 3, 4, 4])
    e = data.energies
    assert e.shape == (7,) and np.isnan(e[5]) and e[6] == -1.5
    assert e[0] == get_labels(data[0])["energy"]
    np.testing.assert_array_equal(data.has_forces, [1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(data.has_stress, [1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(data.has_energy, [1, 1, 1, 1, 1, 0, 1])
    forces = data.forces
    assert [f.shape for f in forces] == [(n, 3) for n in data.n_atoms]
    assert np.isnan(forces[5]).all()
    np.testing.assert_array_equal(forces[1], data[1].calc.results["forces"])
    s = data.stresses
    assert s.shape == (7, 6) and np.isnan(s[4]).all() and np.isfinite(s[:4]).all()


def test_every_frame_is_checked_on_entry(data):
    bad = bulk("Cu", cubic=True)
    bad.positions[0] = np.inf
    with pytest.raises(InvalidStructureError, match="mem, frame 7"):
        data.append(bad)
    with pytest.raises(InvalidStructureError, match="frame 1"):
        Dataset([bulk("Cu"), bad])
    assert len(data) == 7
    data.extend(cu_cu3au_frames(2))
    assert len(data) == 9


def test_copy_is_independent_and_keeps_labels(data):
    copy = data.copy()
    assert len(copy) == len(data)
    copy[0].positions[0] += 1.0
    copy[0].calc.results["forces"][0] = 123.0
    copy[0].info["origin"] = "changed"
    assert not np.any(data[0].calc.results["forces"] == 123.0)
    assert data[0].info["origin"] == "md-0"
    np.testing.assert_array_equal(copy.energies, data.energies)
    np.testing.assert_array_equal(copy.has_stress, data.has_stress)
    np.testing.assert_array_equal(copy[1].positions, data[1].positions)
