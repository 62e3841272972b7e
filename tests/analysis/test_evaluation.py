"""potlearn eval: metrics with units, per-group rows, calibration, rank correlation, plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import units

from potlearn_ase.analysis.evaluation import (
    Evaluation,
    Predictions,
    calibration_status,
    evaluate_model,
)
from potlearn_ase.analysis.metrics import calibration_curve
from potlearn_ase.calculators import CommitteeCalculator
from potlearn_ase.cli import main
from potlearn_ase.data.io import write
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.models import LinearFitConfig, fit_linear


@pytest.fixture(scope="module")
def cu_model(cu_train):
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.5, n_radial=4, l_max=2))
    return fit_linear(desc, cu_train[::3], LinearFitConfig(n_members=8), rng=0)


def _grouped(frames):
    out = []
    for k, a in enumerate(frames):
        b = a.copy()
        b.calc = a.calc
        b.info["config_type"] = "cold" if k < 5 else "hot"
        b.info["phase"] = "solid"
        out.append(b)
    return out


def _synthetic(e_err, e_sig, f_err, f_sig) -> Predictions:
    """Predictions of structures of 2 atoms whose errors and sigmas are given directly."""
    S = len(e_err)
    n = np.full(S, 2)
    F_true = [np.zeros((2, 3)) for _ in range(S)]
    return Predictions(
        n_atoms=n, energy_true=np.zeros(S), energy_pred=2 * np.asarray(e_err),
        energy_std=2 * np.asarray(e_sig), forces_true=F_true,
        forces_pred=[np.asarray(e, dtype=float).reshape(2, 3) for e in f_err],
        forces_std=[np.asarray(s, dtype=float).reshape(2, 3) for s in f_sig],
        stress_true=np.full((S, 6), np.nan), stress_pred=np.full((S, 6), np.nan),
        groups=np.array(["(none)"] * S),
    )


def test_metrics_match_a_direct_computation(cu_model, cu_test):
    calc = CommitteeCalculator(model=cu_model, calibration=1.7)
    ev = evaluate_model(calc, _grouped(cu_test))
    rows = ev.rows()
    assert set(rows) == {"all", "cold", "hot"}
    e_err, f_err, s_err, e_sig, f_sig = [], [], [], [], []
    for a in cu_test:
        b = a.copy()
        b.calc = calc
        e_err.append((b.get_potential_energy() - a.get_potential_energy()) / len(a))
        e_sig.append(calc.results["energy_std"] / len(a))
        f_err.append((b.get_forces() - a.get_forces()).ravel())
        f_sig.append(calc.results["forces_std"].ravel())
        s_err.append(b.get_stress() - a.get_stress())
    e_err, e_sig = np.array(e_err), np.array(e_sig)
    f_err, f_sig = np.concatenate(f_err), np.concatenate(f_sig)
    row = rows["all"]
    assert row["n_structures"] == len(cu_test) and row["n_atoms"] == 32 * len(cu_test)
    assert row["energy_rmse_meV_per_atom"] == pytest.approx(1e3 * np.sqrt(np.mean(e_err**2)))
    assert row["energy_mae_meV_per_atom"] == pytest.approx(1e3 * np.mean(np.abs(e_err)))
    assert row["force_rmse_eV_per_A"] == pytest.approx(np.sqrt(np.mean(f_err**2)))
    assert row["force_mae_eV_per_A"] == pytest.approx(np.mean(np.abs(f_err)))
    gpa = np.array(s_err) / units.GPa
    assert row["stress_rmse_GPa"] == pytest.approx(np.sqrt(np.mean(gpa**2)))
    assert row["force_coverage_1sigma"] == pytest.approx(np.mean(np.abs(f_err) <= f_sig))
    assert row["force_coverage_2sigma"] == pytest.approx(np.mean(np.abs(f_err) <= 2 * f_sig))
    assert row["energy_coverage_2sigma"] == pytest.approx(np.mean(np.abs(e_err) <= 2 * e_sig))
    assert 0.9 < row["force_r2"] <= 1.0
    # the per-group rows split the structures: atom-weighted mean squares add up
    cold, hot = rows["cold"], rows["hot"]
    assert cold["n_structures"] + hot["n_structures"] == len(cu_test)
    ms = (cold["force_rmse_eV_per_A"] ** 2 * cold["n_atoms"]
          + hot["force_rmse_eV_per_A"] ** 2 * hot["n_atoms"]) / row["n_atoms"]
    assert np.sqrt(ms) == pytest.approx(row["force_rmse_eV_per_A"])
    # another info key groups by its values
    assert set(evaluate_model(calc, _grouped(cu_test), group_by="phase").rows()) == {
        "all", "solid"}


def test_rank_correlation_and_coverage_of_known_errors():
    rng = np.random.default_rng(0)
    sig = np.sort(rng.uniform(0.01, 1.0, 40))
    # errors exactly 1.5 sigma: every error outside 1 sigma, inside 2 sigma, perfect ranking
    f_sig = [np.full(6, s) for s in sig]
    f_err = [np.full(6, 1.5 * s) for s in sig]
    row = Evaluation(_synthetic(1.5 * sig, sig, f_err, f_sig), calibration_status(_Calc())).rows()[
        "all"]
    assert row["energy_coverage_1sigma"] == 0.0 and row["energy_coverage_2sigma"] == 1.0
    assert row["force_coverage_1sigma"] == 0.0 and row["force_coverage_2sigma"] == 1.0
    assert row["energy_sigma_error_spearman"] == pytest.approx(1.0)
    assert row["force_sigma_error_spearman"] == pytest.approx(1.0)
    # reversed ranking: the largest sigma has the smallest error
    row = Evaluation(_synthetic(sig[::-1], sig, f_err[::-1], f_sig),
                     calibration_status(_Calc())).rows()["all"]
    assert row["energy_sigma_error_spearman"] == pytest.approx(-1.0)
    assert row["force_sigma_error_spearman"] == pytest.approx(-1.0)


def test_calibration_curve_of_gaussian_errors_lies_on_the_diagonal():
    rng = np.random.default_rng(1)
    sigma = rng.uniform(0.1, 2.0, 40_000)
    err = sigma * rng.standard_normal(sigma.size)
    p, obs = calibration_curve(err, sigma)
    assert p[0] == pytest.approx(0.05) and p[-1] == pytest.approx(0.99)
    assert np.max(np.abs(obs - p)) < 0.01
    _, over = calibration_curve(err, 0.5 * sigma)  # overconfident: below the diagonal
    assert np.all(over[:-1] < p[:-1] - 0.02)
    with pytest.raises(ValueError):
        calibration_curve(err, sigma, [0.5, 1.0])


class _Calc:
    calibration = 1.0
    metrics = None


def test_calibration_status_says_when_alpha_was_never_fitted():
    assert calibration_status(_Calc())["fitted"] is False
    c = _Calc()
    c.metrics = {"calibrated_on": "none"}
    assert "NOT CALIBRATED" in calibration_status(c)["note"]
    c.metrics, c.calibration = {"calibrated_on": "validation"}, 2.0
    assert calibration_status(c) == {
        "alpha": 2.0, "calibrated_on": "validation", "fitted": True, "note": "fitted on validation"
    }
    c.metrics = None
    assert calibration_status(c)["fitted"] is None  # alpha != 1 without a record


def test_cli_table_json_groups_and_plots(tmp_path, cu_model, cu_test, capsys):
    model = tmp_path / "raw.pt"
    CommitteeCalculator(model=cu_model).save(model)  # alpha never fitted
    write(tmp_path / "test.xyz", _grouped(cu_test))
    data = str(tmp_path / "test.xyz")
    assert main(["eval", str(model), data, "--plot", str(tmp_path / "plots")]) == 0
    table = capsys.readouterr().out
    assert "NOT CALIBRATED" in table
    for label in ("energy RMSE (meV/atom)", "force MAE (eV/A)", "stress RMSE (GPa)",
                  "force R^2", "force |err| <= 2 sigma", "Spearman(max F sigma"):
        assert label in table
    header = next(line for line in table.splitlines() if line.strip().startswith("all"))
    assert header.split() == ["all", "cold", "hot"]
    for name in ("parity.png", "error_vs_sigma.png", "calibration.png"):
        png = (tmp_path / "plots" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    assert main(["eval", str(model), data, "--json", "--group-by", "phase"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["calibration"]["fitted"] is False
    assert set(out["groups"]) == {"solid"}
    for key in ("energy_rmse_meV_per_atom", "force_rmse_eV_per_A", "stress_mae_GPa",
                "energy_r2", "energy_coverage_1sigma", "force_coverage_2sigma",
                "energy_sigma_error_spearman", "force_sigma_error_spearman"):
        assert key in out["overall"]
    assert len(out["calibration_curve"]["expected"]) == len(
        out["calibration_curve"]["force_observed"])

    assert main(["eval", str(model), data, "--group-by", "nonesuch"]) == 2
    assert "'nonesuch'" in capsys.readouterr().err
