"""The potlearn command: --help, --version, demo, fit and eval."""

from __future__ import annotations

import argparse
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
        assert "from cross-validation on the starting labels" in out
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
    # a real fit (0.08 eV/A; 0.05 with the former fixed 30:1 weights, which fit energies worse)
    assert fit["val_force_rmse"] < 0.1
    assert main(["eval", str(model), str(tmp_path / "val.xyz"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)["overall"]
    assert ev["force_rmse_eV_per_A"] == pytest.approx(fit["val_force_rmse"], rel=1e-9)
    assert 0.5 < ev["force_coverage_1sigma"] < 0.85
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
    assert main(["eval", str(model), str(tmp_path / "test.xyz"), "--json"]) == 0
    # the training data's own folds give a sigma that covers independent errors
    ev = json.loads(capsys.readouterr().out)
    assert 0.55 < ev["overall"]["force_coverage_1sigma"] < 0.85
    assert ev["calibration"]["calibrated_on"] == "cross-validation"


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


def test_train_and_qoi_show_progress_on_stderr_unless_quiet(tmp_path, cu_train, capsys):
    data = _write(tmp_path, "train.xyz", cu_train[:6])
    common = ["--n-radial", "3", "--l-max", "1", "--committee", "2", "--batch-size", "2"]
    for kind, bar in (("linear", "accumulating"), ("neural", "training")):
        extra = ["--epochs", "2", "--hidden", "4"] if kind == "neural" else []
        model = str(tmp_path / f"{kind}.pt")
        assert main(["train", data, "-o", model, "--kind", kind, *common, *extra]) == 0
        out, err = capsys.readouterr()
        assert bar in err and json.loads(out)["model"] == model  # stdout stays JSON
        assert main(["train", data, "-o", model, "--kind", kind, "-q", *common, *extra]) == 0
        assert bar not in capsys.readouterr().err
    qoi = ["qoi", str(tmp_path / "linear.pt"), "--structure", "bulk:Cu:fcc:3.61", "--qoi", "eos"]
    assert main(qoi) == 0
    out, err = capsys.readouterr()
    assert "qoi" in err and "1/1" in err and "lattice_constant" in out
    assert main([*qoi, "--quiet"]) == 0
    assert "1/1" not in capsys.readouterr().err


def test_fit_options_reach_the_saved_model(tmp_path, cu_train, capsys):
    import potlearn_ase

    write(tmp_path / "train.xyz", cu_train[:8])
    model = tmp_path / "m.pt"
    args = ["fit", str(tmp_path / "train.xyz"), "-o", str(model), "--members", "4",
            "--descriptor", "power-spectrum", "--cutoff", "4.5", "--n-radial", "4",
            "--l-max", "1", "--body-order", "4",
            "--energy-weight", "50", "--force-weight", "2", "--stress-weight", "0",
            "--lam", "1e-5"]
    assert main(args) == 0
    err = capsys.readouterr().err
    for stage in ("reading", "fitting", "calibrating", "writing"):
        assert f"potlearn: {stage}" in err
    calc = potlearn_ase.load(model)
    cfg = calc.model.config
    assert (cfg.energy_weight, cfg.force_weight, cfg.stress_weight, cfg.lam) == (
        50.0, 2.0, 0.0, 1e-5)
    assert not cfg.noise_inferred and calc.model.n_members == 4
    d = calc.model.descriptor.config
    assert (d.cutoff, d.n_radial, d.l_max, d.body_order) == (4.5, 4, 1, 4)
    # without weights, each label type's noise level is inferred and saved with the model
    args = ["fit", str(tmp_path / "train.xyz"), "-o", str(model), "--n-radial", "4",
            "--descriptor", "power-spectrum", "--l-max", "1", "--members", "4",
            "--weights", "inferred", "--temper", "none"]
    assert main(args) == 0
    assert "inferred noise" in capsys.readouterr().err
    calc = potlearn_ase.load(model)
    assert calc.model.config.noise_inferred and calc.model.config.temper == "none"
    assert calc.metrics["noise_sigma"]["forces"] > 0
    assert calc.energy_calibration > 0 and calc.metrics["calibrated_on"] == "cross-validation"
    assert main(args + ["--lam", "lots"]) == 2
    assert "lam must be 'evidence' or a number" in capsys.readouterr().err


def test_default_fit_is_the_many_body_ace_with_cross_validated_weights(tmp_path, cu_train,
                                                                      capsys):
    import potlearn_ase
    from potlearn_ase.descriptors import FullACEDescriptor

    write(tmp_path / "train.xyz", cu_train[::2])
    model = tmp_path / "m.pt"
    args = ["fit", str(tmp_path / "train.xyz"), "-o", str(model), "--members", "4",
            "--cutoff", "4.0", "--max-degree", "6", "8", "6", "--correlation-order", "3",
            "--l-max-ace", "3", "--w-l", "1.5"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "weights by 5-fold cross-validation: energy" in err
    calc = potlearn_ase.load(model)
    d = calc.model.descriptor
    assert isinstance(d, FullACEDescriptor)
    assert (d.config.cutoff, d.config.max_degree, d.config.l_max, d.config.w_l) == (
        4.0, (6, 8, 6), 3, 1.5)
    cfg = calc.model.config
    assert cfg.weights == "fixed" and cfg.force_weight == 1.0 and cfg.energy_weight > 0
    # a weight given means fixed weights, the others at their defaults
    assert main([*args, "--energy-weight", "50"]) == 0
    assert "cross-validation: energy" not in capsys.readouterr().err
    assert potlearn_ase.load(model).model.config.energy_weight == 50.0
    # a neural fit without --val holds out a tenth of the file for early stopping
    assert main(["fit", str(tmp_path / "train.xyz"), "-o", str(model), "--kind", "neural",
                 "--members", "2", "--epochs", "3", "--cutoff", "4.0", "--max-degree", "5",
                 "6", "--correlation-order", "2"]) == 0
    out, err = capsys.readouterr()
    assert "no --val: 1 structures of" in err
    assert json.loads(out)["calibrated_on"] == "validation"
    # nonlinear: the cross-validated linear members, each with a neural correction
    assert main(["fit", str(tmp_path / "train.xyz"), "-o", str(model), "--kind", "nonlinear",
                 "--members", "2", "--epochs", "2", "--cutoff", "4.0", "--max-degree", "5",
                 "6", "--correlation-order", "2"]) == 0
    out, err = capsys.readouterr()
    assert "weights by 5-fold cross-validation" in err and "neural correction" in err
    assert potlearn_ase.load(model).model.residual


def test_fit_help_shows_defaults_and_units(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("1/(eV/atom)", "1/(eV/A)", "(default: evidence)", "Angstrom (default: 5.0)",
                   "inferred", "(default: 8)", "(default: 2)", "(default: 3)"):
        assert phrase in text, phrase


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
    assert main(["eval", str(model), str(tmp_path / "val.xyz"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)["overall"]
    assert ev["force_rmse_eV_per_A"] == pytest.approx(fit["val_force_rmse"], rel=1e-9)




def _commands():
    from potlearn_ase.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_option_shows_its_default():
    for name, command in _commands().items():
        text = " ".join(command.format_help().split())
        for action in command._actions:
            if not action.option_strings or action.default is argparse.SUPPRESS:
                continue
            assert action.help, f"potlearn {name} {action.option_strings[0]} has no help text"
            flag = action.option_strings[-1]
            start = text.index(flag, text.index("options:"))
            assert "default" in text[start : start + 400], f"potlearn {name} {flag}: no default"


def test_descriptor_and_committee_defaults_come_from_the_dataclasses():
    from potlearn_ase.descriptors import ACEConfig
    from potlearn_ase.models import LinearFitConfig

    commands = _commands()
    args = {
        "fit": ["train.xyz"],
        "train": ["train.xyz"],
        "select": ["pool.xyz", "-k", "3"],
        "al": ["pool.xyz"],
    }
    ace = ACEConfig()
    for name, argv in args.items():
        ns = commands[name].parse_args(argv)
        values = vars(ns)
        for field in ("cutoff", "n_radial", "l_max"):
            got = values.get(f"descriptor_{field}", values.get(field))
            assert got == getattr(ace, field), (name, field, got)
    assert commands["train"].parse_args(["t.xyz"]).committee == LinearFitConfig().n_members
