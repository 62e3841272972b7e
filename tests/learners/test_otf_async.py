"""Reference workers: the MD goes on while labels are computed, the trust window, kill safety."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin

from potlearn_ase.calculators import CommitteeCalculator
from potlearn_ase.data.generate import thermalize
from potlearn_ase.data.store import LabelStore, structure_hash
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.otf import OnTheFlyLearner, OTFConfig
from potlearn_ase.learners.otf_async import AsyncOnTheFlyLearner, learner_class
from potlearn_ase.learners.otf_async_pool import AsyncLabeller
from potlearn_ase.learners.reference import Reference
from potlearn_ase.learners.reference_specs import available_cores
from potlearn_ase.learners.run import run_otf
from potlearn_ase.learners.triggers import Decision, FixedThreshold, MinGap, Trigger
from potlearn_ase.models import LinearFitConfig, fit_linear
from tests.learners.slow_reference import run_config, slow_reference

ROOT = Path(__file__).resolve().parents[2]
N_ATOMS = 8
ROWS_PER_LABEL = 1 + 3 * N_ATOMS + 6  # energy, forces, stress of one periodic structure


def _cu() -> Any:
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))


def _learner(tmp_path, trigger, *, delay=0.5, workers=2, settings=None):
    start = _cu()
    start.rattle(0.05, seed=1)
    start.calc = EMT()
    start.get_forces()
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.0, n_radial=4, l_max=1))
    model = fit_linear(desc, [start], LinearFitConfig(n_members=4), rng=0)
    store = LabelStore(tmp_path / "labels.h5")
    store.append(start, provenance={"reference": "emt", "engine": "initial"})
    return AsyncOnTheFlyLearner(
        CommitteeCalculator(model=model), slow_reference(delay, workers), store, trigger,
        run_dir=tmp_path, settings=settings,
    )


def _dynamics(learner, T=600.0):
    atoms = _cu()
    thermalize(atoms, T, np.random.default_rng(0))
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=T, friction=0.02,
                   rng=np.random.default_rng(1), fixcm=False)
    learner.attach(dyn)
    return dyn


def _rows_used(learner) -> dict[int, int]:
    """Normal-equation rows of the model that evaluated each learner step (last call wins:
    the step's own evaluation comes after any labelling within the step)."""
    used: dict[int, int] = {}
    evaluate = learner.evaluate

    def recording(atoms):
        used[learner.state.step] = learner.model.normal_equations.n_rows
        return evaluate(atoms)

    learner.evaluate = recording
    return used


def test_the_md_goes_on_while_labels_are_computed_and_uses_the_updated_model(tmp_path):
    # no trust limit: every label arrives while the MD runs (waits are tested below)
    learner = _learner(tmp_path, MinGap(FixedThreshold(0.003), 4), delay=0.1,
                       settings=OTFConfig(trust_factor=1e9))
    rows0 = learner.model.normal_equations.n_rows
    used = _rows_used(learner)
    learner.labeller.start(wait=True)  # the workers' start-up is not part of the test
    dyn = _dynamics(learner)
    dyn.run(200)
    learner.flush()
    assert learner.labeller.pending == 0
    provs = [learner.store.provenance(i) for i in range(1, len(learner.store))]
    assert len(provs) >= 3, [(p["md_step"], p["md_step_arrival"], p["wall_time"]) for p in provs]
    # the MD advanced between the submission and the arrival of a label: it did not wait
    # 0.1 s of reference time per label
    moved = [p["md_step_arrival"] - p["md_step"] for p in provs]
    assert sum(m >= 2 for m in moved) >= 2, moved
    assert all(p["learner_step_arrival"] >= p["learner_step"] for p in provs)
    # every step was evaluated by the model updated with every label arrived by then
    for step, rows in used.items():
        arrived = sum(p["learner_step_arrival"] <= step for p in provs)
        assert rows == rows0 + ROWS_PER_LABEL * arrived, (step, rows, arrived)
    assert learner.model.normal_equations.n_rows == rows0 + ROWS_PER_LABEL * len(provs)
    # prequential ratios against the prediction made at submission, and the counters agree
    assert all(len(p["calibration_ratios"]) > 0 for p in provs)
    assert learner.n_reference_calls == len(provs) == len(learner.state.label_steps)
    assert learner.state.label_steps == [p["learner_step"] for p in provs]
    assert not list((tmp_path / "pending").glob("*.npz"))  # nothing left pending on disk
    learner.store.close()


class _LabelOnceThenDistrust(Trigger):
    """Label learner step 3; from step 6 on the threshold is tiny, so with a trust factor
    every step is beyond the trust limit (a test trigger)."""

    kind = "test"

    def __init__(self) -> None:
        self.step = 0

    def decide(self, step, atoms, results):
        self.step = step
        return Decision.LABEL if step == 3 else Decision.SKIP

    @property
    def threshold(self) -> float:
        return 1e6 if self.step < 6 else 1e-9

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "unit": "eV/A"}


def test_leaving_the_trust_window_waits_for_the_label_and_rewinds(tmp_path):
    learner = _learner(tmp_path, _LabelOnceThenDistrust(), delay=1.0)
    used = _rows_used(learner)
    rewinds: list[dict[str, np.ndarray]] = []
    step = learner.step

    def stepping(atoms, **kw):
        results, decision = step(atoms, **kw)
        if decision is Decision.REJECT:
            rewinds.append({k: v.copy() for k, v in learner._accepted.items()})
        return results, decision

    learner.step = stepping
    dyn = _dynamics(learner)
    after: list[dict[str, np.ndarray]] = []

    def look() -> None:  # runs after the learner's observer
        if len(after) < len(rewinds):
            after.append({"positions": dyn.atoms.positions.copy(),
                          "momenta": dyn.atoms.get_momenta().copy()})

    dyn.attach(look, interval=1)
    dyn.run(15)
    assert learner.state.md_step == 15  # the run finished, rewound step not counted
    assert len(rewinds) == 1 and learner.state.n_rejects == 1
    decisions = [h["decision"] for h in learner.history]
    assert decisions[6] == "reject"
    # the MD was rewound to the last trusted state, exactly
    np.testing.assert_array_equal(after[0]["positions"], rewinds[0]["positions"])
    np.testing.assert_array_equal(after[0]["momenta"], rewinds[0]["momenta"])
    # the step-3 label was waited for at the rejected step 6 (not earlier: 1 s of reference
    # time), the rewound state was labelled too, and the next step used both
    p1, p2 = (learner.store.provenance(i) for i in (1, 2))
    assert p1["learner_step"] == 3 and p1["learner_step_arrival"] == 6
    assert structure_hash(learner.store[2]) == structure_hash(
        _state_atoms(rewinds[0]["positions"], rewinds[0]["cell"]))
    assert used[7] == used[0] + 2 * ROWS_PER_LABEL
    learner.flush()
    learner.store.close()


def _state_atoms(positions, cell):
    a = _cu()
    a.set_cell(cell)
    a.set_positions(positions)
    return a


def test_recovery_stores_a_finished_call_and_repeats_only_an_interrupted_one(tmp_path):
    store = LabelStore(tmp_path / "labels.h5")
    ref = slow_reference(0.0, 1)
    frames = [_cu() for _ in range(3)]
    for k, a in enumerate(frames):
        a.rattle(0.05, seed=10 + k)
    pred = np.zeros((2, N_ATOMS, 3))
    lab = AsyncLabeller(ref, 1, directory=tmp_path / "pending")
    for k, a in enumerate(frames):
        lab.submit(a, pred, {"md_step": k, "learner_step": k, "uncertainty": {}})
    first = lab.wait_all()  # results handed over, nothing stored: a kill now ...
    lab.close()
    assert all(a.result.ok for a in first)
    store.append(first[0].result.atoms, provenance={"learner_step": 0})  # stored, not forgotten
    (tmp_path / "pending" / f"{first[2].key}.result.npz").unlink()  # as if killed in the call
    again = AsyncLabeller(ref, 1, directory=tmp_path / "pending")
    arrivals, resubmitted = again.recover(store)
    assert resubmitted == 1 and again.pending == 1 and again.is_pending(frames[2])
    assert [a.key for a in arrivals] == [first[1].key] and arrivals[0].recovered
    np.testing.assert_array_equal(arrivals[0].result.atoms.get_forces(),
                                  first[1].result.atoms.get_forces())
    assert arrivals[0].meta["md_step"] == 1
    assert not (tmp_path / "pending" / f"{first[0].key}.npz").exists()  # stored: forgotten
    redone = again.wait_all()[0]
    assert redone.result.ok and redone.meta["resubmitted"] and redone.key == first[2].key
    again.close()
    store.close()


def test_workers_above_the_cores_stop_the_run_before_anything_is_written(tmp_path):
    cores = available_cores()
    rd = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"reference\.workers.*at most"):
        run_otf(run_config(str(rd), 10, cores + 1))
    assert not rd.exists()
    for bad in (-1, 1.5, True, "two"):
        with pytest.raises(ConfigError, match=r"reference\.workers"):
            Reference.from_spec({"calculator": "emt", "workers": bad})
    assert Reference.from_spec({"calculator": "emt", "workers": cores}).workers == cores
    assert learner_class(Reference.from_spec("emt")) is OnTheFlyLearner  # default: synchronous
    assert learner_class(Reference.from_spec({"workers": 1})) is AsyncOnTheFlyLearner
    with pytest.raises(ConfigError, match="trust_factor"):
        _learner(tmp_path, FixedThreshold(0.01), settings=OTFConfig(trust_factor=0.0))


def _calls(path: Path) -> tuple[Counter, Counter, Counter, set[int]]:
    ok, started, ended, pids = Counter(), Counter(), Counter(), set()
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        pids.add(rec["pid"])
        if rec["event"] == "start":
            started[rec["hash"]] += 1
        else:
            ended[rec["hash"]] += 1
            ok[rec["hash"]] += bool(rec["ok"])
    return ok, started, ended, pids


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed and not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _kill_during_a_call(cmd: list[str], env: dict[str, str], rd: Path, log: Path) -> set[str]:
    """Start ``cmd``, SIGKILL it while a worker runs a call (after two learner labels); the
    hashes of the calls the kill interrupted."""
    child = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE)
    n_before = sum(_calls(log)[0].values()) if log.exists() else 0
    deadline = time.time() + 240
    while time.time() < deadline and child.poll() is None:
        ok, started, ended, _ = _calls(log) if log.exists() else (Counter(),) * 3 + (set(),)
        # a learner label is stored and another call runs in a worker: kill now
        if (sum(ok.values()) >= max(4, n_before + 1)
                and any(started[h] > ended[h] for h in started)):
            os.kill(child.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    code = child.wait()
    err = child.stderr.read().decode() if child.stderr else ""
    child.stderr.close()
    assert code == -signal.SIGKILL, f"the run ended by itself ({code}): {err[-3000:]}"
    _, started, ended, pids = _calls(log)
    time.sleep(1.0)
    assert not [p for p in pids if _alive(p)]  # the workers died with the killed run
    return {h for h in started if started[h] > ended[h]}


@pytest.mark.slow
def test_sigkill_with_pending_labels_loses_and_repeats_nothing(tmp_path):
    rd = tmp_path / "run"
    log = tmp_path / "calls.jsonl"
    env = dict(os.environ, POTLEARN_REFERENCE_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "tests.learners.slow_reference", str(rd), "600", "2", "0.3"]
    interrupted = _kill_during_a_call(cmd, env, rd, log)
    for _ in range(2):  # a call may end between the look at the log and the kill: again
        if interrupted:
            break
        interrupted = _kill_during_a_call(cmd + ["--resume"], env, rd, log)
    assert interrupted
    done = subprocess.run(cmd + ["--resume"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ok, started, ended, _ = _calls(log)
    with LabelStore(rd / "labels.h5", mode="r") as store:
        hashes = [structure_hash(a) for a in store]
        provs = [a.info["provenance"] for a in store]
        n_failures = store.n_failures
    assert [h for h in ok if h not in hashes] == []  # no label lost
    assert [h for h, n in ok.items() if n > 1] == []  # no structure labelled twice
    assert len(hashes) == len(set(hashes))
    # each call the kill interrupted was submitted again from its record on disk, once
    for h in interrupted:
        assert h in hashes and started[h] == 2 and ended[h] == 1
        assert provs[hashes.index(h)].get("resubmitted")
    state = json.loads((rd / "state.json").read_text())
    summary = json.loads((rd / "summary.json").read_text())
    learner_steps = [p["learner_step"] for p in provs if "learner_step" in p]
    assert state["n_reference_calls"] == len(learner_steps) + n_failures
    assert state["label_steps"] == learner_steps
    assert summary["reference_calls"] == len(hashes) + n_failures == sum(ended.values())
    assert any(p.get("md_step_arrival", 0) > p.get("md_step", 0) for p in provs)
    assert not list((rd / "pending").glob("*.npz"))
    # the trajectory and the history were cut back to the checkpoint: nothing twice
    from ase.io.trajectory import Trajectory

    with Trajectory(str(rd / "md.traj")) as traj:
        assert len(traj) == 600 // 5 + 1
    steps = [json.loads(x)["step"] for x in (rd / "history.jsonl").read_text().splitlines()]
    assert steps == list(range(state["step"]))


def test_engines_that_cannot_rewind_refuse_workers_before_anything_is_written(tmp_path):
    from potlearn_ase.engines.ipi.learning import run_ipi_learning
    from potlearn_ase.engines.lammps.learning import run_lammps_learning

    cfg = {"reference": {"calculator": "emt", "workers": 1}, "run_dir": str(tmp_path / "run")}
    with pytest.raises(ConfigError, match=r"reference\.workers.*i-PI cannot rewind"):
        run_ipi_learning(None, _cu(), cfg)
    with pytest.raises(ConfigError, match=r"reference\.workers.*LAMMPS cannot rewind"):
        run_lammps_learning(["run 0"], cfg)
    assert not (tmp_path / "run").exists()


def _mpiexec() -> str | None:
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def _mpi_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**env, **extra}


@pytest.mark.skipif(MPIEXEC is None or importlib.util.find_spec("mpi4py") is None,
                    reason="mpiexec or mpi4py not installed (pip install potlearn-ase[mpi])")
def test_mpi_ranks_label_while_rank_0_runs_the_md(tmp_path):
    # alone, 'mpi' has no ranks to label on: an error naming the key, before any file
    alone = subprocess.run(
        [sys.executable, "-c", "from potlearn_ase.learners.reference import Reference; "
         "Reference.from_spec({'calculator': 'emt', 'workers': 'mpi'})"],
        env=_mpi_env(), capture_output=True, text=True, timeout=300,
    )
    assert alone.returncode != 0 and "ConfigError: reference.workers: 'mpi'" in alone.stderr
    rd, log = tmp_path / "run", tmp_path / "calls.jsonl"
    done = subprocess.run(
        [MPIEXEC, "-n", "3", sys.executable, "-m", "mpi4py.futures", "-m",
         "tests.learners.slow_reference", str(rd), "400", "mpi", "0.1"],
        env=_mpi_env(POTLEARN_REFERENCE_LOG=str(log)), cwd=ROOT, capture_output=True,
        text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ok, _, _, _ = _calls(log)
    by_pid = Counter(json.loads(line)["pid"] for line in log.read_text().splitlines()
                     if json.loads(line)["event"] == "end")
    with LabelStore(rd / "labels.h5", mode="r") as store:
        provs = [a.info["provenance"] for a in store]
        hashes = [structure_hash(a) for a in store]
    learned = [p for p in provs if "learner_step" in p]
    assert len(learned) >= 3 and all(p["workers"] == 2 for p in learned)
    # rank 0 made the starting labels; the two worker ranks made the learner's
    assert len(by_pid) == 3 and sorted(by_pid.values())[0] == 2
    assert any(p["md_step_arrival"] > p["md_step"] for p in learned)
    assert sorted(ok) == sorted(hashes) and max(ok.values()) == 1
