"""Many-body ACE descriptor: size, fit time, accuracy on the Zuo et al. data, committee cost.

For the many-body ACE (``FullACEDescriptor``) and, side by side, the power-spectrum ACE
(``ACEDescriptor``, the project's previous default):

* feature count (per correlation order for the many-body basis);
* wall time of the default linear fit (``fit_linear``, 8 members, cross-validated weights) on
  ``Mo_train.xyz`` and ``Li_train.xyz``, and the test energy (meV/atom) and force (eV/A) RMSE
  of the committee mean on ``Mo_test.xyz`` / ``Li_test.xyz``;
* wall time of a two-element fit: 120 EMT Cu-Au structures of 32 to 54 atoms;
* cost per atom of energy + forces + spread of a linear committee of 8 members over 1 member,
  on bcc Mo cells of 250 and 432 atoms (best of several calls, in one process).

Prints a table and writes ``benchmarks/results/ace_descriptor.json``. Timings on a shared
machine are noisy: compare the ratios, which come from runs made side by side.

Usage: ``python benchmarks/ace_descriptor.py [--skip-li] [--ace '{"correlation_order": 4}']``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = Path("/work/shared/data/zuo2020")


def make(kind: str, elements: list[str], ace: dict):
    from potlearn_ase.descriptors import (
        ACEConfig,
        ACEDescriptor,
        FullACEConfig,
        FullACEDescriptor,
    )

    if kind == "power_spectrum":
        return ACEDescriptor(elements, ACEConfig())
    return FullACEDescriptor(elements, FullACEConfig(**ace))


def rmse(model, frames) -> tuple[float, float]:
    de, df = [], []
    for a in frames:
        p = model.predict(a, stress=False)
        de.append((p["energy"].mean() - a.get_potential_energy()) / len(a))
        df.append((p["forces"].mean(0) - a.get_forces()).ravel())
    return 1000 * float(np.sqrt(np.mean(np.square(de)))), float(
        np.sqrt(np.mean(np.square(np.concatenate(df))))
    )


def zuo(kind: str, element: str, ace: dict) -> dict:
    from ase.io import read

    from potlearn_ase.models import LinearFitConfig, fit_linear

    train = read(DATA / f"{element}_train.xyz", ":")
    test = read(DATA / f"{element}_test.xyz", ":")
    desc = make(kind, [element], ace)
    t0 = time.perf_counter()
    model = fit_linear(desc, train, LinearFitConfig(weights="cv"), rng=0)
    fit_s = time.perf_counter() - t0
    e, f = rmse(model, test)
    counts = getattr(desc, "counts", {})
    return {"features": desc.n_features, "counts": counts, "fit_s": fit_s,
            "energy_rmse_meV_atom": e, "force_rmse_eV_A": f}


def cuau_frames(n: int = 120) -> list:
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(0)
    frames = []
    for k in range(n):
        reps = (2, 2, 2) if k % 2 == 0 else (3, 3, 1)  # 32 or 36 atoms, fcc; then 54 (bcc-ish)
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat(reps)
        if k % 3 == 0:
            atoms = bulk("Cu", "bcc", a=3.0, cubic=True).repeat((3, 3, 3))
        atoms.numbers[rng.random(len(atoms)) < 0.4] = 79
        atoms.rattle(0.1, seed=k)
        atoms.calc = EMT()
        labels = dict(energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                      stress=atoms.get_stress())
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    return frames


def two_element_fit(kind: str, ace: dict) -> dict:
    from potlearn_ase.models import LinearFitConfig, fit_linear

    frames = cuau_frames()
    desc = make(kind, ["Cu", "Au"], ace)
    t0 = time.perf_counter()
    fit_linear(desc, frames, LinearFitConfig(weights="cv"), rng=0)
    return {"features": desc.n_features, "structures": len(frames),
            "atoms": sum(len(a) for a in frames), "fit_s": time.perf_counter() - t0}


def committee_cost(kind: str, ace: dict) -> dict:
    """us per atom per call of 1 and 8 members, and their ratio, on bcc Mo cells."""
    from ase.build import bulk

    from potlearn_ase.calculators import CommitteeCalculator
    from potlearn_ase.models import LinearFitConfig, fit_linear

    train = []
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(1)
    for k in range(6):  # speed does not depend on the fit: a small synthetic one
        a = bulk("Mo", "bcc", a=3.16, cubic=True).repeat((2, 2, 2))
        a.rattle(0.1, seed=k)
        a.calc = SinglePointCalculator(a, energy=float(rng.normal()),
                                       forces=rng.normal(size=(len(a), 3)))
        train.append(a)
    out = {}
    calcs = {}
    for M in (1, 8):
        desc = make(kind, ["Mo"], ace)
        cfg = LinearFitConfig(n_members=M, stress_weight=0.0)
        calcs[M] = CommitteeCalculator(model=fit_linear(desc, train, cfg, rng=0))
    for reps in (5, 6):  # 250 and 432 atoms
        atoms = bulk("Mo", "bcc", a=3.16, cubic=True).repeat((reps,) * 3)
        atoms.rattle(0.05, seed=2)
        times = {M: [] for M in calcs}
        for _ in range(6):  # interleaved, so both see the same load
            for M, calc in calcs.items():
                atoms.calc = calc
                atoms.positions[0, 0] += 1e-4  # always a new structure: no cached result
                t0 = time.perf_counter()
                atoms.get_forces()
                times[M].append(time.perf_counter() - t0)
        best = {M: min(t[1:]) / len(atoms) * 1e6 for M, t in times.items()}
        out[len(atoms)] = {"us_atom_M1": best[1], "us_atom_M8": best[8],
                           "ratio_M8_over_M1": best[8] / best[1]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ace", default="{}", help="FullACEConfig keys as JSON")
    ap.add_argument("--skip-li", action="store_true")
    ap.add_argument("--skip-old", action="store_true", help="no power-spectrum rows")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    ace = json.loads(args.ace)
    kinds = ["ace"] + ([] if args.skip_old else ["power_spectrum"])
    elements = ["Mo"] + ([] if args.skip_li else ["Li"])
    res: dict = {"ace_config": ace, "torch_threads": 1}
    for kind in kinds:
        res[kind] = {el: zuo(kind, el, ace) for el in elements}
        res[kind]["CuAu_fit"] = two_element_fit(kind, ace)
        res[kind]["committee"] = committee_cost(kind, ace)
    print(f"{'descriptor':16} {'set':8} {'K':>5} {'fit s':>7} {'E meV/at':>9} {'F eV/A':>7}")
    for kind in kinds:
        for el in elements:
            r = res[kind][el]
            print(f"{kind:16} {el:8} {r['features']:5d} {r['fit_s']:7.1f} "
                  f"{r['energy_rmse_meV_atom']:9.2f} {r['force_rmse_eV_A']:7.3f}")
        r = res[kind]["CuAu_fit"]
        print(f"{kind:16} {'CuAu':8} {r['features']:5d} {r['fit_s']:7.1f}   "
              f"({r['structures']} structures, {r['atoms']} atoms)")
        for n, c in res[kind]["committee"].items():
            print(f"{kind:16} {n:5d} atoms: {c['us_atom_M1']:8.1f} us/atom (M=1) "
                  f"{c['us_atom_M8']:8.1f} (M=8)  ratio {c['ratio_M8_over_M1']:.2f}")
    out = HERE / "results" / "ace_descriptor.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
