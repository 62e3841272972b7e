"""The potlearn command: --help, --version, demo, fit and eval."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from potlearn_ase import __version__
from potlearn_ase.cli import DEMO_CONFIG, main
from potlearn_ase.data.io import write


def test_help_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "potlearn_ase.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and __version__ in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "potlearn_ase.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for word in ("demo", "otf", "fit", "eval"):
        assert word in out.stdout


def test_demo_reports_real_work(tmp_path, capsys):
    assert main(["demo", "--steps", "300", "--run-dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "reference calls:" in out and "held-out force RMSE:" in out
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["steps"] == 300 and summary["reference_calls"] >= 1
    if not summary["label_steps"]:  # 300 steps may end before the first label
        assert "not calibrated" in out
    # a rerun replaces its own earlier demo run, never another run
    assert main(["demo", "--steps", "20", "--run-dir", str(tmp_path / "demo")]) == 0
    cfg = json.loads(json.dumps(DEMO_CONFIG))
    cfg["trigger"] = {"kind": "fixed", "max_force_std": 0.05}
    cfg["md"]["steps"], cfg["validation"], cfg["progress"] = 10, None, False
    from potlearn_ase.learners.run import run_otf

    run_otf(cfg, run_dir=tmp_path / "mine")
    capsys.readouterr()
    assert main(["demo", "--steps", "20", "--run-dir", str(tmp_path / "mine")]) == 2
    assert "not a demo run" in capsys.readouterr().err
    assert (tmp_path / "mine" / "state.json").exists()


def test_fit_then_eval(tmp_path, cu_train, cu_test, capsys):
    write(tmp_path / "train.xyz", cu_train[::2])
    write(tmp_path / "val.xyz", cu_test)
    model = tmp_path / "m.pt"
    assert (
        main(
            [
                "fit",
                str(tmp_path / "train.xyz"),
                "--val",
                str(tmp_path / "val.xyz"),
                "-o",
                str(model),
                "--n-radial",
                "6",
            ]
        )
        == 0
    )
    fit = json.loads(capsys.readouterr().out)
    assert fit["val_force_rmse"] < 0.05
    assert main(["eval", str(model), str(tmp_path / "val.xyz")]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["force_rmse"] == pytest.approx(fit["val_force_rmse"], rel=1e-9)
    assert 0.5 < ev["sigma_coverage_1"] < 0.85
    assert fit["calibrated_on"] == "validation"


def test_fit_without_validation_is_calibrated_by_cross_validation(
    tmp_path, cu_train, cu_test, capsys
):
    import potlearn_ase

    write(tmp_path / "train.xyz", cu_train)
    model = tmp_path / "m.pt"
    args = ["fit", str(tmp_path / "train.xyz"), "-o", str(model), "--n-radial", "6"]
    assert main(args) == 0
    calc = potlearn_ase.load(model)
    assert calc.metrics["calibrated_on"] == "cross-validation" and calc.calibration > 1.0
    assert calc.model.active_set is not None  # the extrapolation grade comes with the model
    write(tmp_path / "test.xyz", cu_test)
    capsys.readouterr()
    assert main(["eval", str(model), str(tmp_path / "test.xyz")]) == 0
    # the training data's own folds give a sigma that covers independent errors
    assert 0.55 < json.loads(capsys.readouterr().out)["sigma_coverage_1"] < 0.85


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing.pt"), str(tmp_path / "x.xyz")]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_eval_and_fit_name_what_is_wrong_with_the_data(tmp_path, cu_train, capsys):
    from ase.build import bulk

    from potlearn_ase.data.io import write

    assert main(["fit", _write(tmp_path, "train.xyz", cu_train[:4]), "-o",
                 str(tmp_path / "m.pt"), "--n-radial", "3"]) == 0
    plain = [a.copy() for a in cu_train[:2]]  # no labels
    write(tmp_path / "plain.xyz", plain)
    assert main(["eval", str(tmp_path / "m.pt"), str(tmp_path / "plain.xyz")]) == 2
    assert "plain.xyz, frame 0: missing energy, forces" in capsys.readouterr().err
    other = bulk("Au", "fcc", a=4.08, cubic=True)
    write(tmp_path / "au.xyz", [_labelled(other)])
    assert main(["eval", str(tmp_path / "m.pt"), str(tmp_path / "au.xyz")]) == 2
    assert "au.xyz, frame 0: unknown element 'Au'" in capsys.readouterr().err
    (tmp_path / "empty.xyz").write_text("")
    assert main(["fit", str(tmp_path / "empty.xyz")]) == 2
    assert "empty.xyz: no structures" in capsys.readouterr().err


def _labelled(atoms):
    from ase.calculators.emt import EMT

    atoms.calc = EMT()
    atoms.get_stress()
    return atoms


def _write(tmp_path, name, frames):
    from potlearn_ase.data.io import write

    write(tmp_path / name, frames)
    return str(tmp_path / name)


def test_fit_with_the_many_body_ace_descriptor(tmp_path, cu_train, cu_test, capsys):
    import potlearn_ase
    from potlearn_ase.descriptors import FullACEDescriptor

    write(tmp_path / "train.xyz", cu_train[::2])
    write(tmp_path / "val.xyz", cu_test)
    model = tmp_path / "m.pt"
    args = ["fit", str(tmp_path / "train.xyz"), "--val", str(tmp_path / "val.xyz"), "-o",
            str(model), "--descriptor", "ace", "--max-degree", "8", "10", "8", "6"]
    assert main(args) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["val_force_rmse"] < 0.05
    desc = potlearn_ase.load(model).model.descriptor
    assert isinstance(desc, FullACEDescriptor) and desc.config.max_degree == (8, 10, 8, 6)
    assert main(["eval", str(model), str(tmp_path / "val.xyz")]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["force_rmse"] == pytest.approx(fit["val_force_rmse"], rel=1e-9)
