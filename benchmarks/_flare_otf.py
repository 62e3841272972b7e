"""FLARE's on-the-fly learning on one benchmark system; run by ``otf_peers.py`` with FLARE's venv.

Usage: ``<flare venv>/bin/python _flare_otf.py job.json``. The job names the starting
structure and the held-out frames (extxyz files), the reference, the MD protocol and where to
write the result: reference calls, wall and CPU time, and FLARE's energies and forces on the
held-out frames (the caller computes the errors, the same way as for potlearn).

Hyperparameters are FLARE's own example ``examples/test_SGP_LMP_fresh.yaml``: B2 descriptor,
Chebyshev radial basis with a quadratic cutoff, n_max 8, l_max 4, NormalizedDotProduct kernel
(sigma 2, power 2), noise 0.01 eV / 0.05 eV/A / 0.005, local variance, std tolerance -0.02,
threshold updates of 0.01, no cap on atoms added, one BFGS iteration of the hyperparameters
after every reference call from the second on (``max_iterations: 1``, ``train_hyps: [2, inf]``)
and training on energies, forces and stresses (``force_only: False``; ``OTF`` defaults to
force-only training, which leaves the energy zero undetermined: its held-out energies were then
off by a constant ~2.8 eV/atom on Ni3Al). The isolated-atom energies are the reference's own.
FLARE's OTF has no temperature ramp: :class:`RampOTF` sets the Langevin target at every step.
A LAMMPS reference runs in a child process (LAMMPS and FLARE in one process crash in FLARE's
prediction). This file imports neither potlearn_ase nor torch.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read

sys.modules.setdefault("wandb", types.ModuleType("wandb"))  # imported by FLARE, used only for logs


def _lammps_worker(conn, lmpcmds: list[str]) -> None:
    """Child process: label structures sent through ``conn`` with ASE's LAMMPSlib."""
    lib = Path(sys.prefix) / "lib" / "libmpi.so.12"
    if lib.exists():
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    from ase.calculators.lammpslib import LAMMPSlib

    calc = LAMMPSlib(lmpcmds=lmpcmds, keep_alive=True)
    while True:
        msg = conn.recv()
        if msg is None:
            return
        numbers, positions, cell = msg
        atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
        atoms.calc = calc
        conn.send((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))


class ChildLAMMPS(Calculator):
    """An ASE calculator whose LAMMPSlib lives in a child process."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, lmpcmds: list[str]):
        super().__init__()
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_lammps_worker, args=(child, lmpcmds), daemon=True)
        self._proc.start()

    def __deepcopy__(self, memo) -> ChildLAMMPS:
        return self  # FLARE deep-copies its reference before each call; share the child

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self._conn.send((self.atoms.numbers, self.atoms.positions, np.array(self.atoms.cell)))
        e, f, s = self._conn.recv()
        self.results = {"energy": e, "free_energy": e, "forces": f, "stress": s}

    def close(self) -> None:
        self._conn.send(None)
        self._proc.join(timeout=30)


def make_reference(spec: dict) -> Calculator:
    kind = spec["calculator"]
    if kind == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if kind == "tblite":
        from tblite.ase import TBLite

        kw = {k: v for k, v in spec.items() if k not in ("calculator", "retries", "timeout")}

        class SharedTBLite(TBLite):
            def __deepcopy__(self, memo):
                return self  # FLARE deep-copies its reference; tblite's handles cannot be

        return SharedTBLite(verbosity=0, **kw)
    if kind == "lammpslib":
        return ChildLAMMPS(spec["lmpcmds"])
    raise ValueError(f"unknown reference {kind!r}")


def isolated_energy(calc: Calculator, number: int) -> float:
    """The reference's energy of one atom alone in a 12 A box."""
    atom = Atoms(numbers=[number], cell=np.eye(3) * 12.0, pbc=True)
    atom.calc = calc
    return float(atom.get_potential_energy())


def sgp_calculator(species: list[int], single: list[float], cutoff: float):
    """FLARE's SGP calculator, and the kernel and descriptor it points to (keep them alive)."""
    from flare.bffs.sgp import SGP_Wrapper
    from flare.bffs.sgp._C_flare import B2, NormalizedDotProduct
    from flare.bffs.sgp.calculator import SGP_Calculator

    kernel = NormalizedDotProduct(2.0, 2)
    descriptor = B2("chebyshev", "quadratic", [0.0, cutoff], [], [len(species), 8, 4])
    sgp = SGP_Wrapper(
        kernels=[kernel],
        descriptor_calculators=[descriptor],
        cutoff=cutoff,
        sigma_e=0.01,
        sigma_f=0.05,
        sigma_s=0.005,
        species_map={z: i for i, z in enumerate(species)},
        variance_type="local",
        single_atom_energies={i: e for i, e in enumerate(single)},
        energy_training=True,
        force_training=True,
        stress_training=True,
        max_iterations=1,
        opt_method="BFGS",
    )
    return SGP_Calculator(sgp, False), (kernel, descriptor)


def main(job_path: str) -> None:
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from flare.atoms import FLARE_Atoms
    from flare.learners.otf import OTF

    job = json.loads(Path(job_path).read_text())
    md = job["md"]
    start = read(job["structure"])
    heldout = read(job["heldout"], index=":")
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    reference = make_reference(job["reference"])
    species = sorted(set(int(z) for z in start.numbers))
    single = [isolated_energy(reference, z) for z in species]
    flare_calc, _keep_alive = sgp_calculator(species, single, float(job.get("cutoff", 5.0)))
    t0, t1, steps = float(md["t0"]), float(md["t1"]), int(md["steps"])

    class RampOTF(OTF):
        """OTF with the Langevin target temperature ramped linearly over the run."""

        def md_step(self):
            x = min(self.curr_step / max(steps, 1), 1.0)
            self.md.set_temperature(temperature_K=t0 + (t1 - t0) * x)
            return super().md_step()

    atoms = start.copy()
    MaxwellBoltzmannDistribution(atoms, temperature_K=t0, rng=np.random.default_rng(md["seed"]))
    workdir = tempfile.mkdtemp(prefix="flare-otf-")
    os.chdir(workdir)
    otf = RampOTF(
        atoms,
        dt=md["timestep_fs"] / 1000.0,  # ps
        number_of_steps=steps,
        dft_calc=reference,
        md_engine="Langevin",
        md_kwargs={
            "temperature_K": t0,
            "friction": md["friction"],
            "fixcm": False,
            "rng": np.random.default_rng([md["seed"], 1]),  # the thermostat noise, seeded
        },
        flare_calc=flare_calc,
        std_tolerance_factor=-0.02,
        update_style="threshold",
        update_threshold=0.01,
        max_atoms_added=-1,
        train_hyps=(2, np.inf),
        force_only=False,
        write_model=0,
        output_name="flare",
    )
    otf.run()
    run_wall, run_cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
    energies, forces = [], []
    for frame in heldout:
        a = FLARE_Atoms.from_ase_atoms(frame.copy())
        a.calc = otf.flare_calc
        energies.append(float(a.get_potential_energy()))
        forces.append(np.asarray(a.get_forces()).tolist())
    if isinstance(reference, ChildLAMMPS):
        reference.close()
    out = {
        "reference_calls": int(otf.dft_count),
        "wall_time_s": run_wall,
        "cpu_time_s_self": run_cpu,
        "energies": energies,
        "forces": forces,
        "training_structures": len(otf.gp.training_data),
    }
    Path(job["output"]).write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
