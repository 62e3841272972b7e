"""Zuo et al. (2020) Mo and Li: potlearn against the authors' SNAP and quadratic SNAP.

For each element the training file fits potlearn models (rows of ``MODELS``: the many-body ACE
with cross-validated weights, which is what ``potlearn fit train.xyz`` does; a larger ACE basis;
the nonlinear ACE (each linear member with a neural correction, ``--kind nonlinear``); a neural
committee on a smaller ACE basis; the previous power-spectrum default with fixed
30:1:1 weights); the authors' own SNAP and qSNAP models are
evaluated through LAMMPS (``pair_style snap``) on the same test structures in the same run.
Their errors must reproduce the data set's README (Mo SNAP 9.25 meV/atom, 0.376 eV/A; qSNAP
4.04, 0.333; Li SNAP 1.31, 0.038; qSNAP 0.85, 0.044): that checks the LAMMPS evaluation.

Columns: energy RMSE (meV/atom), force RMSE (eV/A), stress RMSE (GPa), fit time (s), cost per
atom (µs: the potlearn committee through its ASE calculator, every member's energy, forces and
stress per call; SNAP in a LAMMPS ``run N`` of NVE MD per step), for linear rows the cost of
the 8-member committee over one member timed beside it (``8/1``), the calibration factors
(forces, energies), the share of test force components within 1 and 2 calibrated sigma
(Gaussian: 0.683, 0.954) and the Spearman rank correlation between the energy sigma and the
energy error of the test structures. Linear models are calibrated by cross-validation over
their training file, the nonlinear and neural ones on a 10 % validation split of it (which also
stops their training); all are judged on the test file. A second table gives energy and force
RMSE per ``config_type``.

The descriptor settings of every potlearn row live in ``MODELS`` (one dict per row), so that
another descriptor family can be switched in there.

Prints the tables and writes ``benchmarks/results/zuo.json``. Timings share 2 cores with other
work: compare the rows of one run, not runs.

Usage: ``python benchmarks/zuo.py [--quick] [--elements Mo Li] [--output FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("POTLEARN_ZUO_DATA", HERE.parents[1] / "shared" / "data" / "zuo2020"))
GPA = 160.21766208  # eV/A^3 -> GPa
BAR = 1e-4 / GPA  # bar -> eV/A^3

#: potlearn rows: descriptor settings (one place), fit kind and fit settings
MODELS: dict[str, dict[str, Any]] = {
    "ace linear": {  # what `potlearn fit train.xyz` does
        "descriptor": {"family": "ace_full"},
        "kind": "linear",
        "fit": {"weights": "cv"},
    },
    "ace linear large": {
        "descriptor": {"family": "ace_full", "max_degree": [12, 16, 15, 12]},
        "kind": "linear",
        "fit": {"weights": "cv"},
    },
    "ace nonlinear": {  # `potlearn fit train.xyz --kind nonlinear`
        "descriptor": {"family": "ace_full"},
        "kind": "nonlinear",
        "fit": {"weights": "cv"},
    },
    "ace neural": {
        "descriptor": {"family": "ace_full", "max_degree": [10, 12, 11, 9], "l_max": 4},
        "kind": "neural",
        "fit": {"epochs": 20, "patience": 5},
    },
    "power spectrum linear": {  # the previous default, fixed 30:1:1 weights
        "descriptor": {"family": "ace", "cutoff": 5.0, "n_radial": 8, "l_max": 2, "body_order": 3},
        "kind": "linear",
        "fit": {},
    },
}
QUICK_MODELS = ("ace linear",)
PEERS = ("snap", "qsnap")
README = {("Mo", "snap"): (9.25, 0.376), ("Mo", "qsnap"): (4.04, 0.333),
          ("Li", "snap"): (1.31, 0.038), ("Li", "qsnap"): (0.85, 0.044)}


def make_descriptor(elements: list[str], spec: dict[str, Any]) -> Any:
    """The descriptor of a ``MODELS`` row (``family`` picks the class)."""
    settings = dict(spec)
    family = settings.pop("family")
    if family == "ace_full":
        from potlearn_ase.descriptors import FullACEConfig, FullACEDescriptor

        return FullACEDescriptor(elements, FullACEConfig(**settings))
    if family == "ace":
        from potlearn_ase.descriptors import ACEConfig, ACEDescriptor

        return ACEDescriptor(elements, ACEConfig(**settings))
    raise ValueError(f"unknown descriptor family {family!r}")


def fit_row(row: dict[str, Any], elements: list[str], train: list) -> tuple[Any, dict, float]:
    """Fit one potlearn row; returns the model, its calibration factors and the fit time."""
    from potlearn_ase.models import LinearFitConfig, fit_linear
    from potlearn_ase.models.calibration import calibrate_by_type

    desc = make_descriptor(elements, row["descriptor"])
    t0 = time.perf_counter()
    if row["kind"] == "linear":
        model = fit_linear(desc, train, LinearFitConfig(**row["fit"]), rng=0)
        fit_time = time.perf_counter() - t0
        factors, _ = calibrate_by_type(model, train)
        return model, factors, fit_time
    from potlearn_ase.models.calibration import fit_calibration_factors
    from potlearn_ase.training.residual import train_residual
    from potlearn_ase.training.trainer import NeuralTrainConfig, train_neural

    order = np.random.default_rng(0).permutation(len(train))  # as potlearn fit splits
    n_val = max(2, len(train) // 10)
    val = [train[i] for i in order[:n_val]]
    fit = [train[i] for i in sorted(order[n_val:])]
    if row["kind"] == "nonlinear":
        linear = fit_linear(desc, fit, LinearFitConfig(**row["fit"]), rng=0)
        model, _ = train_residual(linear, fit, val)
    else:
        model, _ = train_neural(desc, fit, val, NeuralTrainConfig(seed=0, **row["fit"]))
    fit_time = time.perf_counter() - t0
    return model, fit_calibration_factors(model, val), fit_time


def evaluate_potlearn(model: Any, factors: dict, test: list, repeats: int) -> dict[str, Any]:
    """Predictions, sigmas and the cost per atom of the committee's ASE calculator."""
    from potlearn_ase.calculators import CommitteeCalculator

    calc = CommitteeCalculator(
        model=model, calibration=factors["forces"], energy_calibration=factors["energy"]
    )
    pred = []
    for atoms in test:
        a = atoms.copy()
        a.calc = calc
        pred.append({
            "energy": a.get_potential_energy(), "forces": a.get_forces(),
            "stress": a.get_stress(), "energy_std": calc.results["energy_std"],
            "forces_std": calc.results["forces_std"],
        })
    costs = {"cost_us_per_atom": _cost(calc, test, repeats)}
    if getattr(model, "kind", None) == "linear":  # one member beside it, in the same run
        from potlearn_ase.models.linear import LinearCommittee

        one = CommitteeCalculator(model=LinearCommittee(model.descriptor, model.coef[:1]))
        costs["cost1_us_per_atom"] = _cost(one, test, repeats)
        costs["cost_us_per_atom"] = min(costs["cost_us_per_atom"], _cost(calc, test, repeats))
    return {"pred": pred, **costs}


def _cost(calc: Any, test: list, repeats: int) -> float:
    """Microseconds per atom of energy, forces and stress through the ASE calculator."""
    rng = np.random.default_rng(1)
    moved = []
    for atoms in test:
        a = atoms.copy()
        a.calc = calc
        moved.append(a)
    n_atoms, t0 = 0, time.perf_counter()
    for _ in range(repeats):
        for a in moved:
            a.positions += rng.normal(scale=1e-3, size=a.positions.shape)  # defeat the cache
            a.get_forces()
            a.get_stress()
            n_atoms += len(a)
    return (time.perf_counter() - t0) / n_atoms * 1e6


def _peer_files(element: str, kind: str, tmp: Path) -> tuple[Path, Path]:
    """The authors' files, with the obsolete ``diagonalstyle`` line dropped (a temp copy)."""
    src = DATA / "peers" / element / kind
    param = tmp / f"{element}_{kind}.snapparam"
    lines = (src / "SNAPotential.snapparam").read_text().splitlines(True)
    param.write_text("".join(x for x in lines if not x.split()[:1] == ["diagonalstyle"]))
    coeff = tmp / f"{element}_{kind}.snapcoeff"
    coeff.write_text((src / "SNAPotential.snapcoeff").read_text())
    return coeff, param


def evaluate_snap(element: str, kind: str, test: list, steps: int) -> dict[str, Any]:
    """The authors' SNAP/qSNAP on the test structures in LAMMPS: ``run 0`` for the labels,
    then ``run steps`` of NVE MD per structure for the cost per atom and step."""
    from potlearn_ase.engines.lammps.library import (
        ase_order,
        atoms_to_lammps,
        new_lammps,
        tensor_to_ase,
        vectors_to_ase,
    )

    voigt = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
    pred, seconds, atom_steps = [], 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        coeff, param = _peer_files(element, kind, Path(tmp))
        lmp = new_lammps()
        for atoms in test:
            lmp.command("clear")
            R = atoms_to_lammps(lmp, atoms, [element])
            lmp.command("pair_style snap")
            lmp.command(f"pair_coeff * * {coeff} {param} {element}")
            lmp.command("compute pv all pressure NULL virial")
            lmp.command("thermo_style custom step pe c_pv")
            lmp.command("run 0")
            F = np.asarray(lmp.numpy.extract_atom("f"))[: len(atoms)][ase_order(lmp)]
            p = np.array(lmp.numpy.extract_compute("pv", 0, 1))  # xx yy zz xy xz yz, bar
            P = np.array([[p[0], p[3], p[4]], [p[3], p[1], p[5]], [p[4], p[5], p[2]]])
            S = -tensor_to_ase(P, R) * BAR
            pred.append({
                "energy": lmp.get_thermo("pe"), "forces": vectors_to_ase(F, R),
                "stress": np.array([S[a, b] for a, b in voigt]),
            })
            lmp.command("fix nve all nve")
            t0 = time.perf_counter()
            lmp.command(f"run {steps} pre no post no")
            seconds += time.perf_counter() - t0
            atom_steps += steps * len(atoms)
        lmp.close()
    return {"pred": pred, "cost_us_per_atom": seconds / atom_steps * 1e6}


def score(test: list, pred: list[dict]) -> dict[str, Any]:
    """Errors, coverage and rank correlation of predictions on the labelled test structures."""
    from scipy.stats import spearmanr

    e_err = np.array(
        [(p["energy"] - a.get_potential_energy()) / len(a) for a, p in zip(test, pred)]
    )
    f_err = [(p["forces"] - a.get_forces()).ravel() for a, p in zip(test, pred)]
    s_err = np.array([p["stress"] - a.get_stress() for a, p in zip(test, pred)]) * GPA
    out: dict[str, Any] = {
        "energy_rmse_meV_atom": 1000 * float(np.sqrt(np.mean(e_err**2))),
        "force_rmse": float(np.sqrt(np.mean(np.concatenate(f_err) ** 2))),
        "stress_rmse_GPa": float(np.sqrt(np.mean(s_err**2))),
    }
    by_type: dict[str, dict[str, float]] = {}
    types = np.array([a.info.get("config_type", "?") for a in test])
    for t in sorted(set(types)):
        idx = np.flatnonzero(types == t)
        by_type[str(t)] = {
            "n": len(idx),
            "energy_rmse_meV_atom": 1000 * float(np.sqrt(np.mean(e_err[idx] ** 2))),
            "force_rmse": float(np.sqrt(np.mean(np.concatenate([f_err[i] for i in idx]) ** 2))),
        }
    out["by_config_type"] = by_type
    if "forces_std" in pred[0]:
        f = np.abs(np.concatenate(f_err))
        s = np.concatenate([p["forces_std"].ravel() for p in pred])
        e_std = np.array([p["energy_std"] / len(a) for a, p in zip(test, pred)])
        out["force_coverage_1sigma"] = float(np.mean(f <= s))
        out["force_coverage_2sigma"] = float(np.mean(f <= 2 * s))
        out["energy_coverage_1sigma"] = float(np.mean(np.abs(e_err) <= e_std))
        out["energy_spearman"] = float(spearmanr(np.abs(e_err), e_std)[0])
    return out


def _progress(r: dict[str, Any]) -> None:
    """One line per finished row on stderr (the tables come at the end)."""
    keep = ("energy_rmse_meV_atom", "force_rmse", "stress_rmse_GPa", "fit_time_s",
            "cost_us_per_atom", "alpha_forces", "alpha_energy", "force_coverage_1sigma",
            "force_coverage_2sigma", "energy_spearman", "noise_sigma")
    text = {k: r[k] for k in keep if k in r}
    text["by_config_type"] = {
        t: (round(v["energy_rmse_meV_atom"], 2), round(v["force_rmse"], 4))
        for t, v in r["by_config_type"].items()
    }
    print(f"{r['element']} {r['model']}: {text}", file=sys.stderr, flush=True)


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the linear default only, fewer timings")
    ap.add_argument("--elements", nargs="+", default=["Mo", "Li"])
    ap.add_argument("--output", default=str(HERE / "results" / "zuo.json"), help="JSON file")
    args = ap.parse_args()
    import torch

    from potlearn_ase.data.io import read

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    names = QUICK_MODELS if args.quick else tuple(MODELS)
    rows: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for el in args.elements:
        train = list(read(DATA / f"{el}_train.xyz"))
        test = list(read(DATA / f"{el}_test.xyz"))
        for kind in PEERS:
            res = evaluate_snap(el, kind, test, steps=5 if args.quick else 20)
            r = {"element": el, "model": {"snap": "SNAP", "qsnap": "qSNAP"}[kind],
                 "fit_time_s": None, "cost_us_per_atom": res["cost_us_per_atom"],
                 **score(test, res["pred"]), "readme": README[(el, kind)]}
            rows.append(r)
            _progress(r)
        for name in names:
            row = MODELS[name]
            model, factors, fit_time = fit_row(row, [el], train)
            res = evaluate_potlearn(model, factors, test, repeats=1 if args.quick else 3)
            noise = getattr(model, "noise", None)
            rows.append({
                "element": el, "model": name, "settings": row, "fit_time_s": fit_time,
                "cost_us_per_atom": res["cost_us_per_atom"],
                "cost1_us_per_atom": res.get("cost1_us_per_atom"),
                "alpha_forces": factors["forces"],
                "alpha_energy": factors["energy"],
                "noise_sigma": None if noise is None else [float(s) for s in noise.sigma],
                "n_features": model.descriptor.n_features, **score(test, res["pred"]),
            })
            _progress(rows[-1])
    wall = time.perf_counter() - t_all
    head = (f"{'el':3s} {'model':22s} {'E meV/at':>8s} {'F eV/A':>7s} {'S GPa':>6s} "
            f"{'fit s':>6s} {'us/atom':>8s} {'8/1':>4s} {'aF':>5s} {'aE':>5s} {'F<=1s':>6s} "
            f"{'F<=2s':>6s} {'E<=1s':>6s} {'rhoE':>5s}")

    def ratio(r: dict[str, Any]) -> float | None:
        one = r.get("cost1_us_per_atom")
        return None if not one else r["cost_us_per_atom"] / one

    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['element']:3s} {r['model']:22s} {r['energy_rmse_meV_atom']:8.2f} "
            f"{r['force_rmse']:7.4f} {r['stress_rmse_GPa']:6.3f} "
            f"{_fmt(r['fit_time_s'], '6.0f'):>6s} "
            f"{r['cost_us_per_atom']:8.1f} {_fmt(ratio(r), '4.2f'):>4s} "
            f"{_fmt(r.get('alpha_forces'), '5.2f'):>5s} "
            f"{_fmt(r.get('alpha_energy'), '5.2f'):>5s} "
            f"{_fmt(r.get('force_coverage_1sigma'), '6.3f'):>6s} "
            f"{_fmt(r.get('force_coverage_2sigma'), '6.3f'):>6s} "
            f"{_fmt(r.get('energy_coverage_1sigma'), '6.3f'):>6s} "
            f"{_fmt(r.get('energy_spearman'), '5.2f'):>5s}"
        )
    print("README (authors' models): " + ", ".join(
        f"{el} {k}: {e} meV/atom, {f} eV/A" for (el, k), (e, f) in README.items()))
    print("\nper config_type: energy RMSE (meV/atom) / force RMSE (eV/A)")
    for r in rows:
        cells = [f"{t} {v['energy_rmse_meV_atom']:.1f}/{v['force_rmse']:.3f}"
                 for t, v in r["by_config_type"].items()]
        print(f"{r['element']:3s} {r['model']:22s} " + "; ".join(cells))
    print(f"(us/atom: potlearn committee of 8 per ASE call with energy, forces, stress; SNAP per "
          f"MD step in LAMMPS; 2 shared cores)  wall {wall:.0f} s")
    out = Path(args.output)
    out.parent.mkdir(exist_ok=True, parents=True)
    doc = {"rows": rows, "wall_time_s": wall, "quick": args.quick}
    out.write_text(json.dumps(doc, indent=2, default=lambda o: getattr(o, "tolist", lambda: o)()))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
