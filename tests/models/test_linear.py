"""Linear Bayesian committees: accuracy on EMT copper, posterior committee, closed-form update."""

from __future__ import annotations

import numpy as np
import pytest

from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.errors import MissingLabelError
from potlearn_ase.models import LinearFitConfig, NormalEquations, fit_linear, solve_posterior


@pytest.fixture(scope="module")
def cu_desc():
    return ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=8, l_max=2))


def _force_rmse(model, frames):
    err = [model.predict(a)["forces"].mean(0) - a.get_forces() for a in frames]
    return float(np.sqrt(np.mean(np.square(err))))


def test_linear_ace_reaches_force_error_bound(cu_desc, cu_train, cu_test):
    model = fit_linear(cu_desc, cu_train, LinearFitConfig(n_members=8), rng=0)
    rmse = _force_rmse(model, cu_test)
    assert rmse <= 0.05, rmse
    # energies per atom too
    e_err = [
        (model.predict(a)["energy"].mean() - a.get_potential_energy()) / len(a) for a in cu_test
    ]
    assert np.sqrt(np.mean(np.square(e_err))) < 0.005


def test_committee_mean_is_posterior_mean(cu_desc, cu_train):
    model = fit_linear(cu_desc, cu_train[::3], LinearFitConfig(n_members=8), rng=1)
    np.testing.assert_allclose(
        model.coef.mean(0).numpy().ravel(), model.posterior.mean, rtol=1e-10, atol=1e-12
    )
    one = fit_linear(cu_desc, cu_train[::3], LinearFitConfig(n_members=1), rng=1)
    np.testing.assert_allclose(one.coef[0].numpy().ravel(), model.posterior.mean, atol=1e-12)
    p = model.predict(cu_train[0])
    assert p["forces"].std(0).max() > 0
    assert one.predict(cu_train[0])["forces"].std(0).max() == 0


def test_uncertainty_grows_away_from_training_data(cu_desc, cu_train, cu_test):
    cold = [a for a in cu_train[:10]]  # 300 K only
    model = fit_linear(cu_desc, cold, LinearFitConfig(n_members=8), rng=0)
    sigma_cold = np.mean([model.predict(a)["forces"].std(0).mean() for a in cu_test[:5]])
    sigma_hot = np.mean([model.predict(a)["forces"].std(0).mean() for a in cu_test[10:]])
    assert sigma_hot > 1.5 * sigma_cold


def test_update_equals_refit(cu_desc, cu_train):
    # fixed weights: the normal equations are the same sums (inferred noise: test_noise.py)
    cfg = LinearFitConfig(n_members=4, lam=1e-6, energy_weight=30.0)
    a = fit_linear(cu_desc, cu_train[:6], cfg, rng=0)
    a.update(cu_train[6:9], rng=5)
    b = fit_linear(cu_desc, cu_train[:9], cfg, rng=5)
    np.testing.assert_allclose(a.normal_equations.AtA, b.normal_equations.AtA, rtol=1e-10)
    np.testing.assert_allclose(a.posterior.mean, b.posterior.mean, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(a.coef.numpy(), b.coef.numpy(), rtol=1e-5, atol=1e-8)


def test_missing_forces_raise(cu_desc, cu_train):
    from ase.calculators.singlepoint import SinglePointCalculator

    bad = cu_train[0].copy()
    bad.calc = SinglePointCalculator(bad, energy=-1.0)
    with pytest.raises(MissingLabelError, match="forces"):
        fit_linear(cu_desc, [cu_train[1], bad], LinearFitConfig(n_members=2))


def test_posterior_matches_closed_form_on_synthetic_data():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(200, 5))
    w_true = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    y = A @ w_true + 0.1 * rng.normal(size=200)
    ne = NormalEquations(5)
    for s in range(0, 200, 50):  # accumulated batch by batch
        ne.add(A[s : s + 50], y[s : s + 50])
    post = solve_posterior(ne, lam=1e-8)
    np.testing.assert_allclose(post.mean, np.linalg.lstsq(A, y, rcond=None)[0], rtol=1e-6)
    assert 0.07 < np.sqrt(post.sigma2) < 0.13
    draws = post.sample(4000, rng=rng, antithetic=False)
    np.testing.assert_allclose(
        np.cov(draws.T), post.cov, atol=3 * np.abs(post.cov).max() / np.sqrt(4000) * 3
    )
    evid = solve_posterior(ne, lam="evidence")
    np.testing.assert_allclose(evid.mean, w_true, atol=0.05)


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_antithetic_committees_of_any_size_have_the_posterior_spread(n):
    rng = np.random.default_rng(1)
    A = rng.normal(size=(100, 4))
    ne = NormalEquations(4)
    ne.add(A, A @ np.array([1.0, 0.5, -1.0, 2.0]) + 0.1 * rng.normal(size=100))
    post = solve_posterior(ne, lam=1e-8)
    var = np.mean([post.sample(n, rng=rng).var(axis=0) for _ in range(3000)], axis=0)
    np.testing.assert_allclose(var, np.diag(post.cov), rtol=0.08)
    np.testing.assert_allclose(post.sample(n, rng=rng).mean(0), post.mean, atol=1e-12)


def test_zero_weights_carry_no_rows_and_an_energy_only_fit_solves(cu_desc, cu_train):
    cfg = LinearFitConfig(energy_weight=0.0, n_members=2, lam=1e-6)
    forces_only = fit_linear(cu_desc, cu_train[:3], cfg)
    n_force = sum(3 * len(a) for a in cu_train[:3])
    stress = sum(6 for a in cu_train[:3] if a.pbc.all())
    assert forces_only.normal_equations.n_rows == n_force + stress  # no energy rows counted
    # energies only, fewer structures than parameters: an exact fit, and no division by zero
    energy_only = fit_linear(
        cu_desc, cu_train[:3], LinearFitConfig(force_weight=0.0, stress_weight=0.0, n_members=2)
    )
    assert energy_only.normal_equations.n_rows == 3
    assert np.isfinite(energy_only.mean_coef()).all()


def test_an_element_no_structure_holds_is_warned_about(cu_train, caplog):
    desc = ACEDescriptor(["Au", "Cu"], ACEConfig(cutoff=4.5, n_radial=3, l_max=1))
    with caplog.at_level("WARNING"):
        fit_linear(desc, cu_train[:2], LinearFitConfig(n_members=2))
    assert "no training structure holds Au" in caplog.text
