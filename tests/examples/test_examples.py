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
    # 40 steps of the ramp sample about 300 K: the held-out frames (equilibrated at their
    # temperature) are taken there; 900 K frames are beyond what such a short run learns
    args = ["--steps", "40", "--validation-temperatures", "300", "--run-dir", str(tmp_path / "si")]
    summary = _load("otf_si_tblite").main(args)
    assert summary["reference_calls"] >= 1
    assert math.isfinite(summary["force_rmse"]) and summary["force_rmse"] < 0.5


def test_otf_si_gpaw(tmp_path):
    pytest.importorskip("gpaw", reason="GPAW is installed by make install")
    args = ["--steps", "8", "--ecut", "200", "--kpts", "1", "--validation-frames", "0"]
    summary = _load("otf_si_gpaw").main([*args, "--run-dir", str(tmp_path / "si")])
    assert summary["reference_calls"] >= 1 and summary["reference_failures"] == 0
    assert (tmp_path / "si" / "labels.h5").exists()
