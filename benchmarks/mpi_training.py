"""Committee training on 1 and 2 MPI ranks, side by side.

Two workloads, each run under ``mpiexec -n 1`` and ``mpiexec -n 2`` in turn (alternating,
``--repeats`` times, best time kept):

* neural: 8 members, fixed epochs (no early stop, so every run does the same work), with
  ``train_neural_mpi(split="members")`` (each rank trains its members on all structures) and
  ``split="structures"`` (data parallel: each rank takes its share of every batch, gradients
  added in shard order every step);
* linear: accumulation of the normal equations of a few hundred structures and the solve
  (``fit_linear_mpi``, in the serial summation order and with one ``Allreduce``).

The time is measured inside the MPI job between barriers (data already broadcast, imports
done, including the ~1.5 s import of torch's compiler stack by the first optimiser); the
whole ``mpiexec`` wall time is reported too. Each rank uses one torch thread; a serial run
with two torch threads (no MPI) is shown for comparison. Prints a table and writes
``benchmarks/results/mpi_training.json``. The speed-up target is >= 1.7x from 1 to 2 ranks.
The CPU time of the slowest rank is recorded too ("cpu speed-up": 1-rank CPU seconds over the
slowest of the 2 ranks): it shows the split of the work when other jobs load the machine and
the wall times mostly measure the contention (the load average is printed).

Usage: ``python benchmarks/mpi_training.py [--quick] [--repeats N]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = 1.7


def _worker(kind: str, data: str, epochs: int, ordered: bool, split: str) -> None:
    """Runs inside ``mpiexec`` (or alone): one training, timed between barriers."""
    import torch

    from potlearn_ase.data.io import read
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.models import LinearFitConfig
    from potlearn_ase.training.mpi import broadcast, fit_linear_mpi, train_neural_mpi, world
    from potlearn_ase.training.trainer import NeuralTrainConfig

    comm = world()
    rank = comm.Get_rank() if comm is not None else 0
    kw = {"parallel": False} if comm is not None else {}
    frames = broadcast(list(read(data, **kw)) if rank == 0 else None, comm)
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=8, l_max=2))
    # the first optimiser of a process imports torch's compiler stack (~1.5 s here): a
    # start-up cost, kept out of the timed region like the other imports
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    if comm is not None:
        comm.Barrier()
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "linear":
        fit_linear_mpi(
            desc, frames, LinearFitConfig(n_members=8), rng=0, comm=comm, ordered=ordered
        )
    else:
        cfg = NeuralTrainConfig(
            n_members=8,
            hidden=(32, 32),
            epochs=epochs,
            patience=10**6,
            batch_size=8,
            device="cpu",
            seed=0,
        )
        train_neural_mpi(desc, frames, None, cfg, comm=comm, split=split)
    if comm is not None:
        comm.Barrier()
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    if comm is not None:
        cpu = comm.allreduce(cpu, op=__import__("mpi4py").MPI.MAX)
    if rank == 0:
        print(
            json.dumps(
                {
                    "seconds": dt,
                    "cpu_seconds": cpu,
                    "threads": torch.get_num_threads(),
                    "ranks": comm.Get_size() if comm is not None else 0,
                }
            )
        )


def _mpiexec() -> str:
    local = Path(sys.executable).parent / "mpiexec"
    found = str(local) if local.exists() else shutil.which("mpiexec")
    if found is None:
        raise SystemExit("mpiexec not found: pip install mpi4py mpich (potlearn-ase[mpi])")
    return found


def _run(ranks: int, kind: str, data: Path, epochs: int, ordered: bool, split: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    worker = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        str(data),
        "--epochs",
        str(epochs),
        "--split",
        split,
    ]
    if not ordered:
        worker.append("--allreduce")
    if ranks == 0:  # serial, no MPI, two torch threads
        env["OMP_NUM_THREADS"] = "2"
        cmd = worker
    else:
        env["OMP_NUM_THREADS"] = "1"
        cmd = [_mpiexec(), "-n", str(ranks), *worker]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall"] = wall
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller workloads")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--worker", nargs=2, metavar=("KIND", "DATA"), help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--allreduce", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--split", default="members", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        _worker(args.worker[0], args.worker[1], args.epochs, not args.allreduce, args.split)
        return

    from potlearn_ase.data.generate import reference_md_frames
    from potlearn_ase.data.io import write

    n_linear = 100 if args.quick else 300
    n_neural = 24 if args.quick else 64
    epochs = 10 if args.quick else args.epochs
    tmp = Path(tempfile.mkdtemp(prefix="potlearn-mpi-bench-"))
    temps = (300, 800, 1200)
    frames = sum(
        (reference_md_frames(T, n_linear // 3, every=5, rng=k) for k, T in enumerate(temps)), []
    )
    write(tmp / "linear.xyz", frames)
    write(tmp / "neural.xyz", frames[:: max(1, len(frames) // n_neural)][:n_neural])
    neural = f"neural, 8 members, {n_neural} structures, {epochs} epochs"
    cases = [
        ("neural", "neural.xyz", f"{neural}, split members", True, "members"),
        ("neural", "neural.xyz", f"{neural}, split structures", True, "structures"),
        (
            "linear",
            "linear.xyz",
            f"linear accumulation + solve, {len(frames)} structures (serial order)",
            True,
            "members",
        ),
        (
            "linear",
            "linear.xyz",
            f"linear accumulation + solve, {len(frames)} structures (Allreduce)",
            False,
            "members",
        ),
    ]
    rows = []
    load_before = os.getloadavg()
    for kind, name, label, ordered, split in cases:
        best: dict[int, dict] = {}
        for _ in range(args.repeats):
            for ranks in (1, 2, 0):
                r = _run(ranks, kind, tmp / name, epochs, ordered, split)
                if ranks not in best or r["seconds"] < best[ranks]["seconds"]:
                    best[ranks] = r
        speedup = best[1]["seconds"] / best[2]["seconds"]
        rows.append(
            {
                "case": label,
                "kind": kind,
                "ordered_reduction": ordered,
                "split": split if kind == "neural" else None,
                "seconds_1_rank": best[1]["seconds"],
                "seconds_2_ranks": best[2]["seconds"],
                "seconds_serial_2_threads": best[0]["seconds"],
                "cpu_seconds_1_rank": best[1]["cpu_seconds"],
                "cpu_seconds_2_ranks_slowest": best[2]["cpu_seconds"],
                "cpu_speedup_1_to_2_ranks": best[1]["cpu_seconds"] / best[2]["cpu_seconds"],
                "wall_1_rank": best[1]["wall"],
                "wall_2_ranks": best[2]["wall"],
                "speedup_1_to_2_ranks": speedup,
                "meets_target": speedup >= TARGET,
            }
        )
    shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()
    print(
        f"\nCommittee training, 1 vs 2 MPI ranks (1 torch thread per rank), best of "
        f"{args.repeats}; target speed-up >= {TARGET}x"
    )
    print(
        f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on "
        f"{os.cpu_count()} cores"
    )
    head = (
        f"{'case':<70} {'1 rank s':>9} {'2 ranks s':>9} {'speed-up':>9} {'serial 2thr s':>13}"
        f" {'cpu speed-up':>12}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['case']:<70} {r['seconds_1_rank']:9.2f} {r['seconds_2_ranks']:9.2f} "
            f"{r['speedup_1_to_2_ranks']:8.2f}x {r['seconds_serial_2_threads']:13.2f}"
            f" {r['cpu_speedup_1_to_2_ranks']:11.2f}x"
        )
    out = HERE / "results" / "mpi_training.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "rows": rows,
                "target_speedup": TARGET,
                "cpu_count": os.cpu_count(),
                "load_average_before": load_before,
                "load_average_after": load_after,
                "quick": args.quick,
                "repeats": args.repeats,
            },
            indent=2,
        )
    )
    print(f"written {out}")


if __name__ == "__main__":
    main()
