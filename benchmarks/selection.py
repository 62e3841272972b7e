"""Which structures to label? Learning curves of the selection methods on an EMT Cu pool.

Pool (5200 frames): Langevin MD of fcc Cu under EMT at 300, 800, 1400 and 2000 K in three
cells - bulk (8 atoms), bulk with a vacancy (15 atoms) and a (111) slab with vacuum (16 atoms)
- a frame every 5 steps. Like a real MD archive it is dominated by bulk frames: 69 % bulk
(mostly at 300-800 K), 17 % vacancy, 13 % surface (see ``POOL``).

Four test sets from trajectories independent of the pool (a frame every 20 steps), in two
roles:

* **tuning** sets (seeds 50 000 and 90 000, sampled from the first MD step): the model, the
  fit weights and the pool learner's settings were chosen while looking at these. ``tuning
  iid`` (300 frames) has the pool's own composition; ``tuning stratified`` (288 frames) equal
  counts of six regimes - bulk at 300, 800, 1400 and 2000 K, vacancy and surface (vacancy and
  surface frames spread evenly over temperatures).
* **held-out** sets (seeds 700 000 and 800 000, never looked at while tuning; each
  trajectory is first equilibrated for ``EQUILIBRATION`` steps - 400 fs, 8 Langevin friction
  times - and only then sampled): ``held-out stratified`` and ``held-out iid``, the same
  compositions as the tuning sets.

The targets (DPP and FPS below random, the pool learner below both, at every size) are judged
on the **held-out stratified** set: a user of a potential trained from this pool needs it to
work in every regime, not only in the most common one; and a set no setting was tuned on says
how the methods do on new data. The tables of the other sets are printed too.

Every method gets the same model (linear ACE, body order 4, 8 radial functions, l_max 3:
272 features; ridge parameter by evidence; energy weight 30, force weight 1), the same
budgets (25, 50, 100, 200 structures), the same test sets, over 5 seeds: random, FPS,
k-means, k-DPP (on mean structure features), D-optimal (maxvol on summed features) and
variance reduction (transductive experimental design on mean structure features), which pick
from the pool at once, and the pool learner (:class:`PoolLearner`: 10 FPS seeds, then
batches of 5, each structure the one whose label most reduces the kernel variance summed over
the whole pool weighted by the squared extrapolation grade), which labels through EMT and
retrains as it goes. A fit on the whole pool gives the model's floor. The design rows of
every pool frame are computed once and the fits of the one-shot methods solve the same
posterior as ``fit_linear`` (checked at start-up).

Run: ``nice python benchmarks/selection.py`` (about 10 min on 2 idle cores) or ``--quick``
(a 520-frame pool, 2 seeds, sizes 25 and 50; about a minute). Writes
``benchmarks/results/selection.json`` (``selection_quick.json``) and ``.png`` and prints the
tables.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk, fcc111

from potlearn_ase.cli.select import get_selector
from potlearn_ase.data.generate import reference_md_frames
from potlearn_ase.data.store import LabelStore
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.learners.pool import PoolConfig, PoolLearner
from potlearn_ase.learners.reference import Reference
from potlearn_ase.models import LinearFitConfig, fit_linear
from potlearn_ase.models.linear import design_rows
from potlearn_ase.models.posterior import NormalEquations, solve_posterior
from potlearn_ase.selection.kernels import descriptor_features

OUT = Path(__file__).parent / "results"
TEMPS = (300, 800, 1400, 2000)
POOL = {
    "bulk": (1200, 1100, 800, 500),
    "vacancy": (300, 250, 200, 150),
    "surface": (250, 200, 150, 100),
}
STRATIFIED = {"bulk": (48, 48, 48, 48), "vacancy": (12,) * 4, "surface": (12,) * 4}
#: MD steps run and discarded before a held-out trajectory is sampled (2 fs steps)
EQUILIBRATION = 200
#: the set the targets are judged on, and the sets the settings were tuned on
JUDGED = "held-out stratified"
TUNING = ("tuning stratified", "tuning iid")
METHODS = ("random", "fps", "kmeans", "dpp", "doptimal", "variance")
DESC = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=8, l_max=3, body_order=4))
FIT = LinearFitConfig(n_members=8, stress_weight=0.0).fixed()  # weights 30, 1, 0
POOL_SETTINGS = dict(n_seed=10, batch_size=5, score="gamma", diversity="variance", max_scored=None)


def cells() -> dict:
    b = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    v = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 1))
    del v[5]
    s = fcc111("Cu", size=(2, 2, 4), a=3.61, vacuum=6.0, periodic=True)
    return {"bulk": b, "vacancy": v, "surface": s}


def _trajectory(job: tuple) -> list:
    cell, T, n, every, seed, burn = job
    skip = -(-burn // every)  # whole frames covering the equilibration steps
    frames = reference_md_frames(T, n + skip, every=every, atoms=cells()[cell], rng=seed)[skip:]
    for a in frames:
        a.info["regime"] = f"bulk {T} K" if cell == "bulk" else cell
    return frames


def make(counts: dict, every: int, seed0: int, procs, chunk: int, burn: int = 0) -> list:
    """Frames of ``counts[cell][temperature]``, in trajectories of at most ``chunk`` frames,
    each sampled after ``burn`` MD steps of equilibration."""
    jobs = []
    for c, (cell, ns) in enumerate(counts.items()):
        for t, (T, n) in enumerate(zip(TEMPS, ns)):
            for j, start in enumerate(range(0, n, chunk)):
                jobs.append(
                    (cell, T, min(chunk, n - start), every, seed0 + 1000 * c + 100 * t + j, burn)
                )
    return [a for fr in procs.map(_trajectory, jobs) for a in fr]


def _rows(frames: list) -> list:
    torch.set_num_threads(1)
    cfg = LinearFitConfig(energy_weight=1.0, force_weight=1.0, stress_weight=0.0)
    return [design_rows(DESC, [a], cfg)[:2] for a in frames]


def all_rows(frames: list, procs) -> list:
    """Unweighted ``(A, y)`` design rows of each frame (its energy row first)."""
    chunks = [frames[i : i + 25] for i in range(0, len(frames), 25)]
    return [r for part in procs.map(_rows, chunks) for r in part]


def fit_mean(rows: list, idx) -> np.ndarray:
    """Posterior-mean coefficients of ``fit_linear(DESC, frames[idx], FIT)``, from cached rows."""
    ne = NormalEquations(DESC.n_features + 1)
    for i in idx:
        A, y = rows[i]
        w = np.r_[FIT.energy_weight**2, np.full(len(y) - 1, FIT.force_weight**2)]
        ne.add(A, y, w)
    unreg = np.zeros(DESC.n_features + 1, dtype=bool)
    unreg[0] = True
    post = solve_posterior(
        ne, lam=FIT.lam, sigma_floor=FIT.sigma_floor * FIT.force_weight, unregularised=unreg
    )
    return post.mean


class Tests:
    """Force rows of the test sets; RMSE (eV/A) of coefficients on each, and per regime."""

    def __init__(self, sets: dict, procs):
        self.sets = {}
        for name, frames in sets.items():
            rows = all_rows(frames, procs)
            A = np.concatenate([r[0][1:] for r in rows])
            y = np.concatenate([r[1][1:] for r in rows])
            reg = np.concatenate([[a.info["regime"]] * 3 * len(a) for a in frames])
            self.sets[name] = (A, y, reg)

    def __call__(self, coef: np.ndarray) -> dict:
        out = {}
        for name, (A, y, reg) in self.sets.items():
            e2 = (A @ coef.ravel() - y) ** 2
            out[name] = float(np.sqrt(e2.mean()))
            if name.endswith("stratified"):
                out.setdefault("regimes", {})[name] = {
                    r: float(np.sqrt(e2[reg == r].mean())) for r in np.unique(reg)
                }
        return out


def run_pool_learner(pool: list, tests: Tests, sizes, seed: int) -> dict:
    seen: dict[int, dict] = {}

    def record(learner: PoolLearner) -> None:
        if learner.n_labelled in sizes:
            seen[learner.n_labelled] = tests(learner.model.mean_coef())

    settings = PoolConfig(budget=max(sizes), seed=seed, **POOL_SETTINGS)
    with tempfile.TemporaryDirectory() as tmp, LabelStore(Path(tmp) / "l.h5") as store:
        learner = PoolLearner(
            pool, DESC, Reference.from_spec("emt"), store, settings=settings, fit_config=FIT
        )
        learner.run(callback=record)
    return seen


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small pool, 2 seeds, sizes 25, 50")
    args = ap.parse_args(argv)
    scale, sizes, seeds = (
        (0.1, (25, 50), range(2)) if args.quick else (1.0, (25, 50, 100, 200), range(5))
    )
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    pool_counts = {k: tuple(int(round(scale * n)) for n in v) for k, v in POOL.items()}
    total = sum(map(sum, pool_counts.values()))
    iid = {k: tuple(int(round(300 * scale * n / total)) for n in v) for k, v in pool_counts.items()}
    strat = {k: tuple(int(round(scale * n)) for n in v) for k, v in STRATIFIED.items()}
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as procs:
        pool = make(pool_counts, 5, 0, procs, chunk=200)
        test = {
            JUDGED: make(strat, 20, 700_000, procs, chunk=25, burn=EQUILIBRATION),
            "held-out iid": make(iid, 20, 800_000, procs, chunk=25, burn=EQUILIBRATION),
            "tuning stratified": make(strat, 20, 90_000, procs, chunk=25),
            "tuning iid": make(iid, 20, 50_000, procs, chunk=25),
        }
        t_gen = time.perf_counter() - t0
        sets = ", ".join(f"{len(v)} {k}" for k, v in test.items())
        print(f"pool {len(pool)} frames; test sets {sets}; generated in {t_gen:.0f} s", flush=True)
        rows = all_rows(pool, procs)
        tests = Tests(test, procs)
    print(
        f"design rows of pool and tests at {time.perf_counter() - t0:.0f} s "
        f"({DESC.n_features} features)",
        flush=True,
    )
    check = np.arange(0, len(pool), max(1, len(pool) // 40))
    ref = fit_linear(DESC, [pool[i] for i in check], FIT, rng=0).mean_coef().ravel()
    assert np.allclose(fit_mean(rows, check), ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    X_mean, X_sum = (descriptor_features(pool, DESC, reduce=r) for r in ("mean", "sum"))
    whole_pool = tests(fit_mean(rows, range(len(pool))))  # the model's floor on this pool

    results: dict[str, dict[int, list[dict]]] = {}
    for method in METHODS:
        sel = get_selector(method)
        X = X_sum if method == "doptimal" else X_mean
        results[method] = {k: [] for k in sizes}
        for seed in seeds:
            for k in sizes:
                idx = sel.select(X, k, rng=seed)
                results[method][k].append(tests(fit_mean(rows, idx)))
        print(f"{method:12s} done at {time.perf_counter() - t0:.0f} s", flush=True)
    results["pool learner"] = {k: [] for k in sizes}
    for seed in seeds:
        seen = run_pool_learner(pool, tests, sizes, seed)
        for k in sizes:
            results["pool learner"][k].append(seen[k])
    print(f"pool learner done at {time.perf_counter() - t0:.0f} s", flush=True)
    timing = {} if args.quick else select_timings(X_mean, X_sum)

    verdict = targets(results, sizes)
    summary = {
        "pool_frames": len(pool),
        "pool_composition": pool_counts,
        "test_frames": {k: len(v) for k, v in test.items()},
        "targets_judged_on": JUDGED,
        "tuning_sets": list(TUNING),
        "held_out_equilibration_steps": EQUILIBRATION,
        "descriptor": DESC.todict(),
        "n_features": DESC.n_features,
        "fit": {k: v for k, v in vars(FIT).items()},
        "pool_learner": POOL_SETTINGS,
        "force_rmse_eV_per_A": {m: {str(k): v for k, v in r.items()} for m, r in results.items()},
        "whole_pool_eV_per_A": whole_pool,
        "targets_met": verdict,
        "select_100_of_20000_s": timing,
        "wall_time_s": time.perf_counter() - t0,
    }
    OUT.mkdir(exist_ok=True)
    stem = "selection_quick" if args.quick else "selection"
    (OUT / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    _plot(results, sizes, OUT / f"{stem}.png")
    for name in test:
        role = (
            "held out, targets judged here" if name == JUDGED
            else "settings tuned on it" if name in TUNING else "held out"
        )
        print(f"\n{name} test set ({role}): force RMSE (meV/A), mean +- std over "
              f"{len(seeds)} seeds")
        print(f"{'method':14s}" + "".join(f"{k:>15d}" for k in sizes))
        for m, r in results.items():
            vals = [[1e3 * x[name] for x in r[k]] for k in sizes]
            print(f"{m:14s}" + "".join(f"{np.mean(v):8.2f} +-{np.std(v):5.2f}" for v in vals))
    floor = ", ".join(f"{k} {1e3 * whole_pool[k]:.2f}" for k in test)
    print(f"\nall {len(pool)} pool frames (the model's floor), meV/A: {floor}")
    k_mid = sizes[len(sizes) // 2]
    print(f"\n{JUDGED} set per regime at {k_mid} structures (meV/A, mean over seeds):")
    regimes = sorted(results["random"][k_mid][0]["regimes"][JUDGED])
    print(f"{'method':14s}" + "".join(f"{r:>13s}" for r in regimes))
    for m, r in results.items():
        print(
            f"{m:14s}"
            + "".join(
                f"{1e3 * np.mean([x['regimes'][JUDGED][g] for x in r[k_mid]]):13.2f}"
                for g in regimes
            )
        )
    print(f"\ntargets ({JUDGED} set, mean over seeds):")
    for key, ok in verdict.items():
        print(f"  {key:40s}{'met' if all(ok.values()) else 'NOT met'}  {ok}")
    if timing:
        print("\nseconds to pick 100 of 20 000:")
        for m, t in timing.items():
            print(f"  {m:18s}{t:7.2f}")
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")


def targets(results: dict, sizes) -> dict:
    """Which targets hold at each size, on the held-out stratified set."""
    mean = {m: {k: np.mean([x[JUDGED] for x in r[k]]) for k in sizes} for m, r in results.items()}
    pool = mean["pool learner"]
    return {
        "dpp < random": {k: bool(mean["dpp"][k] < mean["random"][k]) for k in sizes},
        "fps < random": {k: bool(mean["fps"][k] < mean["random"][k]) for k in sizes},
        "pool learner < min(dpp, fps)": {
            k: bool(pool[k] < min(mean["dpp"][k], mean["fps"][k])) for k in sizes
        },
    }


def select_timings(X_mean: np.ndarray, X_sum: np.ndarray) -> dict:
    """Seconds to pick 100 of 20 000 candidates (pool features tiled with 1 % jitter)."""
    rng = np.random.default_rng(0)
    reps = int(np.ceil(20000 / len(X_mean)))
    big, big_sum = (np.tile(X, (reps, 1))[:20000] for X in (X_mean, X_sum))
    big = big + 0.01 * big.std(0) * rng.standard_normal(big.shape)
    big_sum = big_sum + 0.01 * big_sum.std(0) * rng.standard_normal(big_sum.shape)
    timing = {}
    for method in METHODS + ("dbscan",):
        t = time.perf_counter()
        get_selector(method).select(big_sum if method == "doptimal" else big, 100, rng=0)
        timing[method] = time.perf_counter() - t
    t = time.perf_counter()
    get_selector("dpp", mode="map").select(big, 100, rng=0)
    timing["dpp (greedy MAP)"] = time.perf_counter() - t
    return timing


def _plot(results: dict, sizes, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [k for k in results["random"][sizes[0]][0] if k != "regimes"]
    fig = Figure(figsize=(9.0, 7.2), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    for n, name in enumerate(names):
        ax = fig.add_subplot(2, 2, n + 1)
        for m, r in results.items():
            v = [[1e3 * x[name] for x in r[k]] for k in sizes]
            ax.errorbar(
                sizes, np.mean(v, 1), yerr=np.std(v, 1), marker="o", ms=3, capsize=2, label=m
            )
        ax.set_xscale("log")
        ax.set_xticks(list(sizes), [str(k) for k in sizes])
        ax.set_xlabel("training structures")
        ax.set_ylabel("held-out force RMSE (meV/A)")
        ax.set_title(f"{name} test set" + (" (targets)" if name == JUDGED else ""))
        ax.legend(fontsize=7)
    fig.savefig(path, format="png")


if __name__ == "__main__":
    main()
