"""Metrics against hand-computed values, and evaluate() against EMT."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from potlearn_ase.analysis.metrics import (
    cosine_similarity,
    cov,
    coverage,
    energy_metrics,
    evaluate,
    force_metrics,
    mae,
    max_error,
    r2,
    rmse,
)
from potlearn_ase.errors import MissingLabelError

Y_TRUE = np.array([1.0, 2.0, 3.0, 4.0])
Y_PRED = np.array([1.5, 2.0, 2.0, 4.5])  # errors 0.5, 0, -1, 0.5


def test_scalar_metrics_hand_computed():
    assert mae(Y_TRUE, Y_PRED) == pytest.approx(2.0 / 4)
    assert rmse(Y_TRUE, Y_PRED) == pytest.approx(math.sqrt(1.5 / 4))
    # ss_res = 1.5, ss_tot = 2.25 + 0.25 + 0.25 + 2.25 = 5
    assert r2(Y_TRUE, Y_PRED) == pytest.approx(1 - 1.5 / 5)
    assert max_error(Y_TRUE, Y_PRED) == pytest.approx(1.0)
    # mean(y_true) = 2.5
    assert cov(Y_TRUE, Y_PRED) == pytest.approx(math.sqrt(1.5 / 4) / 2.5)


def test_metrics_argument_order_matters():
    t = np.array([0.0, 1.0, 2.0])
    p = np.array([1.0, 1.0, 1.0])
    assert r2(t, p) == pytest.approx(1 - 2.0 / 2.0)
    assert r2(p, t) == 0.0  # constant y_true, imperfect prediction
    # rmse = sqrt(17 / 3) both ways; mean(y_true) is 3 one way and 2 the other
    assert cov([1.0, 2.0, 6.0], [2.0, 2.0, 2.0]) == pytest.approx(math.sqrt(17 / 3) / 3)
    assert cov([2.0, 2.0, 2.0], [1.0, 2.0, 6.0]) == pytest.approx(math.sqrt(17 / 3) / 2)


def test_r2_perfect_and_constant():
    assert r2(Y_TRUE, Y_TRUE) == 1.0
    assert r2([2.0, 2.0], [2.0, 2.0]) == 1.0
    assert math.isnan(cov([0.0, 0.0], [1.0, -1.0]))


def test_shape_mismatch_and_empty_raise():
    with pytest.raises(ValueError, match="shape"):
        mae([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="empty"):
        rmse([], [])


def test_cosine_similarity_skips_zero_vectors():
    F_true = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    F_pred = np.array([[2.0, 0.0, 0.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    # cosines: 1, -1, skipped (zero reference), 1/sqrt(2)
    expected = (1.0 - 1.0 + 1 / math.sqrt(2)) / 3
    assert cosine_similarity(F_true, F_pred) == pytest.approx(expected)
    assert math.isnan(cosine_similarity(np.zeros((2, 3)), np.ones((2, 3))))


def test_coverage_counts_errors_within_z_sigma():
    errors = np.array([0.1, -0.3, 0.5, -1.2])
    sigma = np.array([0.2, 0.2, 0.5, 0.5])
    assert coverage(errors, sigma) == pytest.approx(2 / 4)  # 0.1 and 0.5 (edge included)
    assert coverage(errors, sigma, z=2.0) == pytest.approx(3 / 4)
    assert coverage(errors, 0.25, z=1.0) == pytest.approx(1 / 4)  # broadcast scalar sigma
    with pytest.raises(ValueError, match="negative"):
        coverage(errors, -sigma)


def test_coverage_of_gaussian_errors_is_calibrated():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.1, 2.0, size=20000)
    errors = rng.normal(0.0, sigma)
    assert coverage(errors, sigma, 1.0) == pytest.approx(0.6827, abs=0.01)
    assert coverage(errors, sigma, 2.0) == pytest.approx(0.9545, abs=0.01)
    assert coverage(errors, 0.5 * sigma, 1.0) < 0.45  # overconfident sigma shows


def test_energy_metrics_per_atom_and_per_structure():
    E_true = np.array([-10.0, -20.0])
    E_pred = np.array([-9.0, -22.0])
    n = np.array([2, 4])
    per_atom = energy_metrics(E_true, E_pred, n)
    # per atom: true -5, -5; pred -4.5, -5.5 -> errors 0.5, -0.5
    assert per_atom["mae"] == pytest.approx(0.5)
    assert per_atom["rmse"] == pytest.approx(0.5)
    assert per_atom["unit"] == "eV/atom"
    total = energy_metrics(E_true, E_pred, per_atom=False)
    assert total["mae"] == pytest.approx(1.5)
    assert total["max"] == pytest.approx(2.0)
    assert total["unit"] == "eV"
    with pytest.raises(ValueError, match="n_atoms"):
        energy_metrics(E_true, E_pred)


def test_force_metrics_per_component_and_element():
    F_true = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    F_pred = np.array([[1.3, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.4]])
    numbers = np.array([29, 29, 79])
    m = force_metrics(F_true, F_pred, numbers)
    assert m["n"] == 9
    assert m["mae"] == pytest.approx((0.3 + 0.6) / 9)
    assert m["max"] == pytest.approx(0.6)
    assert m["components"]["x"]["mae"] == pytest.approx(0.1)
    assert m["components"]["y"]["mae"] == pytest.approx(0.0)
    assert m["components"]["z"]["rmse"] == pytest.approx(math.sqrt(0.36 / 3))
    assert set(m["elements"]) == {"Cu", "Au"}
    assert m["elements"]["Cu"]["mae"] == pytest.approx(0.3 / 6)
    assert m["elements"]["Au"]["max"] == pytest.approx(0.6)
    assert m["cos"] == pytest.approx(1.0)
    assert "elements" not in force_metrics(F_true, F_pred)


def _frames(n: int, seed: int):
    frames = []
    for i in range(n):
        a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
        a.rattle(0.05, seed=seed + i)
        frames.append(a)
    return frames


def _labelled(frames, calc):
    out = []
    for a in frames:
        b = a.copy()
        b.calc = calc
        res = {
            "energy": b.get_potential_energy(),
            "forces": b.get_forces(),
            "stress": b.get_stress(),
        }
        c = a.copy()
        c.calc = SinglePointCalculator(c, **res)
        out.append(c)
    return out


def test_evaluate_against_itself_is_perfect_and_calculator_matches_frames():
    frames = _labelled(_frames(3, 1), EMT())
    m = evaluate(frames, EMT())
    assert m["n_structures"] == 3 and m["n_atoms"] == 24
    assert m["forces"]["rmse"] < 1e-10
    assert m["energy_per_atom"]["mae"] < 1e-10
    assert m["stress"]["mae"] < 1e-10
    assert "force_coverage" not in m  # EMT has no forces_std


def test_evaluate_known_error_of_shifted_prediction():
    frames = _labelled(_frames(2, 5), EMT())
    shifted = []
    for a in frames:
        r = a.calc.results
        b = a.copy()
        b.calc = SinglePointCalculator(
            b,
            energy=r["energy"] + 0.8,  # 8 atoms: 0.1 eV/atom
            forces=r["forces"] + np.array([0.2, 0.0, 0.0]),
        )
        shifted.append(b)
    m = evaluate(frames, shifted)
    assert m["energy"]["mae"] == pytest.approx(0.8)
    assert m["energy_per_atom"]["mae"] == pytest.approx(0.1)
    assert m["forces"]["components"]["x"]["mae"] == pytest.approx(0.2)
    assert m["forces"]["components"]["y"]["mae"] == pytest.approx(0.0, abs=1e-12)
    assert m["forces"]["elements"]["Cu"]["mae"] == pytest.approx(0.2 / 3)
    assert "stress" not in m  # the prediction has none


def test_evaluate_reports_missing_labels_with_frame_index():
    frames = _labelled(_frames(2, 9), EMT())
    frames[1].calc = None
    with pytest.raises(MissingLabelError, match="reference frame 1"):
        evaluate(frames, EMT())


def test_evaluate_committee_coverage_matches_its_calibration(cu_train, cu_test):
    from potlearn_ase.calculators import CommitteeCalculator
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.models import LinearFitConfig, fit_calibration, fit_linear

    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.5, n_radial=6, l_max=2))
    model = fit_linear(desc, cu_train[::3], LinearFitConfig(n_members=8), rng=0)
    held_out = cu_test[::2]
    alpha = fit_calibration(model, held_out)  # 68.3 % of |error| <= alpha * spread there
    m = evaluate(held_out, CommitteeCalculator(model=model, calibration=alpha))
    cover = m["force_coverage"]
    assert cover["1"] == pytest.approx(0.683, abs=0.01)
    assert cover["1"] < cover["2"] < cover["3"] <= 1.0
    # the force RMSE agrees with a direct computation over every component
    err = []
    for a in held_out:
        b = a.copy()
        b.calc = CommitteeCalculator(model=model, calibration=alpha)
        err.append(b.get_forces() - a.calc.results["forces"])
    assert m["forces"]["rmse"] == pytest.approx(float(np.sqrt(np.mean(np.square(err)))))
    assert 0.9 < m["forces"]["r2"] <= 1.0 and m["forces"]["cos"] > 0.9
