"""Nonlinear ACE: a neural correction on top of each member of a linear ACE committee."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import potlearn_ase
from potlearn_ase.calculators import CommitteeCalculator
from potlearn_ase.descriptors import FullACEConfig, FullACEDescriptor
from potlearn_ase.models import LinearFitConfig, fit_linear
from potlearn_ase.models.neural import NeuralCommittee
from potlearn_ase.training.residual import RESIDUAL_DEFAULTS, train_residual
from tests.conftest import (
    energy_force_rmse,
    finite_difference_forces,
    finite_difference_stress,
)


@pytest.fixture(scope="module")
def desc():
    return FullACEDescriptor(["Cu"], FullACEConfig(cutoff=4.0, correlation_order=3,
                                                   max_degree=[6, 8, 6]))


def test_residual_starts_at_the_linear_members_and_never_ends_worse(desc, cu_train, cu_test):
    linear = fit_linear(desc, cu_train, LinearFitConfig(weights="cv", n_members=4), rng=0)
    cfg = replace(RESIDUAL_DEFAULTS, epochs=0)
    start, _ = train_residual(linear, cu_train, cu_test[:5], cfg)
    for a in cu_test[5:8]:  # zero correction: exactly the linear members
        p, q = start.predict(a), linear.predict(a)
        np.testing.assert_allclose(p["energy"], q["energy"], rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(p["forces"], q["forces"], atol=1e-9)
    cfg = replace(RESIDUAL_DEFAULTS, epochs=15)
    model, hist = train_residual(linear, cu_train, cu_test[:5], cfg)
    assert isinstance(model, NeuralCommittee) and model.residual and model.n_members == 4
    # each member kept its start unless an epoch beat it on the validation structures
    for m, best in enumerate(hist.best_epochs):
        if best >= 0:
            assert hist.member_val_loss[best][m] < hist.start_val_loss[m]


def test_residual_learns_what_the_linear_basis_leaves(cu_train, cu_test):
    """A small linear basis underfits EMT Cu; the correction, nonlinear in the same
    features, removes part of what it leaves."""
    small = FullACEDescriptor(["Cu"], FullACEConfig(cutoff=4.0, correlation_order=2,
                                                    max_degree=[4, 5]))
    linear = fit_linear(small, cu_train[:24], LinearFitConfig(weights="cv", n_members=4), rng=0)
    model, hist = train_residual(linear, cu_train[:24], cu_train[24:],
                                 replace(RESIDUAL_DEFAULTS, epochs=100, lr=3e-3, patience=30,
                                         hidden=(64, 64)))
    e_lin, f_lin = energy_force_rmse(linear, cu_test)
    e_res, f_res = energy_force_rmse(model, cu_test)
    assert f_res < 0.92 * f_lin, (f_res, f_lin)  # measured 0.87
    assert e_res < 1.2 * e_lin, (e_res, e_lin)
    # members differ, so there is a spread
    assert model.predict(cu_test[0])["forces"].std(0).mean() > 0


def test_residual_forces_stress_and_file_round_trip(desc, cu_train, rattled_cu, tmp_path):
    linear = fit_linear(desc, cu_train, LinearFitConfig(n_members=3), rng=0)
    model, _ = train_residual(linear, cu_train[:20], cu_train[20:],
                              replace(RESIDUAL_DEFAULTS, epochs=2))
    with torch.no_grad():
        for w in model.weights:
            w.normal_(0.0, 0.5)  # a clearly nonlinear correction
    atoms = rattled_cu.copy()
    pred = model.predict(atoms)
    fd = finite_difference_forces(lambda a: model.predict(a, forces=False)["energy"], atoms)
    np.testing.assert_allclose(pred["forces"], fd, atol=1e-6 * max(1, np.abs(fd).max()))
    fds = finite_difference_stress(lambda a: model.predict(a, forces=False)["energy"], atoms)
    np.testing.assert_allclose(pred["stress"], fds, atol=1e-7)
    path = tmp_path / "res.pt"
    CommitteeCalculator(model=model).save(path)
    again = potlearn_ase.load(path).model
    assert again.residual
    np.testing.assert_allclose(again.predict(atoms)["energy"], pred["energy"], rtol=1e-12)
    # a part of the committee holds its members' linear parts
    part = model.subset([2, 0])
    np.testing.assert_allclose(part.predict(atoms)["energy"], pred["energy"][[2, 0]],
                               rtol=1e-12)
    joined = NeuralCommittee.join([model.subset([1]), model.subset([0, 2])])
    np.testing.assert_allclose(joined.predict(atoms)["energy"], pred["energy"], rtol=1e-12)
