"""Calibration without a validation set: closed-form folds of a linear model's training data."""

from __future__ import annotations

import numpy as np
import pytest

from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.models import (
    LinearFitConfig,
    cross_validated_calibration,
    fit_calibration,
    fit_linear,
    force_errors_and_spread,
)
from potlearn_ase.models.posterior import NormalEquations


@pytest.fixture(scope="module")
def fitted(cu_train):
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=6, l_max=2))
    return fit_linear(desc, cu_train, LinearFitConfig(n_members=8), rng=0)


def test_removing_rows_equals_never_adding_them():
    rng = np.random.default_rng(0)
    A, y, w = rng.normal(size=(40, 5)), rng.normal(size=40), rng.uniform(1, 2, 40)
    full, part = NormalEquations(5), NormalEquations(5)
    full.add(A, y, w)
    part.add(A[10:], y[10:], w[10:])
    full.remove(A[:10], y[:10], w[:10])
    np.testing.assert_allclose(full.AtA, part.AtA, atol=1e-10)
    np.testing.assert_allclose(full.Aty, part.Aty, atol=1e-10)
    assert full.yty == pytest.approx(part.yty) and full.n_rows == part.n_rows
    with pytest.raises(ValueError, match="cannot remove"):
        part.remove(A, y, w)


def test_fold_model_equals_a_fit_without_the_fold(fitted, cu_train):
    """Taking structures out of the normal equations is the fit that never saw them."""
    from potlearn_ase.models.linear import design_rows

    held = fitted.normal_equations.copy()
    for atoms in cu_train[:5]:
        held.remove(*design_rows(fitted.descriptor, [atoms], fitted.config))
    direct = fit_linear(fitted.descriptor, cu_train[5:], fitted.config, rng=0)
    post = fitted.solve_posterior(held)
    # equal up to the evidence iteration's stopping tolerance (1e-3 in log lambda)
    np.testing.assert_allclose(post.mean, direct.posterior.mean, rtol=1e-4, atol=1e-8)
    assert post.lam == pytest.approx(direct.posterior.lam, rel=2e-3)


def test_cross_validated_alpha_covers_independent_errors(fitted, cu_train, cu_test):
    alpha_cv = cross_validated_calibration(fitted, cu_train)
    alpha_val = fit_calibration(fitted, cu_test)
    # the training data's own folds predict what an independent validation set finds
    assert 0.6 < alpha_cv / alpha_val < 1.6, (alpha_cv, alpha_val)
    err, spread = force_errors_and_spread(fitted, cu_test)
    coverage = float(np.mean(np.abs(err) <= alpha_cv * spread))
    assert 0.55 < coverage < 0.82, coverage
    # and the raw posterior spread alone would not: it is overconfident here
    assert np.mean(np.abs(err) <= spread) < coverage


def test_wrong_frames_and_models_are_refused(fitted, cu_train):
    with pytest.raises(ValueError, match="fitted to"):
        cross_validated_calibration(fitted, cu_train[:10])
    from potlearn_ase.models.neural import NeuralCommittee

    net = NeuralCommittee(fitted.descriptor, n_members=2)
    with pytest.raises(TypeError, match="fit_calibration"):
        cross_validated_calibration(net, cu_train)


def test_calibrate_falls_back_to_one_when_no_held_out_errors_exist(cu_train, caplog):
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.models import LinearFitConfig, calibrate, fit_linear

    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.5, n_radial=3, l_max=1))
    energy_only = fit_linear(desc, cu_train[:4], LinearFitConfig(force_weight=0.0, n_members=4))
    with caplog.at_level("WARNING"):
        assert calibrate(energy_only, cu_train[:4]) == (1.0, "none")
    assert "force_weight is 0" in caplog.text
    model = fit_linear(desc, cu_train[:4], LinearFitConfig(n_members=4))
    alpha, on = calibrate(model, cu_train[:4])
    assert on == "cross-validation" and alpha > 1.0
    alpha_val, on_val = calibrate(model, cu_train[:4], cu_train[10:12])
    assert on_val == "validation" and alpha_val > 0


def test_energies_get_their_own_cross_validated_factor(cu_train, cu_test):
    from potlearn_ase.models import cross_validated_factors, fit_calibration_factors

    # inferred weights: the per-type noise levels make the energy spread meaningful
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=6, l_max=2))
    fitted = fit_linear(desc, cu_train, LinearFitConfig(n_members=8, weights="inferred"), rng=0)

    factors = cross_validated_factors(fitted, cu_train)
    assert factors["forces"] == pytest.approx(cross_validated_calibration(fitted, cu_train))
    val = fit_calibration_factors(fitted, cu_test)
    assert val["forces"] == pytest.approx(fit_calibration(fitted, cu_test))
    # the energy factor covers the held-out energies about as often as a one-sigma interval
    e_err = np.array([fitted.predict(a)["energy"].mean() - a.get_potential_energy()
                      for a in cu_test])
    e_std = np.array([fitted.predict(a)["energy"].std() for a in cu_test])
    coverage = float(np.mean(np.abs(e_err) <= factors["energy"] * e_std))
    assert 0.4 < coverage < 0.95, coverage
