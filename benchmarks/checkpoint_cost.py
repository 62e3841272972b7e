"""Cost of one on-the-fly checkpoint as a run grows: 10^3 to 10^6 learner steps behind it.

A learner checkpoints after every label. It rewrites ``state.json`` (small) and appends the
steps since the previous checkpoint to ``history.jsonl``; before, ``state.json`` held the whole
per-step history and was rewritten (with fsync) every time. For each history length this
script times ``learner.checkpoint()`` after 20 new steps (a label every 20 steps), and, side by
side in the same process, the old way: the whole state with its history written atomically.
The model and the rest of the state are the same in both, so the ratio isolates the history.

Prints a table and writes ``benchmarks/results/checkpoint_cost.json``.

Usage: ``python benchmarks/checkpoint_cost.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NEW_STEPS = 20


def _learner(run_dir: Path):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from potlearn_ase.calculators import CommitteeCalculator
    from potlearn_ase.data.store import LabelStore
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.learners.otf import OnTheFlyLearner
    from potlearn_ase.learners.reference import Reference
    from potlearn_ase.learners.triggers import FixedThreshold
    from potlearn_ase.models import LinearFitConfig, fit_linear

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    frames = []
    for k in range(3):
        a = atoms.copy()
        a.rattle(0.05, seed=k)
        a.calc = EMT()
        a.get_forces()
        frames.append(a)
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.0, n_radial=4, l_max=1))
    model = fit_linear(desc, frames, LinearFitConfig(n_members=8), rng=0)
    store = LabelStore(run_dir / "labels.h5")
    learner = OnTheFlyLearner(
        CommitteeCalculator(model=model), Reference.from_spec("emt"), store,
        FixedThreshold(0.1), run_dir=run_dir,
    )
    return learner, store, atoms


def _record(step: int) -> dict:
    """A history entry as the learner makes it (a StepRecord as a dict)."""
    return {"step": step, "max_force_std": 0.01 + 1e-6 * step, "energy_std": 0.002,
            "threshold": 0.05, "decision": "skip", "temperature": 900.0,
            "max_extrapolation_grade": None}


def measure(n_steps: int, repeats: int, old_way: bool) -> dict:
    from potlearn_ase.learners.checkpoint import write_json_atomic

    with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
        run_dir = Path(tmp)
        learner, store, atoms = _learner(run_dir)
        try:
            learner.state.history = [_record(s) for s in range(n_steps)]
            learner.state.step = n_steps
            learner.checkpoint(atoms)  # the history so far is on disk
            new, old = [], []
            for _ in range(repeats):
                for _ in range(NEW_STEPS):
                    learner.state.history.append(_record(learner.state.step))
                    learner.state.step += 1
                t0 = time.perf_counter()
                learner.checkpoint(atoms)
                new.append(time.perf_counter() - t0)
                if old_way:  # what a checkpoint did before: the whole state, history included
                    extra = json.loads((run_dir / "state.json").read_text())
                    t0 = time.perf_counter()
                    learner.committee.save(run_dir / "model.pt")
                    state = asdict(learner.state)
                    state.update({k: v for k, v in extra.items() if k not in state})
                    write_json_atomic(run_dir / "state_old.json", state)
                    old.append(time.perf_counter() - t0)
            row = {
                "steps": n_steps,
                "new_ms": 1e3 * float(np.median(new)),
                "state_json_bytes": (run_dir / "state.json").stat().st_size,
            }
            if old_way:
                row["old_ms"] = 1e3 * float(np.median(old))
                row["old_state_json_bytes"] = (run_dir / "state_old.json").stat().st_size
                row["old_over_new"] = row["old_ms"] / row["new_ms"]
        finally:
            store.close()
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="up to 10^5 steps")
    p.add_argument("--out", default=str(HERE / "results" / "checkpoint_cost.json"))
    args = p.parse_args(argv)
    sizes = [10**3, 10**4, 10**5] + ([] if args.quick else [10**6])
    rows = [measure(n, repeats=3, old_way=n <= 10**5) for n in sizes]
    print(f"{'steps':>9} {'new ms':>9} {'old ms':>9} {'old/new':>8} {'state.json':>11} "
          f"{'old state.json':>15}")
    for r in rows:
        print(f"{r['steps']:>9} {r['new_ms']:>9.2f} {r.get('old_ms', float('nan')):>9.2f} "
              f"{r.get('old_over_new', float('nan')):>8.1f} {r['state_json_bytes']:>11} "
              f"{r.get('old_state_json_bytes', 0):>15}")
    first, last = rows[0]["new_ms"], rows[-1]["new_ms"]
    print(f"checkpoint cost at {rows[-1]['steps']} steps / at {rows[0]['steps']}: "
          f"{last / first:.2f} (timings on a shared machine are noisy)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"new_steps_per_checkpoint": NEW_STEPS, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
