"""Energy and stress weights chosen by cross-validation over structures (``weights="cv"``)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.models import LinearFitConfig, fit_linear
from potlearn_ase.models.weight_search import accumulate_folds, search_weights
from tests.conftest import energy_force_rmse


@pytest.fixture(scope="module")
def desc():
    return ACEDescriptor(["Cu"], ACEConfig(cutoff=4.0, n_radial=4, l_max=2))


def test_held_out_errors_equal_explicit_refits(desc, cu_train):
    """The closed-form fold errors are those of fits that never saw the fold."""
    folds = accumulate_folds(desc, cu_train, LinearFitConfig().fixed(), 5)
    search = search_weights(folds, 1, LinearFitConfig(lam=1e-6).fixed(),
                            energy_grid=(100.0,), stress_grid=(3.0,))
    row = search.table[0]
    e_sq, f_sq, n_e, n_f = 0.0, 0.0, 0, 0
    for k in range(5):
        train = [a for i, a in enumerate(cu_train) if i % 5 != k]
        held = [a for i, a in enumerate(cu_train) if i % 5 == k]
        model = fit_linear(desc, train, LinearFitConfig(energy_weight=100.0, stress_weight=3.0,
                                                        lam=1e-6, n_members=2), rng=0)
        e, f = energy_force_rmse(model, held)
        e_sq += e**2 * len(held)
        f_sq += f**2 * 3 * sum(len(a) for a in held)
        n_e += len(held)
        n_f += 3 * sum(len(a) for a in held)
    # the fold fits' ridge parameter is the full data's, so allow the small difference
    assert row["energy"] == pytest.approx(np.sqrt(e_sq / n_e), rel=0.05)
    assert row["forces"] == pytest.approx(np.sqrt(f_sq / n_f), rel=0.02)


def test_cv_fit_keeps_the_best_weights_and_equals_that_fixed_fit(desc, cu_train, cu_test):
    model = fit_linear(desc, cu_train, LinearFitConfig(weights="cv", n_members=4), rng=0)
    search = model.weight_search
    assert search is not None and search.n_folds == 5
    best = min(search.table, key=lambda r: r["score"])
    assert (model.config.energy_weight, model.config.stress_weight) == (
        best["energy_weight"], best["stress_weight"])
    assert model.config.weights == "fixed" and model.config.force_weight == 1.0
    # every grid point was scored, by energy, force and stress held-out errors
    assert len(search.table) == 5 * 4
    assert all(np.isfinite([r["energy"], r["forces"], r["stress"]]).all() for r in search.table)
    # the kept model is the fixed-weight fit with the chosen weights (same posterior mean)
    fixed = fit_linear(desc, cu_train, LinearFitConfig(
        energy_weight=best["energy_weight"], stress_weight=best["stress_weight"], n_members=4),
        rng=0)
    # (to the evidence iteration's tolerance)
    np.testing.assert_allclose(model.posterior.mean, fixed.posterior.mean, rtol=2e-3, atol=1e-6)
    # and its held-out score is no worse than the old fixed 30:1:1 default's
    default = next(r for r in search.table
                   if r["energy_weight"] == 30.0 and r["stress_weight"] == 1.0)
    assert best["score"] <= default["score"]


def test_noisy_energies_get_a_lower_weight(desc, cu_train):
    """Energies with 20 meV/atom of noise are worth less than clean ones: the search says so."""
    rng = np.random.default_rng(0)
    noisy = []
    for a in cu_train:
        b = a.copy()
        e = a.get_potential_energy() + 0.02 * len(a) * rng.normal()
        b.calc = SinglePointCalculator(b, energy=e, forces=a.get_forces(),
                                       stress=a.get_stress())
        noisy.append(b)
    clean = fit_linear(desc, cu_train, LinearFitConfig(weights="cv", n_members=2), rng=0)
    dirty = fit_linear(desc, noisy, LinearFitConfig(weights="cv", n_members=2), rng=0)
    assert dirty.config.energy_weight < clean.config.energy_weight


def test_too_few_structures_fall_back_to_fixed_weights(desc, cu_train, caplog):
    with caplog.at_level(logging.WARNING):
        model = fit_linear(desc, cu_train[:6], LinearFitConfig(weights="cv", n_members=2), rng=0)
    assert "too few" in caplog.text
    assert model.weight_search is None and model.config.energy_weight == 30.0


def test_cv_refuses_given_weights():
    with pytest.raises(ValueError, match="give no weight"):
        LinearFitConfig(weights="cv", energy_weight=10.0)


def test_cv_posterior_scale_makes_the_raw_spread_match_independent_errors(desc, cu_train,
                                                                          cu_test):
    """The folds also set the posterior's scale: the raw committee spread then matches the
    mean squared force error of independent structures, which the fixed fit's spread, shrunk
    by thousands of correlated force rows, does not."""

    def error_over_spread(model):
        err, spread = [], []
        for a in cu_test:
            p = model.predict(a, stress=False)
            err.append((p["forces"].mean(0) - a.get_forces()).ravel())
            spread.append(p["forces"].std(0, ddof=1).ravel())
        return float(np.mean(np.concatenate(err) ** 2) / np.mean(np.concatenate(spread) ** 2))

    cv = fit_linear(desc, cu_train, LinearFitConfig(weights="cv", n_members=16), rng=0)
    fixed = fit_linear(desc, cu_train, LinearFitConfig(
        energy_weight=cv.config.energy_weight, stress_weight=cv.config.stress_weight,
        n_members=16), rng=0)
    assert cv.config.covariance_scale > 10
    assert 0.25 < error_over_spread(cv) < 4.0
    assert error_over_spread(fixed) > 10


def test_a_missing_label_names_its_structure(desc, cu_train):
    """Structures are dealt to folds in turn; an error still names the file's index."""
    from potlearn_ase.errors import MissingLabelError

    frames = [a.copy() for a in cu_train]
    for a, b in zip(cu_train, frames):
        b.calc = SinglePointCalculator(b, energy=a.get_potential_energy(), forces=a.get_forces())
    frames[12].calc = SinglePointCalculator(frames[12], energy=0.0)  # no forces
    with pytest.raises(MissingLabelError, match="training structure 12"):
        fit_linear(desc, frames, LinearFitConfig(weights="cv", n_members=2), rng=0)
