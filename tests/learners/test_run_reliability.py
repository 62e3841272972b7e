"""The edges of an on-the-fly run: kills between a label and its checkpoint, damaged and stale
files, a changed configuration in the same directory, a reference that always fails."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from potlearn_ase.cli import DEMO_CONFIG, main
from potlearn_ase.data.store import LabelStore
from potlearn_ase.errors import CheckpointError, ConfigError, StoreError
from potlearn_ase.learners import otf as otf_module
from potlearn_ase.learners.checkpoint import HistoryLog
from potlearn_ase.learners.reference import Reference
from potlearn_ase.learners.run import run_otf

STEPS = 120


def _config(run_dir, steps: int = STEPS, reference="emt") -> dict:
    """A small, fast run that labels often."""
    return {
        "structure": {"bulk": "Cu", "crystalstructure": "fcc", "a": 3.61, "cubic": True},
        "reference": reference,
        "model": {
            "descriptor": {"cutoff": 4.0, "n_radial": 4, "l_max": 1},
            "fit": {"n_members": 4},
        },
        "md": {"steps": steps, "temperature_K": 900.0, "seed": 3, "trajectory_interval": 5},
        "trigger": {"kind": "fixed", "max_force_std": 0.002, "min_gap": 7},
        "initial": {"n_labels": 2, "rattle": 0.05},
        "validation": None,
        "run_dir": str(run_dir),
        "progress": False,
    }


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after the raise point runs."""


def _kill_after_label(monkeypatch, n: int) -> None:
    """Die right after the n-th label of the learner is stored, before its checkpoint."""
    calls = {"n": 0}
    real = otf_module.OnTheFlyLearner._retrain

    def retrain(self, labelled):
        calls["n"] += len(labelled)
        if calls["n"] >= n:
            raise Killed
        return real(self, labelled)

    monkeypatch.setattr(otf_module.OnTheFlyLearner, "_retrain", retrain)


def _store_counts(run_dir) -> tuple[int, int, list[int]]:
    with LabelStore(run_dir / "labels.h5", mode="r") as store:
        steps = [
            a.info["provenance"]["learner_step"]
            for a in store
            if "learner_step" in a.info["provenance"]
        ]
        fails = sum("learner_step" in f.provenance for f in store.failures())
        return len(store), fails, steps


def _traj_len(path) -> int:
    from ase.io.trajectory import Trajectory

    with Trajectory(str(path)) as t:
        return len(t)


def _check_consistent(run_dir, steps: int = STEPS, interval: int = 5) -> dict:
    state = json.loads((run_dir / "state.json").read_text())
    n_labels, n_fail, label_steps = _store_counts(run_dir)
    assert state["n_reference_calls"] == len(label_steps) + n_fail
    assert state["label_steps"] == label_steps
    assert state["n_labels"] == n_labels
    assert "history" not in state  # streamed to history.jsonl
    assert "ratios" not in state  # stored with each label, rebuilt on resume
    history = HistoryLog(run_dir / "history.jsonl").read()
    hs = [h["step"] for h in history]
    assert hs == list(range(len(hs))) and len(hs) == state["step"]
    assert _traj_len(run_dir / "md.traj") == steps // interval + 1
    return state


def test_counters_history_and_trajectory_survive_kills_between_label_and_checkpoint(
    tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    for n in (2, 3):
        with monkeypatch.context() as m:
            _kill_after_label(m, n)
            with pytest.raises(Killed):
                if n == 2:
                    run_otf(_config(run_dir))
                else:
                    run_otf(run_dir, resume=True)
    n_before, _, steps_before = _store_counts(run_dir)
    killed = json.loads((run_dir / "state.json").read_text())
    # the label stored just before the kill is not in the checkpoint's counters
    assert killed["n_reference_calls"] < len(steps_before)
    summary = run_otf(run_dir, resume=True)
    state = _check_consistent(run_dir)
    assert summary["label_steps"] == state["label_steps"]
    assert summary["reference_calls"] == state["n_reference_calls"] + 2  # + starting labels
    assert n_before <= summary["labels"]


def test_damaged_state_and_stale_temporaries_are_recovered_on_resume(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        _kill_after_label(m, 3)
        with pytest.raises(Killed):
            run_otf(_config(run_dir))
    n_before, _, _ = _store_counts(run_dir)
    text = (run_dir / "state.json").read_text()
    (run_dir / "state.json").write_text(text[: len(text) // 2])
    for name in ("model.pt.tmp", "state.json.tmp"):
        (run_dir / name).write_bytes(b"left by a kill")
    # the learner alone (as the LAMMPS and i-PI engines use it) names the damaged file
    from potlearn_ase.learners.checkpoint import read_state

    with pytest.raises(CheckpointError, match=r"state\.json: the checkpoint is damaged"):
        read_state(run_dir / "state.json")
    summary = run_otf(run_dir, resume=True)  # rebuilt from the store: no label is lost
    assert summary["steps"] == STEPS and summary["labels"] >= n_before
    assert not (run_dir / "model.pt.tmp").exists() and not (run_dir / "state.json.tmp").exists()
    assert (run_dir / "state.json.damaged").exists()
    _check_consistent(run_dir)


def test_state_json_stays_small_and_old_run_directories_resume(tmp_path, monkeypatch):
    sizes = {}
    for steps in (40, 320):
        run_dir = tmp_path / f"run{steps}"
        cfg = _config(run_dir, steps)
        cfg["trigger"] = {"kind": "fixed", "max_force_std": 10.0}  # no label: history only
        run_otf(cfg)
        sizes[steps] = (run_dir / "state.json").stat().st_size
        lines = (run_dir / "history.jsonl").read_text().splitlines()
        assert len(lines) == json.loads((run_dir / "state.json").read_text())["step"]
    assert sizes[320] < 1.2 * sizes[40], sizes  # 8 x the steps, not 8 x the checkpoint
    # a run directory of an earlier version: the history inside state.json
    run_dir = tmp_path / "old"
    with monkeypatch.context() as m:
        _kill_after_label(m, 3)
        with pytest.raises(Killed):
            run_otf(_config(run_dir))
    state = json.loads((run_dir / "state.json").read_text())
    state["history"] = HistoryLog(run_dir / "history.jsonl").read()
    (run_dir / "history.jsonl").unlink()
    (run_dir / "state.json").write_text(json.dumps(state))
    run_otf(run_dir, resume=True)
    _check_consistent(run_dir)


def test_history_log_drops_a_torn_last_line_and_cuts_back_to_a_step(tmp_path):
    log = HistoryLog(tmp_path / "history.jsonl")
    log.append({"step": k, "x": 0.5 * k} for k in range(6))
    with open(log.path, "a") as fh:
        fh.write('{"step": 6, "x"')  # a kill during the append
    assert [h["step"] for h in log.read()] == list(range(6))
    assert [h["step"] for h in log.read(before_step=4)] == [0, 1, 2, 3]
    assert log.path.read_text().count("\n") == 4  # the file is cut back too
    log.append([{"step": 4, "x": 2.0}])
    assert [h["step"] for h in log.read()] == [0, 1, 2, 3, 4]
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join([lines[0], "garbage", *lines[2:]]) + "\n")
    with pytest.raises(CheckpointError, match=r"history\.jsonl, line 2"):
        log.read()


def test_a_new_run_refuses_a_used_directory_and_the_store_other_references(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    # killed after its first labels, before any state.json
    monkeypatch.setattr(otf_module.OnTheFlyLearner, "checkpoint", lambda self, *a, **k: None)
    with monkeypatch.context() as m:
        _kill_after_label(m, 1)
        with pytest.raises(Killed):
            run_otf(_config(run_dir))
    monkeypatch.undo()
    assert not (run_dir / "state.json").exists() and (run_dir / "labels.h5").exists()
    other = _config(run_dir, reference={"calculator": "emt", "asap_cutoff": True})
    with pytest.raises(ConfigError, match=r"not empty.*--resume"):
        run_otf(other)
    # resuming under an edited configuration: the store refuses the other reference
    (run_dir / "config.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(StoreError, match=r"not by this run.s .emt. with .*asap_cutoff"):
        run_otf(run_dir, resume=True)
    # and a store bound to one reference refuses an append from another
    from ase.build import bulk
    from ase.calculators.emt import EMT

    with LabelStore(tmp_path / "s.h5") as store:
        store.check_reference("emt", {"calculator": "emt"})
        a = bulk("Cu", cubic=True)
        a.calc = EMT()
        a.get_forces()
        store.append(a, provenance={"reference": "emt", "reference_params": {"calculator": "emt"}})
        a.rattle(0.01, seed=1)
        a.get_forces()
        with pytest.raises(StoreError, match="refusing a label from reference 'emt'"):
            store.append(a, provenance={"reference": "emt", "reference_params": {"x": 1}})
        assert len(store) == 1


def test_a_reference_that_keeps_failing_stops_the_run_which_resumes_later(
    tmp_path, monkeypatch, capsys
):
    run_dir = tmp_path / "run"
    cfg = _config(run_dir, reference={"calculator": "emt", "retries": 0,
                                      "max_consecutive_failures": 3})
    real = Reference._compute
    calls = {"n": 0}

    def broken(self, atoms, calc, fresh):
        calls["n"] += 1
        if calls["n"] > 2:  # the two starting labels succeed, then every call fails
            raise RuntimeError("SCF did not converge")
        return real(self, atoms, calc, fresh)

    (tmp_path / "otf.yaml").write_text(yaml.safe_dump(cfg))
    with monkeypatch.context() as m:
        m.setattr(Reference, "_compute", broken)
        assert main(["otf", str(tmp_path / "otf.yaml")]) == 2
    err = capsys.readouterr().err
    assert "failed 3 times in a row" in err and "SCF did not converge" in err
    assert "--resume" in err
    with LabelStore(run_dir / "labels.h5", mode="r") as store:
        assert store.n_failures == 3 and len(store) == 2
    assert main(["otf", "--resume", str(run_dir)]) == 0  # the reference works again
    state = _check_consistent(run_dir)
    assert state["n_failures"] == 3
    with pytest.raises(ConfigError, match="max_consecutive_failures"):
        Reference.from_spec({"calculator": "emt", "max_consecutive_failures": 0})


def _demo_like_run(path, **changes) -> None:
    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["md"]["steps"], cfg["validation"], cfg["progress"] = 5, None, False
    cfg.update(changes)
    run_otf(cfg, run_dir=path)


def test_demo_deletes_only_a_directory_it_made(tmp_path, capsys):
    mine = tmp_path / "mine"
    # the demo's structure and trigger, but another reference: the user's labels
    _demo_like_run(mine, reference={"calculator": "emt", "asap_cutoff": True})
    n = len(LabelStore(mine / "labels.h5", mode="r"))
    capsys.readouterr()
    assert main(["demo", "--steps", "5", "--run-dir", str(mine)]) == 2
    assert "not a demo run" in capsys.readouterr().err
    assert len(LabelStore(mine / "labels.h5", mode="r")) == n
    # a demo directory whose configuration was replaced by another one is not deleted
    demo = tmp_path / "demo"
    assert main(["demo", "--steps", "5", "--run-dir", str(demo)]) == 0
    assert (demo / ".potlearn-demo").exists()
    cfg = yaml.safe_load((demo / "config.yaml").read_text())
    cfg["reference"] = {"calculator": "emt", "asap_cutoff": True}
    (demo / "config.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["demo", "--steps", "5", "--run-dir", str(demo)]) == 2
    assert "another configuration" in capsys.readouterr().err
    assert (demo / "labels.h5").exists()
