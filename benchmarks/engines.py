"""Time per MD step with the same committee model and cell through ASE, LAMMPS and i-PI.

Side by side in one run, on fcc Cu (500 atoms for ASE and LAMMPS; i-PI at 108 atoms, since
its socket overhead does not depend on the model):

* ASE ``VelocityVerlet`` with the CommitteeCalculator (linear ACE, 8 members);
* the LAMMPS deck through ``fix external`` (``potlearn lammps``) with the same calculator
  (target: at most 1.2x ASE);
* the i-PI socket client (``benchmarks/engines_ipi.py``);
* a linear SNAP model in LAMMPS natively (``pair_style snap`` from the exported files) against
  the same SNAP model through the callback.

Prints a table and writes ``benchmarks/results/engines.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DECK = """units metal
atom_style atomic
boundary p p p
lattice fcc 3.61
region box block 0 {n} 0 {n} 0 {n}
create_box 1 box
create_atoms 1 box
mass 1 63.546
velocity all create 300 4928459 loop geom
{pair}
fix md all nve
timestep 0.002
thermo 0
run 2"""
BRIDGE = (
    "pair_style zero 6.0\npair_coeff * *\nfix ml all external pf/callback 1 1\n"
    "fix_modify ml energy yes virial yes"
)


def committee(frames, kind="ace"):
    from potlearn_ase.calculators import CommitteeCalculator
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.models import LinearFitConfig, fit_linear

    if kind == "ace":
        desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=8, l_max=2))
    else:
        from potlearn_ase.descriptors.snap import SNAPConfig, SNAPDescriptor

        desc = SNAPDescriptor(["Cu"], SNAPConfig(twojmax=6, rcutfac=4.7))
    return CommitteeCalculator(model=fit_linear(desc, frames, LinearFitConfig(n_members=8)))


def ase_step_ms(calc, n_cells: int, steps: int) -> float:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(n_cells)
    atoms.rattle(0.02, seed=1)
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, 2 * units.fs)
    dyn.run(2)
    t0 = time.perf_counter()
    dyn.run(steps)
    return (time.perf_counter() - t0) / steps * 1e3


def lammps_step_ms(calc, n_cells: int, steps: int, pair: str = BRIDGE) -> float:
    from potlearn_ase.engines.lammps.driver import LammpsDriver

    cmds = DECK.format(n=n_cells, pair=pair).splitlines()
    driver = LammpsDriver(cmds, calc, elements=["Cu"]).run()
    t0 = time.perf_counter()
    driver.command(f"run {steps}")
    dt = (time.perf_counter() - t0) / steps * 1e3
    driver.close()
    return dt


def native_snap_step_ms(calc, n_cells: int, steps: int) -> float:
    from potlearn_ase.engines.lammps.library import new_lammps
    from potlearn_ase.engines.lammps.snap_export import snap_pair_commands, write_snap_files

    model = calc.model
    with tempfile.TemporaryDirectory() as tmp:
        coeff, param = write_snap_files(model.mean_coef(), model.descriptor, Path(tmp) / "cu")
        pair = "\n".join(snap_pair_commands(model.descriptor, coeff, param))
        lmp = new_lammps()
        for c in DECK.format(n=n_cells, pair=pair).splitlines():
            lmp.command(c)
        t0 = time.perf_counter()
        lmp.command(f"run {steps}")
        dt = (time.perf_counter() - t0) / steps * 1e3
        lmp.close()
    return dt


def main() -> None:
    from potlearn_ase.data.generate import reference_md_frames

    frames = reference_md_frames(600, 6, rng=0)
    ace = committee(frames, "ace")
    rows = []
    n_cells, steps = 5, 30  # 500 atoms
    best: dict[str, float] = {}
    for _ in range(2):  # interleaved rounds, best of each
        for name, fn in (
            ("ase", lambda: ase_step_ms(ace, n_cells, steps)),
            ("lammps_callback", lambda: lammps_step_ms(ace, n_cells, steps)),
        ):
            best[name] = min(best.get(name, np.inf), fn())
    rows.append({"engine": "ASE VelocityVerlet", "atoms": 500, "ms_per_step": best["ase"]})
    rows.append(
        {
            "engine": "LAMMPS fix external",
            "atoms": 500,
            "ms_per_step": best["lammps_callback"],
            "ratio_over_ase": best["lammps_callback"] / best["ase"],
        }
    )
    try:
        from engines_ipi import ipi_rows

        with tempfile.TemporaryDirectory() as tmp:
            ace.save(Path(tmp) / "ace.pt")
            small = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
            small.rattle(0.02, seed=1)
            ase_small = ase_step_ms(ace, 3, steps)
            rows.append({"engine": "ASE VelocityVerlet", "atoms": 108, "ms_per_step": ase_small})
            for r in ipi_rows(Path(tmp) / "ace.pt", small, steps):
                rows.append(
                    {
                        "engine": f"i-PI socket ({r['variant']})",
                        "atoms": 108,
                        "ms_per_step": r["ms_per_step"],
                        "ratio_over_ase": r["ms_per_step"] / ase_small,
                    }
                )
    except Exception as exc:  # i-PI missing or failing: say so in the table
        rows.append({"engine": "i-PI socket", "atoms": 108, "ms_per_step": None, "note": str(exc)})
    snap = committee(frames, "snap")
    cb = lammps_step_ms(snap, 3, 10)
    nat = native_snap_step_ms(snap, 3, 10)
    rows.append({"engine": "LAMMPS callback, SNAP model", "atoms": 108, "ms_per_step": cb})
    rows.append(
        {
            "engine": "LAMMPS pair_style snap (exported)",
            "atoms": 108,
            "ms_per_step": nat,
            "ratio_over_callback": nat / cb,
        }
    )
    print(f"{'engine':40s} {'atoms':>6s} {'ms/step':>9s}  ratio")
    for r in rows:
        ms = f"{r['ms_per_step']:9.2f}" if r.get("ms_per_step") is not None else f"{'n/a':>9s}"
        ratio = r.get("ratio_over_ase", r.get("ratio_over_callback"))
        ratio_s = f"{ratio:.2f}" if ratio is not None else ""
        print(f"{r['engine']:40s} {r['atoms']:6d} {ms}  {ratio_s} {r.get('note', '')}")
    out = HERE / "results" / "engines.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
