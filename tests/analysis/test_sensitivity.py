"""Sensitivity of QoIs to parameters (posterior directions, active subspace) and training data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ase.build import bulk

from potlearn_ase.analysis.qoi import compute_qois, posterior_committee
from potlearn_ase.analysis.sensitivity import (
    parameter_names,
    posterior_directions,
    qoi_sensitivity,
    sensitivity_plot,
    sensitivity_table,
    training_influence,
)
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.models import LinearCommittee, LinearFitConfig, fit_linear

PRIM = bulk("Cu", "fcc", a=3.6)


def _qois(model):
    return compute_qois(
        model, PRIM, which=("eos", "elastic", "vacancy"), relax_lattice=False,
        vacancy_options={"relax": False},
    ).samples()


@pytest.fixture(scope="module")
def fitted(cu_train):
    frames = list(cu_train[:8]) + list(cu_train[20:28])
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.5, n_radial=4, l_max=2))
    # untempered: a committee as narrow as the noise (the tempered default is wider, and some
    # of 300 members' equations of state then have no minimum to fit)
    cfg = LinearFitConfig(n_members=8, temper="none")
    model = fit_linear(desc, frames, cfg, rng=0)
    return model, frames


@pytest.fixture(scope="module")
def result(fitted):
    model, _ = fitted
    return qoi_sensitivity(model, _qois)


def test_first_order_sigma_matches_posterior_samples(fitted, result):
    model, _ = fitted
    big = _qois(posterior_committee(model, 300, rng=2))
    for name in ("C44", "vacancy_formation_energy", "bulk_modulus"):
        q = result.qoi_names.index(name)
        assert np.sqrt(result.variance[q]) == pytest.approx(big[name].std(), rel=0.15), name
        assert result.qoi_values[q] == pytest.approx(big[name].mean(), abs=3 * big[name].std())


def test_gradient_predicts_a_parameter_change(fitted, result):
    """For C44 (linear in the parameters) the gradient predicts any parameter shift exactly."""
    model, _ = fitted
    rng = np.random.default_rng(4)
    theta = model.posterior.mean
    shift = model.posterior.sample(2, rng=rng)[0] - theta
    S, K1 = model.coef.shape[1:]
    two = LinearCommittee(
        model.descriptor, np.stack([theta, theta + shift]).reshape(2, S, K1), config=model.config
    )
    vals = _qois(two)["C44"]
    q = result.qoi_names.index("C44")
    assert vals[1] - vals[0] == pytest.approx(result.gradient[q] @ shift, rel=1e-4)


def test_principal_directions_and_active_subspace(fitted, result):
    model, _ = fitted
    lam, U = posterior_directions(model)
    assert np.all(np.diff(lam) <= 1e-30)
    np.testing.assert_allclose(U @ np.diag(lam) @ U.T, model.posterior.cov, atol=1e-8 * lam[0])
    # the variance shares are squared correlations
    assert np.all((result.contributions >= 0) & (result.contributions <= 1))
    assert len(parameter_names(model)) == result.gradient.shape[1]
    assert parameter_names(model)[0] == "Cu:const"
    # one QoI alone: the active subspace is one direction, along Sigma grad q
    q = result.qoi_names.index("C44")
    one = qoi_sensitivity(model, lambda m: {"C44": _qois(m)["C44"]})
    assert one.active_eigenvalues[0] == pytest.approx(1.0, rel=1e-6)
    assert one.active_eigenvalues[1] < 1e-8
    sg = model.posterior.cov @ result.gradient[q]
    cos = abs(sg @ one.active_directions[:, 0]) / np.linalg.norm(sg)
    assert cos == pytest.approx(1.0, abs=1e-6)
    # several QoIs at several points: more than one direction matters
    assert result.active_eigenvalues[1] > 1e-3 * result.active_eigenvalues[0]


def test_leave_one_out_influence_matches_a_refit(fitted, result):
    model, frames = fitted
    infl = training_influence(model, frames, result)
    assert infl.shape == (len(frames), len(result.qoi_names))
    q = result.qoi_names.index("C44")
    i = int(np.argmax(np.abs(infl[:, q])))
    # the model's own (inferred) weights, held fixed: the refit the influence predicts
    cfg = dataclasses.replace(model.config, n_members=2, lam=model.posterior.lam)
    full = fit_linear(model.descriptor, frames, cfg, rng=0)
    loo = fit_linear(model.descriptor, frames[:i] + frames[i + 1 :], cfg, rng=0)

    def mean_c44(m):
        one = LinearCommittee(m.descriptor, m.mean_coef()[None], config=m.config)
        return _qois(one)["C44"][0]

    actual = mean_c44(loo) - mean_c44(full)
    assert infl[i, q] == pytest.approx(actual, rel=0.05)
    # the infinitesimal influence has the opposite sign of removal for the leading structure
    upweight = training_influence(model, frames, result, method="influence")
    assert np.sign(upweight[i, q]) == -np.sign(infl[i, q])
    with pytest.raises(ValueError, match="method"):
        training_influence(model, frames, result, method="bogus")


def test_table_plot_and_errors(fitted, result, tmp_path):
    model, frames = fitted
    infl = training_influence(model, frames, result)
    text = sensitivity_table(result, influence=infl)
    assert "C44" in text and "structures: #" in text and "active subspace" in text
    out = sensitivity_plot(result, tmp_path / "sens.png", influence=infl)
    assert out.stat().st_size > 5_000
    no_post = LinearCommittee(model.descriptor, model.coef.numpy(), config=model.config)
    with pytest.raises(ValueError, match="posterior"):
        qoi_sensitivity(no_post, _qois)


def test_qoi_command_with_sensitivity_and_influence(fitted, tmp_path, capsys):
    import argparse
    import json

    from ase.io import write

    from potlearn_ase.calculators import CommitteeCalculator
    from potlearn_ase.cli.analysis import add_qoi_subparser

    model, frames = fitted
    CommitteeCalculator(model=model).save(tmp_path / "m.pt")
    write(tmp_path / "train.xyz", frames)
    parser = argparse.ArgumentParser()
    add_qoi_subparser(parser.add_subparsers())
    args = parser.parse_args([
        "qoi", str(tmp_path / "m.pt"), "--structure", "bulk:Cu:fcc:3.6", "--qoi", "elastic",
        "--sensitivity", "6", "--train", str(tmp_path / "train.xyz"),
        "--sensitivity-plot", str(tmp_path / "s.png"), "--json", str(tmp_path / "q.json"),
    ])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "C44" in text and "structures: #" in text and "active subspace" in text
    out = json.loads((tmp_path / "q.json").read_text())["sensitivity"]
    assert out["qoi_names"] == ["C11", "C12", "C44"]
    assert len(out["training_influence"]) == len(frames)
    assert all(s > 0 for s in out["first_order_std"])
    assert (tmp_path / "s.png").stat().st_size > 5_000
