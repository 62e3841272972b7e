"""Neural committees: finite-difference forces, training to an error bound, warm start."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.models.neural import NeuralCommittee
from potlearn_ase.training.trainer import NeuralTrainConfig, train_neural
from tests.conftest import finite_difference_forces, finite_difference_stress


@pytest.mark.parametrize("periodic", [True, False])
def test_neural_forces_and_stress_match_finite_differences(rattled_cuau, periodic):
    atoms = rattled_cuau.copy()
    atoms.pbc = periodic
    desc = ACEDescriptor(["Cu", "Au"], ACEConfig(cutoff=4.0, n_radial=4, l_max=2))
    model = NeuralCommittee(desc, n_members=3, hidden=(8, 8), activation="tanh", seed=2)
    with torch.no_grad():
        for w in model.weights:
            w.mul_(3.0)  # make the networks clearly non-linear
    pred = model.predict(atoms)
    fd = finite_difference_forces(lambda a: model.predict(a, forces=False)["energy"], atoms)
    np.testing.assert_allclose(pred["forces"], fd, atol=1e-6 * max(1, np.abs(fd).max()))
    if periodic:
        fds = finite_difference_stress(lambda a: model.predict(a, forces=False)["energy"], atoms)
        np.testing.assert_allclose(pred["stress"], fds, atol=1e-7)
    else:
        assert "stress" not in pred


def test_neural_training_reaches_error_bound_and_warm_starts(cu_train, cu_test):
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.5, n_radial=6, l_max=2))
    cfg = NeuralTrainConfig(n_members=4, hidden=(16, 16), epochs=120, seed=0, device="cpu")
    model, hist = train_neural(desc, cu_train, cu_test[:3], cfg)
    assert hist.val_loss[hist.best_epoch] < 0.2 * hist.val_loss[0]
    err = [model.predict(a)["forces"].mean(0) - a.get_forces() for a in cu_test]
    rmse = float(np.sqrt(np.mean(np.square(err))))
    assert rmse < 0.1, rmse
    # members differ (seeds and bootstrap), so the committee has a spread
    assert model.predict(cu_test[0])["forces"].std(0).mean() > 1e-4
    # warm start: a short fine-tune starts where the model left off
    cfg2 = NeuralTrainConfig(n_members=4, hidden=(16, 16), epochs=5, seed=1, lr=1e-4, device="cpu")
    model2, hist2 = train_neural(desc, cu_train, cu_test[:3], cfg2, init=model)
    assert hist2.val_loss[0] < 2.0 * hist.val_loss[hist.best_epoch]


def test_a_seed_gives_the_same_network_in_either_precision():
    d64 = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.5, n_radial=4, l_max=1))
    d32 = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.5, n_radial=4, l_max=1), dtype=torch.float32)
    a = NeuralCommittee(d64, n_members=2, hidden=(8,), seed=3)
    b = NeuralCommittee(d32, n_members=2, hidden=(8,), seed=3)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().double().numpy(), rtol=1e-6,
                                   atol=1e-7)


def test_a_warm_start_never_ends_worse_than_it_started(cu_train, cu_test):
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.5, n_radial=4, l_max=1))
    cfg = NeuralTrainConfig(n_members=2, hidden=(8,), epochs=40, seed=0, device="cpu")
    model, _ = train_neural(desc, cu_train[:6], cu_test[:3], cfg)
    start = [float(v) for v in _val_loss(model, desc, cu_train[:6], cu_test[:3])]
    wild = NeuralTrainConfig(n_members=2, hidden=(8,), epochs=3, seed=1, lr=0.5, device="cpu")
    tuned, hist = train_neural(desc, cu_train[:6], cu_test[:3], wild, init=model)
    end = [float(v) for v in _val_loss(tuned, desc, cu_train[:6], cu_test[:3])]
    for m, (s, e) in enumerate(zip(start, end)):
        assert e <= s * (1 + 1e-6), (m, s, e, hist.best_epochs)


def _val_loss(model, desc, train, val):
    """Each member's validation loss, measured by a zero-epoch warm start."""
    cfg = NeuralTrainConfig(n_members=model.n_members, hidden=(8,), epochs=0, device="cpu")
    _, hist = train_neural(desc, train, val, cfg, init=model)
    return hist.start_val_loss
