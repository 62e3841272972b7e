"""On-the-fly learning against random selection of the same number of frames.

Two settings, both fcc Cu with 32 atoms, ASE's EMT as the reference and Langevin MD with 2 fs
steps:

* ``peer``: temperature ramped linearly from 300 to 1200 K over 1000 steps; held-out error on
  independent EMT frames (300, 700 and 1200 K, taken after equilibration).
* ``demo``: the same ramp over 2000 steps (``make demo``).

For each setting the table shows our reference calls, held-out force RMSE (overall and at
1200 K) and wall time. Beside them is the error of the same model kind trained on as many MD
frames picked at random from the run's own trajectory and labelled by EMT (mean and spread over
5 seeds). Peer codes are compared in ``otf_peers.py``, which runs them. Prints the table and
writes ``benchmarks/results/otf_vs_random.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

TARGETS = {
    "peer": {"reference_calls": 4, "force_rmse": 0.025, "wall_time_s": 30},
    "demo": {
        "reference_calls": 10,
        "force_rmse": 0.025,
        "force_rmse_1200K": 0.035,
        "wall_time_s": 120,
    },
}


def config(steps: int, run_dir: Path) -> dict:
    from potlearn_ase.cli import DEMO_CONFIG

    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["md"]["steps"] = steps
    cfg["run_dir"] = str(run_dir)
    cfg["progress"] = False
    return cfg


def random_baseline(run_dir: Path, n_frames: int, seeds: int = 5) -> tuple[float, float]:
    """Force RMSE of models fitted on ``n_frames`` random frames of the run's trajectory."""
    from ase.calculators.emt import EMT
    from ase.io import read

    from potlearn_ase.data.generate import label
    from potlearn_ase.data.io import read as read_xyz
    from potlearn_ase.learners.run import OTFRunConfig, _fit

    cfg = OTFRunConfig.from_file(run_dir / "config.yaml")
    traj = read(run_dir / "md.traj", index=":")
    val = list(read_xyz(run_dir / "validation.xyz"))
    errors = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(traj), size=n_frames, replace=False)
        frames = [label(traj[i], EMT()) for i in pick]
        model = _fit(cfg, frames, ["Cu"], seed)
        err = np.concatenate(
            [(model.predict(a)["forces"].mean(0) - a.get_forces()).ravel() for a in val]
        )
        errors.append(float(np.sqrt(np.mean(err**2))))
    return float(np.mean(errors)), float(np.std(errors))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=["peer", "demo"], choices=["peer", "demo"])
    args = ap.parse_args()
    from potlearn_ase.learners.run import run_otf

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.settings:
            steps = 1000 if name == "peer" else 2000
            rd = Path(tmp) / name
            t0 = time.perf_counter()
            summary = run_otf(config(steps, rd))
            wall = time.perf_counter() - t0
            calls = summary["reference_calls"]
            rnd_mean, rnd_std = random_baseline(rd, calls)
            results[name] = {
                "steps": steps,
                "reference_calls": calls,
                "force_rmse": summary["force_rmse"],
                "force_rmse_1200K": summary["force_rmse_by_temperature"].get("1200"),
                "sigma_coverage_1": summary["sigma_coverage_1"],
                "wall_time_s": wall,
                "md_and_learning_s": summary["wall_time_s"],
                "random_same_calls_force_rmse": rnd_mean,
                "random_same_calls_force_rmse_std": rnd_std,
                "targets": TARGETS[name],
            }
            (HERE / "results").mkdir(exist_ok=True)
            shutil.copy(rd / "summary.json", HERE / "results" / f"otf_{name}_summary.json")
    print(
        f"{'setting':8s} {'calls':>6s} {'RMSE':>8s} {'RMSE@1200':>10s} {'cover1s':>8s} "
        f"{'wall s':>8s} {'random RMSE (same calls)':>26s}"
    )
    for name, r in results.items():
        r1200 = f"{r['force_rmse_1200K']:.4f}" if r["force_rmse_1200K"] is not None else "n/a"
        print(
            f"{name:8s} {r['reference_calls']:6d} {r['force_rmse']:8.4f} {r1200:>10s} "
            f"{r['sigma_coverage_1']:8.2f} {r['wall_time_s']:8.1f} "
            f"{r['random_same_calls_force_rmse']:17.4f} "
            f"+- {r['random_same_calls_force_rmse_std']:.4f}"
        )
    out = HERE / "results" / "otf_vs_random.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
