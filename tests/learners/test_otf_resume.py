"""A killed on-the-fly run resumes: no acknowledged label lost, no reference call repeated."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from potlearn_ase.cli import DEMO_CONFIG
from potlearn_ase.data.store import LabelStore, structure_hash
from potlearn_ase.learners.run import run_otf

STEPS = 1000


def _config(run_dir) -> dict:
    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg.update(run_dir=str(run_dir), progress=False, validation=None)
    cfg["md"]["steps"] = STEPS
    # label often so that kills land between, during and after labels
    cfg["trigger"] = {"kind": "fixed", "max_force_std": 0.005, "min_gap": 20}
    return cfg


def _stored_hashes(path) -> list[str]:
    if not path.exists():
        return []
    with LabelStore(path, mode="r") as store:
        return [structure_hash(a) for a in store.frames()]


@pytest.mark.parametrize("trial", range(5))
def test_sigkill_and_resume(tmp_path, trial):
    rng = np.random.default_rng(trial)
    run_dir = tmp_path / "run"
    cfg_path = tmp_path / "otf.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(run_dir)))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    child = subprocess.Popen(
        [sys.executable, "-m", "potlearn_ase.cli", "otf", str(cfg_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # wait until the run has started writing, then kill at a random later moment
    deadline = time.time() + 60
    while not (run_dir / "labels.h5.journal").exists() and not (run_dir / "labels.h5").exists():
        assert child.poll() is None, child.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(float(rng.uniform(0.2, 2.5)))
    acknowledged = _stored_hashes(run_dir / "labels.h5")
    assert child.poll() is None, "the run ended before the kill: the trial tests nothing"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    state_path = run_dir / "state.json"
    killed_at = json.loads(state_path.read_text())["md_step"] if state_path.exists() else 0
    assert killed_at < STEPS
    summary = run_otf(run_dir, resume=True)
    assert summary["steps"] == STEPS
    state = json.loads((run_dir / "state.json").read_text())
    assert state["finished"] and state["md_step"] == STEPS
    after = _stored_hashes(run_dir / "labels.h5")
    # every label acknowledged before the kill is still there, in the same order
    assert after[: len(acknowledged)] == acknowledged
    # no structure was labelled twice: a resumed run never repeats a reference call
    assert len(set(after)) == len(after)
    assert summary["reference_calls"] == len(after) + summary["reference_failures"]
    print(
        f"killed at MD step {killed_at}, {len(acknowledged)} labels acknowledged, "
        f"{len(after)} at the end"
    )
