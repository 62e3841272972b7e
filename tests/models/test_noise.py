"""Noise levels of each label type inferred from the data, and explicit weights."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.models import LinearFitConfig, fit_linear
from potlearn_ase.models.linear import LinearCommittee, design_rows
from potlearn_ase.models.posterior import NormalEquations, infer_noise, solve_posterior


def _blocks(rng, sigmas, sizes, n_params=6):
    theta = rng.normal(size=n_params)
    blocks = []
    for sigma, n in zip(sigmas, sizes):
        A = rng.normal(size=(n, n_params)) * rng.uniform(0.1, 10.0)
        ne = NormalEquations(n_params)
        ne.add(A, A @ theta + sigma * rng.normal(size=n))
        blocks.append(ne)
    return blocks


@pytest.mark.parametrize("temper", [None, np.array([1.0, 0.01, 0.2])])
def test_infer_noise_recovers_known_noise_of_each_block(temper):
    """Three blocks in different units and noise levels: each level comes back."""
    rng = np.random.default_rng(0)
    sigmas = np.array([0.003, 0.3, 0.05])
    blocks = _blocks(rng, sigmas, (300, 6000, 900))
    noise = infer_noise(blocks, temper=temper)
    np.testing.assert_allclose(noise.sigma, sigmas, rtol=0.12)
    # the weighted sum with sigma2 = 1 is the same posterior as the fixed point's
    kappa = np.ones(3) if temper is None else temper
    np.testing.assert_allclose(noise.weights, np.sqrt(kappa) / noise.sigma)
    post = solve_posterior(
        NormalEquations.weighted_sum(blocks, noise.weights**2), lam=noise.lam, sigma2=1.0
    )
    free = solve_posterior(NormalEquations.weighted_sum(blocks, noise.weights**2), lam=noise.lam)
    assert free.sigma2 == pytest.approx(1.0, rel=0.05) if temper is None else True
    np.testing.assert_allclose(post.mean, free.mean)


def test_infer_noise_ignores_an_empty_block():
    rng = np.random.default_rng(1)
    blocks = _blocks(rng, (0.01, 0.2), (200, 2000)) + [NormalEquations(6)]
    noise = infer_noise(blocks)
    assert np.isnan(noise.sigma[2]) and noise.weights[2] == 0.0
    np.testing.assert_allclose(noise.sigma[:2], (0.01, 0.2), rtol=0.15)


@pytest.fixture(scope="module")
def known_model_data(cu_train):
    """Cu structures relabelled by a known linear model plus noise of known size per type."""
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.5, n_radial=4, l_max=1))
    rng = np.random.default_rng(7)
    coef = rng.normal(scale=0.05, size=(1, 1, desc.n_features + 1))
    coef[0, 0, 0] = -3.0
    truth = LinearCommittee(desc, coef)
    sigma_e, sigma_f, sigma_s = 0.004, 0.05, 0.002  # eV/atom, eV/A, eV/A^3
    frames = []
    for atoms in cu_train:
        p = truth.predict(atoms)
        a = atoms.copy()
        n = len(a)
        a.calc = SinglePointCalculator(
            a,
            energy=float(p["energy"][0]) + n * sigma_e * rng.normal(),
            forces=p["forces"][0] + sigma_f * rng.normal(size=(n, 3)),
            stress=p["stress"][0] + sigma_s * rng.normal(size=6),
        )
        frames.append(a)
    virial = sigma_s * np.mean([a.get_volume() / len(a) for a in frames])  # eV/atom
    return desc, frames, np.array([sigma_e, sigma_f, virial])


@pytest.mark.parametrize("temper", ["structures", "none"])
def test_fit_linear_recovers_known_noise_of_energies_forces_and_stress(known_model_data, temper):
    desc, frames, sigmas = known_model_data
    cfg = LinearFitConfig(n_members=4, temper=temper, weights="inferred")
    model = fit_linear(desc, frames, cfg, rng=0)
    assert model.config.noise_inferred and model.noise is not None
    # forces: thousands of rows; energies and virials: 30 structures each
    assert model.noise.sigma[1] == pytest.approx(sigmas[1], rel=0.05)
    assert model.noise.sigma[0] == pytest.approx(sigmas[0], rel=0.35)
    assert model.noise.sigma[2] == pytest.approx(sigmas[2], rel=0.35)
    # the saved weights are the inferred ones, so a refit with them is the same fit
    kappa = model.noise.temper
    assert model.config.force_weight == pytest.approx(np.sqrt(kappa[1]) / model.noise.sigma[1])
    again = fit_linear(desc, frames, model.config, rng=0)
    np.testing.assert_allclose(again.posterior.mean, model.posterior.mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(again.posterior.cov, model.posterior.cov, rtol=1e-6, atol=1e-14)


def test_explicit_weights_keep_the_fixed_weight_fit(known_model_data):
    """Any explicit weight selects today's fit: fixed weights, unset ones at 30, 1, 1."""
    desc, frames, _ = known_model_data
    cfg = LinearFitConfig(energy_weight=30.0, n_members=2)
    model = fit_linear(desc, frames, cfg, rng=0)
    assert model.noise is None and not model.config.noise_inferred
    assert (model.config.force_weight, model.config.stress_weight) == (1.0, 1.0)
    ne = NormalEquations(desc.n_features + 1)
    fixed = LinearFitConfig(energy_weight=30.0, force_weight=1.0, stress_weight=1.0)
    for atoms in frames:
        A, y, w = design_rows(desc, [atoms], fixed)
        ne.add(A, y, w)
        np.testing.assert_array_equal(np.unique(w), [1.0, 900.0])
    unreg = np.zeros(desc.n_features + 1, dtype=bool)
    unreg[0] = True
    direct = solve_posterior(ne, lam="evidence", sigma_floor=1e-3, unregularised=unreg)
    np.testing.assert_allclose(model.posterior.mean, direct.mean, rtol=1e-6, atol=1e-12)
    assert model.posterior.sigma2 == pytest.approx(direct.sigma2)
    # inferred weights weigh energies differently from 30:1
    inferred = fit_linear(desc, frames, LinearFitConfig(n_members=2, weights="inferred"), rng=0)
    ratio = inferred.config.energy_weight / inferred.config.force_weight
    assert not 20 < ratio < 45


def test_update_reinfers_noise_and_equals_a_refit(known_model_data):
    desc, frames, _ = known_model_data
    cfg = LinearFitConfig(n_members=4, weights="inferred")
    a = fit_linear(desc, frames[:20], cfg, rng=0)
    a.update(frames[20:], rng=5)
    b = fit_linear(desc, frames, cfg, rng=5)
    np.testing.assert_allclose(a.noise.sigma, b.noise.sigma, rtol=1e-6)
    np.testing.assert_allclose(a.posterior.mean, b.posterior.mean, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(a.coef.numpy(), b.coef.numpy(), rtol=1e-6, atol=1e-10)


def test_bad_temper_is_named():
    with pytest.raises(ValueError, match="temper"):
        LinearFitConfig(temper="atoms")
    with pytest.raises(ValueError, match="weights"):
        LinearFitConfig(weights="learned")
    with pytest.raises(ValueError, match="energy_weight"):
        LinearFitConfig(weights="inferred", energy_weight=30.0)


def test_default_weights_are_fixed_and_keep_forces_accurate(cu_train, cu_test):
    """The default (fixed 30:1:1) against inferred, tempered weights on a small EMT set:
    tempering leaves the forces almost unweighted there, which is why it is not the default."""
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor

    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.0, n_radial=4, l_max=2))
    assert not LinearFitConfig().infers_noise
    errors = {}
    for name, cfg in (("fixed", LinearFitConfig(n_members=2)),
                      ("tempered", LinearFitConfig(n_members=2, weights="inferred"))):
        model = fit_linear(desc, cu_train[:12], cfg, rng=0)
        err = [model.predict(a, stress=False)["forces"].mean(0) - a.get_forces() for a in cu_test]
        errors[name] = float(np.sqrt(np.mean(np.square(err))))
    assert errors["fixed"] < 0.02 and errors["tempered"] > 3 * errors["fixed"]
