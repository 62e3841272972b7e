"""Collating structures into torch batches, and iterating over a data set in batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from potlearn_ase.data import AtomsBatch, BatchIterator, Dataset, collate, resolve_device
from potlearn_ase.errors import ConfigError
from tests.data.helpers import cu_cu3au_frames, labelled_molecule


def _frames():
    frames = cu_cu3au_frames(2)  # Cu3Au (4 atoms) then Cu (4 atoms), with stress
    frames.append(labelled_molecule("H2O"))  # 3 atoms, no stress, not periodic
    frames.append(bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1)))  # 2 atoms, no labels
    return frames


def test_collate_shapes_indices_and_labels():
    frames = _frames()
    b = collate(frames)
    assert isinstance(b, AtomsBatch) and b.n_structures == 4
    assert b.positions.shape == (13, 3) and b.positions.dtype == torch.float64
    assert b.numbers.dtype == torch.int64 and b.batch.dtype == torch.int64
    assert b.batch.tolist() == [0] * 4 + [1] * 4 + [2] * 3 + [3] * 2
    assert b.n_atoms.tolist() == [4, 4, 3, 2]
    assert b.cell.shape == (4, 3, 3) and b.pbc.shape == (4, 3) and b.pbc.dtype == torch.bool
    assert b.pbc[:, 0].tolist() == [True, True, False, True]
    np.testing.assert_array_equal(b.numbers.numpy(), np.concatenate([a.numbers for a in frames]))
    np.testing.assert_array_equal(b.positions[8:11].numpy(), frames[2].positions)
    np.testing.assert_array_equal(b.cell[1].numpy(), frames[1].cell.array)

    assert b.has_energy.tolist() == [True, True, True, False]
    assert b.has_forces.tolist() == [True, True, True, False]
    assert b.has_stress.tolist() == [True, True, False, False]
    assert b.energy.shape == (4,) and b.energy[3] == 0.0
    assert b.energy[2].item() == frames[2].get_potential_energy()
    assert b.forces.shape == (13, 3)
    np.testing.assert_array_equal(b.forces[4:8].numpy(), frames[1].get_forces())
    assert torch.all(b.forces[11:] == 0)
    assert b.stress.shape == (4, 6)
    np.testing.assert_array_equal(b.stress[0].numpy(), frames[0].get_stress())
    # per-structure sums through the batch index: total force of the molecule
    total = torch.zeros(4, 3, dtype=b.dtype).index_add_(0, b.batch, b.forces)
    np.testing.assert_allclose(total[2].numpy(), frames[2].get_forces().sum(0), atol=1e-12)


def test_absent_labels_are_none():
    b = collate([bulk("Cu", cubic=True), bulk("Cu")])
    assert b.energy is None and b.forces is None and b.stress is None
    assert not b.has_energy.any()
    with pytest.raises(ValueError, match="empty"):
        collate([])


def test_to_returns_a_new_batch_with_cast_floats_only():
    b = collate(_frames())
    c = b.to("cpu", dtype=torch.float32)
    assert c is not b
    for name in ("positions", "cell", "energy", "forces", "stress"):
        assert getattr(c, name).dtype == torch.float32
        assert getattr(b, name).dtype == torch.float64
    for name in ("numbers", "batch", "n_atoms"):
        assert getattr(c, name).dtype == torch.int64
    assert c.pbc.dtype == torch.bool and c.has_forces.dtype == torch.bool
    torch.testing.assert_close(c.positions.double(), b.positions, rtol=1e-6, atol=1e-6)
    assert collate(_frames(), dtype=torch.float32).positions.dtype == torch.float32
    assert c.to("cpu").positions.dtype == torch.float32


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ConfigError, match="nonsense"):
        resolve_device("nonsense")


def batch_first(batch: AtomsBatch) -> torch.Tensor:
    """Index of the first atom of each structure of a batch."""
    return torch.cumsum(batch.n_atoms, 0) - batch.n_atoms


def _orders(it: BatchIterator, epochs: int) -> list[list[float]]:
    """Frame ids (the first x coordinate, distinct per frame) visited in each epoch."""
    out = []
    for _ in range(epochs):
        out.append([x for batch in it for x in batch.positions[batch_first(batch), 0].tolist()])
    return out


@pytest.fixture(scope="module")
def data() -> Dataset:
    frames = []
    for k in range(11):
        atoms = bulk("Cu", cubic=True)
        atoms.positions[0, 0] = 0.01 * k  # identifies the frame
        frames.append(atoms)
    return Dataset(frames)


def test_iterator_covers_data_in_batches(data):
    it = BatchIterator(data, 4, shuffle=False)
    assert len(it) == 3
    sizes = [b.n_structures for b in it]
    assert sizes == [4, 4, 3]
    (order,) = _orders(it, 1)
    np.testing.assert_allclose(order, 0.01 * np.arange(11))
    assert len(BatchIterator(data, 11)) == 1 and len(BatchIterator(data, 12)) == 1
    with pytest.raises(ConfigError, match="batch_size"):
        BatchIterator(data, 0)


def test_iterator_shuffling_is_reproducible_and_new_each_epoch(data):
    a = _orders(BatchIterator(data, 3, rng=5), 3)
    b = _orders(BatchIterator(data, 3, rng=np.random.default_rng(5)), 3)
    c = _orders(BatchIterator(data, 3, rng=6), 3)
    assert a == b
    assert a != c
    assert a[0] != a[1] and a[1] != a[2]  # a new permutation each epoch
    for epoch in a + c:
        np.testing.assert_allclose(sorted(epoch), 0.01 * np.arange(11))  # every frame once
