"""A slow EMT reference for tests of worker processes (importable by spawned workers)."""

from __future__ import annotations

import functools
import time
from typing import Any

from ase.calculators.emt import EMT

from potlearn_ase.learners.reference import Reference
from potlearn_ase.learners.reference_specs import reference_kwargs


class SlowEMT(EMT):
    """ASE's EMT that sleeps ``delay`` seconds in every calculation (a stand-in for DFT)."""

    def __init__(self, delay: float = 0.5, **kwargs: Any):
        super().__init__(**kwargs)
        self.delay = float(delay)

    def calculate(self, *args: Any, **kwargs: Any) -> None:
        time.sleep(self.delay)
        super().calculate(*args, **kwargs)


def slow_reference(delay: float, workers: int | str, **options: Any) -> Reference:
    """The reference of ``{calculator: emt, workers: ...}`` (same name and parameters, so
    the same label store accepts it), each calculation ``delay`` seconds slower."""
    kwargs = reference_kwargs({"calculator": "emt", "workers": workers, **options})
    kwargs["factory"] = functools.partial(SlowEMT, delay)
    return Reference(**kwargs)


def run_config(run_dir: str, steps: int, workers: int | str) -> dict[str, Any]:
    """A small ``potlearn otf`` configuration of 8-atom fcc Cu that labels often."""
    return {
        "structure": {"bulk": "Cu", "crystalstructure": "fcc", "a": 3.61, "cubic": True,
                      "repeat": [2, 1, 1]},
        "reference": {"calculator": "emt", "workers": workers},
        "model": {"descriptor": {"cutoff": 4.0, "n_radial": 4, "l_max": 1},
                  "fit": {"n_members": 4}},
        "md": {"steps": steps, "temperature_K": [300.0, 1200.0], "seed": 0,
               "trajectory_interval": 5},
        "trigger": {"kind": "fixed", "max_force_std": 0.003, "min_gap": 4},
        "initial": {"n_labels": 2, "rattle": 0.05},
        "validation": None,
        "run_dir": run_dir,
        "progress": False,
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.learners.slow_reference RUN_DIR STEPS WORKERS DELAY [--resume]``:
    ``run_otf`` of :func:`run_config` with the slow reference in place of EMT (``WORKERS``
    a count or ``mpi``)."""
    import sys

    from potlearn_ase.learners.run import run_otf

    args = list(sys.argv[1:] if argv is None else argv)
    resume = "--resume" in args
    if resume:
        args.remove("--resume")
    run_dir, steps, delay = args[0], int(args[1]), float(args[3])
    workers: int | str = args[2] if args[2] == "mpi" else int(args[2])
    ref = slow_reference(delay, workers)
    if resume:
        run_otf(run_dir, resume=True, reference=ref)
    else:
        run_otf(run_config(run_dir, steps, workers), reference=ref)


if __name__ == "__main__":
    main()
