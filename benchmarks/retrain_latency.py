"""Latency of a linear committee update after one new label, with 200 stored structures.

A linear committee is fitted to 200 EMT-labelled fcc Cu structures (32 atoms). Then, one
new labelled structure at a time, ``LinearCommittee.update([atoms])`` adds its rows to the
normal equations, re-solves the posterior (evidence maximisation) and redraws the members:
what an on-the-fly learner does after each reference call. The latency is timed for
``--updates`` new labels (median, max), next to a refit from scratch on all 201 structures,
which is what the update avoids. The updated model is checked against that refit. Prints a
table and writes ``benchmarks/results/retrain_latency.json``. Target: <= 1 s per update.

Usage: ``python benchmarks/retrain_latency.py [--updates N] [--stored N]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TARGET_S = 1.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stored", type=int, default=200)
    p.add_argument("--updates", type=int, default=10)
    args = p.parse_args()

    import torch

    from potlearn_ase.data.generate import reference_md_frames
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.models import LinearFitConfig, fit_linear

    temps = (300, 800, 1200)
    per_t = -(-args.stored // len(temps))
    stored = sum(
        (reference_md_frames(T, per_t, every=5, rng=k) for k, T in enumerate(temps)), []
    )[: args.stored]
    new = reference_md_frames(1000, args.updates, every=5, rng=99)
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=8, l_max=2))
    cfg = LinearFitConfig(n_members=8)
    t0 = time.perf_counter()
    model = fit_linear(desc, stored, cfg, rng=0)
    fit_s = time.perf_counter() - t0
    model.update([new[0]], rng=1)  # warm-up (first calls allocate); not counted
    latencies = []
    for k, atoms in enumerate(new[1:], start=2):
        t0 = time.perf_counter()
        model.update([atoms], rng=k)
        latencies.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    refit = fit_linear(desc, stored + new, cfg, rng=0)
    refit_s = time.perf_counter() - t0
    # the updated posterior is the refit's (same normal equations, summed in another order)
    mean_diff = float(
        np.abs(model.posterior.mean - refit.posterior.mean).max()
        / np.abs(refit.posterior.mean).max()
    )
    f_upd = model.predict(new[-1])["forces"].mean(0)
    f_ref = refit.predict(new[-1])["forces"].mean(0)
    force_diff = float(np.abs(f_upd - f_ref).max())
    row = {
        "stored_structures": len(stored),
        "atoms_per_structure": len(stored[0]),
        "n_params": int(model.normal_equations.n_params),
        "members": cfg.n_members,
        "updates_timed": len(latencies),
        "update_median_s": float(np.median(latencies)),
        "update_max_s": float(np.max(latencies)),
        "initial_fit_s": fit_s,
        "refit_from_scratch_s": refit_s,
        "posterior_mean_rel_diff_vs_refit": mean_diff,
        "mean_force_diff_vs_refit_eV_A": force_diff,
        "meets_target": float(np.max(latencies)) <= TARGET_S,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    print(f"\nLinear committee update after one new label ({len(stored)} stored structures of "
          f"{len(stored[0])} atoms, {row['n_params']} parameters, {cfg.n_members} members)")
    print(f"{'update median':<28}{row['update_median_s'] * 1e3:10.1f} ms")
    print(f"{'update max':<28}{row['update_max_s'] * 1e3:10.1f} ms   (target <= "
          f"{TARGET_S * 1e3:.0f} ms)")
    print(f"{'refit from scratch':<28}{refit_s * 1e3:10.1f} ms")
    print(f"{'updated vs refit':<28}  posterior mean rel. diff {mean_diff:.1e}, "
          f"mean forces {force_diff:.1e} eV/A")
    out = HERE / "results" / "retrain_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(row, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
