"""Which structures to label? Selection methods against random, on an EMT Cu pool.

Pool: Langevin MD of fcc Cu under EMT at 300, 800, 1400 and 2000 K in three cells - bulk
(8 atoms), bulk with a vacancy (15 atoms) and a (111) slab with vacuum (16 atoms) - 450 frames
per (cell, temperature), 5400 in all. Held out: independent trajectories of the same 12 kinds,
25 frames each (300 frames).

For each method (random, FPS, k-means, k-DPP, D-optimal, the pool learner) and each training
size (25, 50, 100, 200) over 5 seeds, a linear ACE committee is fitted on the picked frames
and its held-out force RMSE is recorded. The pool learner starts from 25 FPS-picked frames and
adds batches of 25 (sigma score, k-DPP diversity), labelling through EMT. The time to pick 100
of 20 000 candidates is measured for every selector.

Run: ``nice python benchmarks/selection.py`` (a few minutes on 2 cores). Writes
``benchmarks/results/selection.json`` and ``selection.png`` and prints the table.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk, fcc111

from potlearn_ase.data.generate import reference_md_frames
from potlearn_ase.data.store import LabelStore
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.learners.pool import PoolLearner, PoolSettings
from potlearn_ase.learners.reference import Reference
from potlearn_ase.models import LinearFitConfig, fit_linear
from potlearn_ase.models.linear import design_rows
from potlearn_ase.selection.cli import get_selector
from potlearn_ase.selection.kernels import descriptor_features

OUT = Path(__file__).parent / "results"
SIZES = (25, 50, 100, 200)
SEEDS = range(5)
TEMPS = (300.0, 800.0, 1400.0, 2000.0)
METHODS = ("random", "fps", "kmeans", "dpp", "doptimal")


def cells():
    b = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    v = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 1))
    del v[5]
    s = fcc111("Cu", size=(2, 2, 4), a=3.61, vacuum=6.0, periodic=True)
    return {"bulk8": b, "vacancy15": v, "slab16": s}


def make(n_per: int, seed0: int) -> list:
    frames = []
    for c, (name, atoms) in enumerate(cells().items()):
        for t, T in enumerate(TEMPS):
            fr = reference_md_frames(T, n_per, every=5, atoms=atoms, rng=seed0 + 10 * c + t)
            for a in fr:
                a.info["kind"] = f"{name}@{int(T)}K"
            frames += fr
    return frames


def main() -> None:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    pool = make(450, 0)
    test = make(25, 1000)
    dt = time.perf_counter() - t0
    print(f"pool {len(pool)} frames, test {len(test)}, generated in {dt:.0f} s")
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=6, l_max=2))
    cfg = LinearFitConfig(n_members=8, stress_weight=0.0)
    X_mean = descriptor_features(pool, desc, reduce="mean")
    X_sum = descriptor_features(pool, desc, reduce="sum")
    A, y, _ = design_rows(desc, test, LinearFitConfig(energy_weight=0.0, stress_weight=0.0))
    # rows per structure: one energy row, then 3 n force rows; keep the force rows
    force_row = np.concatenate([np.r_[False, np.ones(3 * len(a), bool)] for a in test])
    A, y = A[force_row], y[force_row]

    def rmse(model) -> float:
        return float(np.sqrt(np.mean((A @ model.mean_coef().ravel() - y) ** 2)))

    results: dict[str, dict[int, list[float]]] = {m: {k: [] for k in SIZES} for m in METHODS}
    for method in METHODS:
        sel = get_selector(method)
        X = X_sum if method == "doptimal" else X_mean
        for seed in SEEDS:
            for k in SIZES:
                if method == "doptimal" and seed > 0:  # deterministic
                    results[method][k].append(results[method][k][0])
                    continue
                idx = sel.select(X, k, rng=seed)
                model = fit_linear(desc, [pool[i] for i in idx], cfg, rng=seed)
                results[method][k].append(rmse(model))
        print(f"{method:9s} done at {time.perf_counter() - t0:.0f} s")

    results["pool learner"] = {k: [] for k in SIZES}
    for seed in SEEDS:
        seen: dict[int, float] = {}

        def record(learner: PoolLearner, seen: dict[int, float] = seen) -> None:
            seen[learner.n_labelled] = rmse(learner.model)

        with tempfile.TemporaryDirectory() as tmp, LabelStore(Path(tmp) / "l.h5") as store:
            learner = PoolLearner(
                pool, desc, Reference.from_spec("emt"), store,
                settings=PoolSettings(n_seed=25, batch_size=25, budget=200, max_scored=1000,
                                      seed=seed),
                fit_config=cfg,
            )
            learner.run(callback=record)
        for k in SIZES:
            results["pool learner"][k].append(seen[k])
    print(f"pool learner done at {time.perf_counter() - t0:.0f} s")

    # time to pick 100 of 20 000 (pool features tiled with 1 % jitter to reach 20 000)
    rng = np.random.default_rng(0)
    big = np.tile(X_mean, (4, 1))[:20000]
    big = big + 0.01 * big.std(0) * rng.standard_normal(big.shape)
    big_sum = np.tile(X_sum, (4, 1))[:20000]
    big_sum = big_sum + 0.01 * big_sum.std(0) * rng.standard_normal(big_sum.shape)
    timing = {}
    for method in METHODS + ("dbscan",):
        X = big_sum if method == "doptimal" else big
        t = time.perf_counter()
        get_selector(method).select(X, 100, rng=0)
        timing[method] = time.perf_counter() - t
    t = time.perf_counter()
    get_selector("dpp", mode="map").select(big, 100, rng=0)
    timing["dpp (greedy MAP)"] = time.perf_counter() - t

    summary = {
        "pool_frames": len(pool),
        "test_frames": len(test),
        "descriptor": desc.todict(),
        "force_rmse_eV_per_A": {m: {str(k): v for k, v in r.items()} for m, r in results.items()},
        "select_100_of_20000_s": timing,
        "wall_time_s": time.perf_counter() - t0,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "selection.json").write_text(json.dumps(summary, indent=2))
    _plot(results, OUT / "selection.png")
    print("\nheld-out force RMSE (meV/A), mean +- std over 5 seeds")
    print(f"{'method':14s}" + "".join(f"{k:>16d}" for k in SIZES))
    for m, r in results.items():
        cells_ = "".join(f"{1e3 * np.mean(r[k]):9.1f} +-{1e3 * np.std(r[k]):5.1f}" for k in SIZES)
        print(f"{m:14s}{cells_}")
    print("\nseconds to pick 100 of 20 000:")
    for m, t in timing.items():
        print(f"  {m:18s}{t:7.2f}")


def _plot(results: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.0), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for m, r in results.items():
        mean = [1e3 * np.mean(r[k]) for k in SIZES]
        std = [1e3 * np.std(r[k]) for k in SIZES]
        ax.errorbar(SIZES, mean, yerr=std, marker="o", ms=3, capsize=2, label=m)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training structures")
    ax.set_ylabel("held-out force RMSE (meV/A)")
    ax.legend(fontsize=8)
    fig.savefig(path, format="png")


if __name__ == "__main__":
    main()
