"""Files written by release 0.1 (before the one-folder-per-concept layout) still load.

``tests/fixtures/legacy-0.1`` was written by the 0.1 code: a linear committee with its
calibration, the results it gave on a probe structure, and a finished ``potlearn otf`` run
directory (flat ``model`` keys in its config.yaml).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from ase.io import read

import potlearn_ase
from potlearn_ase.cli import main
from potlearn_ase.data.store import LabelStore

LEGACY = Path(__file__).parent / "fixtures" / "legacy-0.1"


def test_model_file_of_release_0_1_gives_the_same_results():
    calc = potlearn_ase.load(LEGACY / "model-0.1.pt")
    expected = json.loads((LEGACY / "model-0.1.json").read_text())
    atoms = read(LEGACY / "probe.xyz")
    atoms.calc = calc
    assert calc.calibration == expected["calibration"]
    # probe.xyz rounds positions to the 8th digit: the results agree to that rounding
    assert abs(atoms.get_potential_energy() - expected["energy"]) < 1e-6
    np.testing.assert_allclose(atoms.get_forces(), expected["forces"], atol=1e-6)
    assert abs(calc.results["energy_std"] - expected["energy_std"]) < 1e-6


def test_run_directory_of_release_0_1_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(LEGACY / "run", run)
    assert main(["otf", "--resume", str(run)]) == 0
    with LabelStore(run / "labels.h5") as store:
        assert len(store) == 1  # the finished run takes no new label
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 40
    assert summary["reference_calls"] == 1  # the stored label is not labelled again
