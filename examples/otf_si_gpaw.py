"""On-the-fly learning of bulk silicon with DFT (GPAW, PBE, plane waves) as the reference.

Diamond Si (8 atoms), Langevin MD heated from 300 to 900 K with 1 fs steps. The committee
potential drives the MD and GPAW is called only when the committee's calibrated force
uncertainty stands out. A failed SCF is retried with more iterations, then with wider
smearing (the reference's documented fallback), and otherwise recorded as a failure. At the
end the potential is checked on independent GPAW MD frames, taken after equilibration.

Each GPAW call on Si8 takes seconds (300 eV, 2x2x2 k-points); the validation MD is the
costly part, so ``--validation-frames 0`` skips it.

    python examples/otf_si_gpaw.py [--steps 300] [--ecut 300] [--kpts 2] [--run-dir si-gpaw]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from potlearn_ase.learners.run import run_otf


def config(args: argparse.Namespace) -> dict:
    validation = None
    if args.validation_frames > 0:
        validation = {
            "temperatures_K": [300.0, 900.0],
            "frames": args.validation_frames,
            "every": 10,
        }
    return {
        "structure": {"bulk": "Si", "crystalstructure": "diamond", "a": 5.43, "cubic": True},
        "reference": {
            "calculator": "gpaw",
            "mode": {"name": "pw", "ecut": args.ecut},
            "xc": "PBE",
            "kpts": [args.kpts] * 3,
            "occupations": {"name": "fermi-dirac", "width": 0.1},
            "convergence": {"forces": 1e-3},
            "timeout": 600.0,
        },
        "model": {
            "kind": "linear",
            "descriptor": {"cutoff": 5.0, "n_radial": 6, "l_max": 2},
            "fit": {"n_members": 8},
        },
        "md": {
            "ensemble": "langevin",
            "timestep_fs": 1.0,
            "steps": args.steps,
            "temperature_K": [300.0, 900.0],
            "friction": 0.02,
            "seed": 0,
        },
        "trigger": {"kind": "adaptive", "factor": 1.2, "min_threshold": 0.05, "min_gap": 5},
        "initial": {"n_labels": 1, "rattle": 0.05},
        "validation": validation,
        "run_dir": args.run_dir,
        "progress": True,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--ecut", type=float, default=300.0, help="plane-wave cutoff, eV")
    ap.add_argument("--kpts", type=int, default=2, help="Monkhorst-Pack mesh k x k x k")
    ap.add_argument("--validation-frames", type=int, default=3, help="per temperature")
    ap.add_argument("--run-dir", default="si-gpaw")
    args = ap.parse_args(argv)
    if Path(args.run_dir).exists():
        shutil.rmtree(args.run_dir)
    summary = run_otf(config(args))
    keys = (
        "steps",
        "reference_calls",
        "reference_failures",
        "force_rmse",
        "force_rmse_by_temperature",
        "sigma_coverage_1",
        "wall_time_s",
    )
    print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=2))
    return summary


if __name__ == "__main__":
    main()
