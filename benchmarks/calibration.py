"""Does the stated sigma cover the true error as often as it claims? In and out of distribution.

Committees are fitted to EMT fcc Cu bulk MD (32 atoms, 300/800/1200 K) and tested on new
reference MD in the training conditions (300, 700, 1200 K) and outside them: hotter bulk
(1600 K), a vacancy and a (001) surface slab (both at 600 K). For each test set the table gives
the force RMSE, the median stated sigma, the fraction of force components with
``|error| <= sigma`` (a Gaussian one-sigma interval claims 68.3 %) and ``<= 2 sigma`` (95.4 %),
and the share of atoms whose extrapolation grade is above 1 (outside the training span).

Calibrations compared side by side on the same fits:

* linear ACE, raw posterior spread (``alpha = 1``);
* linear ACE, cross-validated on its own training data (no extra reference calls);
* linear ACE, calibrated on an independent validation set;
* neural committee (8 members), calibrated on the validation set.

Prints a table and writes ``benchmarks/results/calibration.json``.

Usage: ``python benchmarks/calibration.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ONE, TWO = 0.6826894921370859, 0.9544997361036416


def _test_sets(n: int) -> dict[str, list]:
    from ase.build import bulk

    from potlearn_ase.data.generate import reference_md_frames

    vac = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    del vac[0]
    slab = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 3))
    slab.center(vacuum=6.0, axis=2)
    return {
        "bulk 300 K": reference_md_frames(300, n, every=20, rng=101),
        "bulk 700 K": reference_md_frames(700, n, every=20, rng=102),
        "bulk 1200 K": reference_md_frames(1200, n, every=20, rng=103),
        "bulk 1600 K (hotter)": reference_md_frames(1600, n, every=20, rng=104),
        "vacancy 600 K": reference_md_frames(600, n, every=20, atoms=vac, rng=105),
        "surface 600 K": reference_md_frames(600, n, every=20, atoms=slab, rng=106),
    }


def _evaluate(model, alpha: float, frames: list) -> dict[str, float]:
    err, spread, grades = [], [], []
    for atoms in frames:
        pred = model.predict(atoms, stress=False)
        err.append((pred["forces"].mean(0) - atoms.get_forces()).ravel())
        spread.append(alpha * pred["forces"].std(0).ravel())
        if "extrapolation_grade" in pred:
            grades.append(pred["extrapolation_grade"])
    e, s = np.abs(np.concatenate(err)), np.concatenate(spread)
    out = {
        "force_rmse": float(np.sqrt(np.mean(e**2))),
        "median_sigma": float(np.median(s)),
        "coverage_1sigma": float(np.mean(e <= s)),
        "coverage_2sigma": float(np.mean(e <= 2 * s)),
    }
    if grades:
        g = np.concatenate(grades)
        out["frac_gamma_above_1"] = float(np.mean(g > 1.0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer frames per set")
    args = ap.parse_args()
    import torch

    from potlearn_ase.data.generate import reference_md_frames
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.models import (
        LinearFitConfig,
        attach_active_set,
        cross_validated_calibration,
        fit_calibration,
        fit_linear,
    )
    from potlearn_ase.training.trainer import NeuralTrainConfig, train_neural

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    n = 4 if args.quick else 10
    t0 = time.perf_counter()
    train = sum(
        (reference_md_frames(T, n, every=20, rng=k) for k, T in enumerate((300, 800, 1200))), []
    )
    val = sum(
        (
            reference_md_frames(T, max(2, n // 2), every=20, rng=50 + k)
            for k, T in enumerate((500, 1000))
        ),
        [],
    )
    tests = _test_sets(n)
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=8, l_max=2))
    linear = attach_active_set(fit_linear(desc, train, LinearFitConfig(n_members=8), rng=0), train)
    neural, _ = train_neural(
        desc, train, val, NeuralTrainConfig(n_members=8, epochs=60 if args.quick else 300, seed=0)
    )
    neural.active_set = linear.active_set
    setups = {
        "linear, raw posterior": (linear, 1.0),
        "linear, cross-validated": (linear, cross_validated_calibration(linear, train)),
        "linear, validation set": (linear, fit_calibration(linear, val)),
        "neural, validation set": (neural, fit_calibration(neural, val)),
    }
    rows = []
    for name, (model, alpha) in setups.items():
        for test, frames in tests.items():
            rows.append(
                {"setup": name, "alpha": alpha, "test": test, **_evaluate(model, alpha, frames)}
            )
    wall = time.perf_counter() - t0

    head = (
        f"{'setup':26s} {'alpha':>6s}  {'test set':22s} {'RMSE':>7s} {'sigma':>7s} "
        f"{'<=1s':>6s} {'<=2s':>6s} {'g>1':>6s}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        g = r.get("frac_gamma_above_1")
        print(
            f"{r['setup']:26s} {r['alpha']:6.2f}  {r['test']:22s} {r['force_rmse']:7.4f} "
            f"{r['median_sigma']:7.4f} {r['coverage_1sigma']:6.3f} {r['coverage_2sigma']:6.3f} "
            f"{'' if g is None else f'{g:6.3f}':>6s}"
        )
    print(
        f"(targets: <=1s {ONE:.3f}, <=2s {TWO:.3f}; RMSE and sigma in eV/A; g>1: share of atoms "
        f"with extrapolation grade above 1)  wall {wall:.0f} s"
    )
    out = HERE / "results" / "calibration.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "wall_time_s": wall, "quick": args.quick}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
