"""SIGKILL campaign: kill a ``potlearn otf`` run at random moments, resume it, count the damage.

A small EMT run of fcc Cu (8 atoms, a trigger that labels often) is started with
``potlearn otf`` in a subprocess and killed with SIGKILL at a random moment; then
``potlearn otf --resume`` is started, killed again, and so on ``--kills`` times, after which
the last resume runs to the end. One kill in five lands during start-up (imports, the fit,
the restore), the others at a random time up to ``--max-delay`` seconds after the process
first wrote a label or a checkpoint. A run killed before it wrote its configuration never
started: like a user, the campaign then runs the first command again. Every reference call is
logged by the reference itself to an append-only file (``POTLEARN_REFERENCE_LOG``: one line
when a call starts and one when it ends), so calls made by killed processes are counted too.
At the end it reports:

* **lost labels**: structures whose reference call ended successfully but which are not in
  the label store (target 0; a kill in the instant between the end of a call and the write
  of its record to the store's journal would lose one: no resume can recover a result that
  was never written);
* **repeated calls**: successful reference calls on a structure labelled before (target 0);
  an interrupted call that is made again after the resume is counted separately (its result
  never existed);
* **failed resumes**: processes that exited with an error by themselves (target 0);
* **counters vs store**: ``state.json``'s reference calls and label steps against the store,
  ``summary.json``'s reference calls against the store, ``md.traj`` frames against the MD
  steps and ``history.jsonl`` against the learner steps (target: all equal).

Prints a table and writes ``benchmarks/results/sigkill.json``.

With ``--workers N`` the run labels in N reference worker processes while its MD goes on
(``reference: {calculator: emt, workers: N}``), so kills also land while calls are pending.

Usage: ``python benchmarks/sigkill.py [--kills 20] [--steps 1500] [--seed 0] [--out PATH]
[--quick] [--workers N]``
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
INTERVAL = 5  # md.trajectory_interval


def config(run_dir: Path, steps: int, workers: int = 0) -> dict[str, Any]:
    return {
        "structure": {"bulk": "Cu", "crystalstructure": "fcc", "a": 3.61, "cubic": True,
                      "repeat": [2, 1, 1]},
        "reference": {"calculator": "emt", "workers": workers} if workers else "emt",
        "model": {
            "descriptor": {"cutoff": 4.0, "n_radial": 4, "l_max": 1},
            "fit": {"n_members": 4},
        },
        "md": {"steps": steps, "temperature_K": [300.0, 1200.0], "seed": 0,
               "trajectory_interval": INTERVAL},
        "trigger": {"kind": "fixed", "max_force_std": 0.003, "min_gap": 4},
        "initial": {"n_labels": 2, "rattle": 0.05},
        "validation": None,
        "run_dir": str(run_dir),
        "progress": False,
    }


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "potlearn_ase.cli", *args],
            env=env, stdout=subprocess.DEVNULL, stderr=out,
        )


def _wait_for_progress(child: subprocess.Popen[bytes], run_dir: Path, since: float) -> None:
    """Until the child writes a label or a checkpoint (or exits, or 300 s pass)."""
    files = ("labels.h5.journal", "state.json", "history.jsonl")
    deadline = time.time() + 300
    while child.poll() is None and time.time() < deadline:
        for name in files:
            try:
                if (run_dir / name).stat().st_mtime >= since:
                    return
            except FileNotFoundError:
                pass
        time.sleep(0.05)


def _where(run_dir: Path) -> dict[str, Any]:
    """Where a killed run was: its checkpointed MD step and the size of its journal."""
    try:
        md_step = json.loads((run_dir / "state.json").read_text())["md_step"]
    except (OSError, ValueError, KeyError):
        md_step = None
    try:
        journal = (run_dir / "labels.h5.journal").stat().st_size
    except OSError:
        journal = None
    return {"checkpointed_md_step": md_step, "journal_bytes": journal}


def _store(run_dir: Path) -> dict[str, Any]:
    from potlearn_ase.data.store import LabelStore, structure_hash

    with LabelStore(run_dir / "labels.h5", mode="r") as store:
        labels = [(structure_hash(a), a.info["provenance"]) for a in store]
        failures = [f.provenance for f in store.failures()]
    return {
        "hashes": [h for h, _ in labels],
        "learner_label_steps": [p["learner_step"] for _, p in labels if "learner_step" in p],
        "learner_failures": sum("learner_step" in p for p in failures),
        "failures": len(failures),
    }


def _calls(path: Path) -> dict[str, Any]:
    ok: collections.Counter[str] = collections.Counter()
    started: collections.Counter[str] = collections.Counter()
    ended: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec["event"] == "start":
            started[rec["hash"]] += 1
        else:
            ended[rec["hash"]] += 1
            if rec["ok"]:
                ok[rec["hash"]] += 1
    return {"ok": ok, "started": started, "ended": ended}


def _counters(run_dir: Path, steps: int, store: dict[str, Any]) -> dict[str, Any]:
    from ase.io.trajectory import Trajectory

    state = json.loads((run_dir / "state.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    history = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]
    with Trajectory(str(run_dir / "md.traj")) as t:
        frames = len(t)
    hist_steps = [h["step"] for h in history]
    checks = {
        "state.n_reference_calls": (
            state["n_reference_calls"],
            len(store["learner_label_steps"]) + store["learner_failures"],
        ),
        "state.label_steps": (len(state["label_steps"]), len(store["learner_label_steps"])),
        "summary.reference_calls": (
            summary["reference_calls"], len(store["hashes"]) + store["failures"]
        ),
        "summary.labels": (summary["labels"], len(store["hashes"])),
        "md.traj frames": (frames, steps // INTERVAL + 1),
        "history.jsonl steps": (len(hist_steps), state["step"]),
        "history.jsonl unique": (len(set(hist_steps)), len(hist_steps)),
    }
    same = state["label_steps"] == store["learner_label_steps"]
    checks["state.label_steps order"] = (int(same), 1)
    return checks


def campaign(
    kills: int, steps: int, seed: int, workdir: Path, max_delay: float = 4.0, workers: int = 0
) -> dict[str, Any]:
    """Run the campaign in ``workdir``; returns the report (``workers``: reference worker
    processes, 0 labels in the MD process)."""
    rng = np.random.default_rng(seed)
    run_dir = workdir / "run"
    cfg_path = workdir / "otf.yaml"
    cfg_path.write_text(yaml.safe_dump(config(run_dir, steps, workers)))
    call_log = workdir / "reference-calls.jsonl"
    stderr_log = workdir / "stderr.log"
    env = dict(os.environ, POTLEARN_REFERENCE_LOG=str(call_log), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    done_kills, failed, finished_early, starts = 0, [], 0, 0
    kill_log: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    completed = False
    while not completed:
        # killed before it wrote its configuration, the run never started: a user runs the
        # same command again; afterwards, they resume
        started = (run_dir / "config.yaml").exists()
        args = ["otf", "--resume", str(run_dir)] if started else ["otf", str(cfg_path)]
        starts += 1
        t_start = time.time()
        child = _start(args, env, stderr_log)
        if done_kills < kills:
            phase = "start-up" if rng.random() < 0.2 else "running"
            if phase == "start-up":  # imports, model fit, restore
                delay = float(rng.uniform(0.1, 4.0))
            else:  # once the run works (labels or checkpoints written), at a random moment
                _wait_for_progress(child, run_dir, t_start)
                delay = time.time() - t_start + float(rng.uniform(0.0, max_delay))
            try:
                code = child.wait(timeout=max(delay - (time.time() - t_start), 0.0))
            except subprocess.TimeoutExpired:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
                done_kills += 1
                kill_log.append({"phase": phase, "after_s": round(time.time() - t_start, 2),
                                 **_where(run_dir)})
                continue
            finished_early += code == 0
        else:
            code = child.wait()
        if code == 0:
            completed = True
        else:
            failed.append({"start": starts, "exit_code": code})
            if len(failed) > 3:
                break
    wall = time.perf_counter() - t0
    report: dict[str, Any] = {
        "kills": done_kills,
        "starts": starts,
        "completed": completed,
        "failed_resumes": len(failed),
        "failures": failed,
        "finished_before_kill": finished_early,
        "kill_log": kill_log,
        "steps": steps,
        "wall_time_s": wall,
    }
    if not completed:
        report["stderr_tail"] = stderr_log.read_text()[-3000:]
        return report
    store = _store(run_dir)
    calls = _calls(call_log)
    stored = set(store["hashes"])
    report.update(
        labels=len(store["hashes"]),
        reference_calls_ok=sum(calls["ok"].values()),
        reference_calls_started=sum(calls["started"].values()),
        lost_labels=sum(1 for h in calls["ok"] if h not in stored),
        repeated_calls=sum(n - 1 for n in calls["ok"].values() if n > 1),
        duplicate_store_records=len(store["hashes"]) - len(stored),
        interrupted_calls=sum(calls["started"].values()) - sum(calls["ended"].values()),
        interrupted_calls_redone=sum(
            1 for h, n in calls["started"].items() if n > calls["ended"][h] and h in stored
        ),
    )
    checks = _counters(run_dir, steps, store)
    report["counters"] = {k: {"value": a, "store": b} for k, (a, b) in checks.items()}
    report["counters_equal"] = all(a == b for a, b in checks.values())
    return report


def print_table(r: dict[str, Any]) -> None:
    rows = [
        ("SIGKILLs", r["kills"], ">= 20"),
        ("process starts", r["starts"], ""),
        ("run completed", r["completed"], "True"),
        ("failed resumes", r["failed_resumes"], "0"),
    ]
    if r["completed"]:
        rows += [
            ("labels in store", r["labels"], ""),
            ("reference calls (ok)", r["reference_calls_ok"], ""),
            ("lost labels", r["lost_labels"], "0"),
            ("repeated calls", r["repeated_calls"], "0"),
            ("duplicate store records", r["duplicate_store_records"], "0"),
            ("interrupted calls (killed)", r["interrupted_calls"], ""),
            ("counters == store", r["counters_equal"], "True"),
        ]
    phases = collections.Counter(k["phase"] for k in r.get("kill_log", []))
    steps = [k["checkpointed_md_step"] for k in r.get("kill_log", [])]
    rows.append(("kills in start-up/running", f"{phases['start-up']}/{phases['running']}", ""))
    known = [s for s in steps if s is not None]
    if known:
        rows.append(("checkpointed step at kill", f"{min(known)}..{max(known)}", ""))
    rows.append(("wall time (s)", f"{r['wall_time_s']:.0f}", ""))
    print(f"{'quantity':<28} {'value':>10} {'target':>8}")
    for name, value, target in rows:
        print(f"{name:<28} {value!s:>10} {target:>8}")
    if r.get("counters"):
        for k, v in r["counters"].items():
            flag = "" if v["value"] == v["store"] else "   <-- differs"
            print(f"  {k:<26} {v['value']!s:>10} {v['store']!s:>8}{flag}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-delay", type=float, default=4.0,
                   help="longest wait before a kill once the run works (s)")
    p.add_argument("--out", default=str(HERE / "results" / "sigkill.json"))
    p.add_argument("--workdir", default=None, help="keep the run here (default: a temp dir)")
    p.add_argument("--quick", action="store_true", help="5 kills of a 300-step run")
    p.add_argument("--workers", type=int, default=0,
                   help="reference.workers: label in worker processes while the MD goes on")
    args = p.parse_args(argv)
    if args.quick:
        args.kills, args.steps = 5, 300
    if args.workdir:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=False)
        report = campaign(args.kills, args.steps, args.seed, work, args.max_delay, args.workers)
    else:
        with tempfile.TemporaryDirectory(prefix="sigkill-") as tmp:
            report = campaign(args.kills, args.steps, args.seed, Path(tmp), args.max_delay,
                              args.workers)
    print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {out}")
    ok = (
        report["completed"] and report["failed_resumes"] == 0 and report["lost_labels"] == 0
        and report["repeated_calls"] == 0 and report["counters_equal"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
