"""Reference workers: wall time of one on-the-fly run with the MD waiting for each label
(``reference.workers: 0``) and with it going on (``workers: 2``), side by side.

The reference is ASE's EMT with ``--delay`` seconds of sleep added to every calculation (a
stand-in for a DFT call, which costs far more than an MD step of the committee). Both runs use
the same ``potlearn otf`` configuration: fcc Cu (8 atoms), a temperature ramp from 300 to
1200 K over ``--steps`` steps, the adaptive trigger with ``min_gap: 5``, two starting labels.
For each, the table gives the wall time of ``run_otf`` (fit, worker start-up and final labels
included), labels and reference seconds, rejected steps (with workers: trust-window waits
included), how far the MD went on while a label was computed (median of ``md_step_arrival -
md_step``), and the force RMSE of the final committee on independent EMT MD frames at 300,
700 and 1200 K, so that a faster run that learned less would show. Timings on a loaded machine
are noisy: the runs are made one after the other in one process and their ratio is reported.
Writes ``benchmarks/results/otf_async.json``.

Usage: ``python benchmarks/otf_async.py [--steps 1000] [--delay 0.5] [--workers 2]``
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase.calculators.emt import EMT

HERE = Path(__file__).resolve().parent


class SlowEMT(EMT):
    """ASE's EMT, ``delay`` seconds slower per calculation."""

    def __init__(self, delay: float = 0.5, **kwargs: Any):
        super().__init__(**kwargs)
        self.delay = float(delay)

    def calculate(self, *args: Any, **kwargs: Any) -> None:
        time.sleep(self.delay)
        super().calculate(*args, **kwargs)


def config(run_dir: Path, steps: int, workers: int) -> dict[str, Any]:
    return {
        "structure": {"bulk": "Cu", "crystalstructure": "fcc", "a": 3.61, "cubic": True,
                      "repeat": [2, 1, 1]},
        "reference": {"calculator": "emt", "workers": workers},
        "model": {"descriptor": {"cutoff": 4.0, "n_radial": 4, "l_max": 1},
                  "fit": {"n_members": 8}},
        "md": {"steps": steps, "temperature_K": [300.0, 1200.0], "seed": 0,
               "trajectory_interval": 10},
        "trigger": {"kind": "adaptive", "factor": 1.2, "min_gap": 5, "min_threshold": 0.001},
        "initial": {"n_labels": 2, "rattle": 0.05},
        "validation": None,
        "run_dir": str(run_dir),
        "progress": False,
    }


def one_run(run_dir: Path, steps: int, workers: int, delay: float,
            test: list) -> dict[str, Any]:
    from potlearn_ase.calculators import load
    from potlearn_ase.data.store import LabelStore
    from potlearn_ase.learners.reference import Reference
    from potlearn_ase.learners.reference_specs import reference_kwargs
    from potlearn_ase.learners.run import run_otf

    kwargs = reference_kwargs({"calculator": "emt", "workers": workers})
    kwargs["factory"] = functools.partial(SlowEMT, delay)
    ref = Reference(**kwargs)
    t0 = time.perf_counter()
    summary = run_otf(config(run_dir, steps, workers), reference=ref)
    wall = time.perf_counter() - t0
    with LabelStore(run_dir / "labels.h5", mode="r") as store:
        provs = [store.provenance(i) for i in range(len(store))]
    moved = [p["md_step_arrival"] - p["md_step"] for p in provs if "md_step_arrival" in p]
    calc = load(run_dir / "model.pt")
    err = []
    for a in test:
        b = a.copy()
        b.calc = calc
        err.append((b.get_forces() - a.get_forces()).ravel())
    return {
        "workers": workers,
        "wall_time_s": wall,
        "labels": summary["labels"],
        "reference_calls": summary["reference_calls"],
        "reference_time_s": summary["reference_time_s"],
        "rejected_steps": summary["rejected_steps"],
        "md_steps_during_label_median": float(np.median(moved)) if moved else 0.0,
        "labels_waited_for": int(sum(m == 0 for m in moved)) if moved else None,
        "force_rmse_eV_A": float(np.sqrt(np.mean(np.concatenate(err) ** 2))),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--delay", type=float, default=0.5, help="seconds added per reference call")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "results" / "otf_async.json"))
    args = p.parse_args(argv)

    from ase.build import bulk

    from potlearn_ase.data.generate import reference_md_frames

    start = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    test = sum((reference_md_frames(T, 5, atoms=start, rng=50 + k)
                for k, T in enumerate((300, 700, 1200))), [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="otf-async-") as tmp:
        for w in (0, args.workers):
            rows.append(one_run(Path(tmp) / f"workers{w}", args.steps, w, args.delay, test))
    sync, par = rows
    report = {"steps": args.steps, "delay_s": args.delay, "atoms": len(start), "runs": rows,
              "wall_time_ratio": sync["wall_time_s"] / par["wall_time_s"]}
    cols = ["workers", "wall_time_s", "labels", "reference_calls", "reference_time_s",
            "rejected_steps", "md_steps_during_label_median", "labels_waited_for",
            "force_rmse_eV_A"]
    print(f"{'quantity':<30} " + " ".join(f"{'workers=' + str(r['workers']):>12}" for r in rows))
    for c in cols[1:]:
        vals = [r[c] for r in rows]
        shown = [f"{v:>12.3f}" if isinstance(v, float) else f"{v!s:>12}" for v in vals]
        print(f"{c:<30} " + " ".join(shown))
    print(f"{'wall time ratio (0 / N)':<30} {report['wall_time_ratio']:>12.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
