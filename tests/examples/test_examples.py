"""Every script in examples/ runs (at reduced length)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_otf_si_tblite(tmp_path):
    pytest.importorskip("tblite", reason="tblite is installed by the dft extra")
    import numpy as np
    from ase.io import read

    # 150 steps of the ramp (from the perfect lattice) reach about 300 K; the held-out frames
    # are equilibrated there. The bound: the learned committee explains the forces better
    # than predicting none (an 8-atom cell fluctuates strongly, the frames are hot).
    run_dir = tmp_path / "si"
    args = ["--steps", "150", "--validation-temperatures", "300", "--run-dir", str(run_dir)]
    summary = _load("otf_si_tblite").main(args)
    assert summary["reference_calls"] >= 5
    frames = read(run_dir / "validation.xyz", ":")
    rms_force = float(np.sqrt(np.mean(np.concatenate([a.get_forces() for a in frames]) ** 2)))
    assert math.isfinite(summary["force_rmse"]) and summary["force_rmse"] < rms_force


def test_otf_si_gpaw(tmp_path):
    pytest.importorskip("gpaw", reason="GPAW is installed by make install")
    args = ["--steps", "8", "--ecut", "200", "--kpts", "1", "--validation-frames", "0"]
    summary = _load("otf_si_gpaw").main([*args, "--run-dir", str(tmp_path / "si")])
    assert summary["reference_calls"] >= 1 and summary["reference_failures"] == 0
    assert (tmp_path / "si" / "labels.h5").exists()
