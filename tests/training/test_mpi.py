"""Training across MPI ranks equals the serial run; reference calls on MPI workers.

The MPI cases start ``mpiexec -n 2`` in a subprocess; they are skipped (with the reason) only
when mpiexec or mpi4py is absent.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from potlearn_ase.cli.train import add_subparser
from potlearn_ase.data.io import write
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.models.neural import NeuralCommittee
from potlearn_ase.training.mpi import member_blocks
from potlearn_ase.training.trainer import NeuralTrainConfig, train_neural

_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def _mpiexec() -> str | None:
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(
    MPIEXEC is None or importlib.util.find_spec("mpi4py") is None,
    reason="mpiexec or mpi4py not installed (pip install potlearn-ase[mpi])",
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}
    env["OMP_NUM_THREADS"] = "1"  # the same reduction order in every process
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


_SERIAL = (
    "import sys\n"
    "from potlearn_ase.cli.train import main\n"
    "rc = main(sys.argv[1:])\n"
    "assert 'mpi4py' not in sys.modules, 'a serial run imported mpi4py'\n"
    "sys.exit(rc)\n"
)

_COMMON = ["--cutoff", "4.0", "--n-radial", "4", "--l-max", "1", "--committee", "3", "--seed", "7"]
_NEURAL = ["--hidden", "8", "--epochs", "15", "--patience", "3", "--batch-size", "3"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, cu_train, cu_test) -> Path:
    d = tmp_path_factory.mktemp("mpi")
    write(d / "train.xyz", cu_train[:12])
    write(d / "val.xyz", cu_test[:4])
    return d


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.double() for k, v in blob["tensors"].items()}


def _assert_same_model(a: Path, b: Path, rtol: float = 1e-10) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert set(ta) == set(tb)
    for k in ta:
        scale = max(float(ta[k].abs().max()), 1e-12)
        diff = float((ta[k] - tb[k]).abs().max())
        assert diff <= rtol * scale, f"{k}: max difference {diff:.3e} (scale {scale:.3e})"


@needs_mpi
@pytest.mark.parametrize(
    "kind, extra, rtol",
    [
        # the default linear fit infers its noise levels from per-rank sums of the label
        # blocks, added over the ranks: equal to serial up to rounding, not bit for bit
        ("linear", ["--batch-size", "2"], 1e-7),
        ("neural", _NEURAL + ["--val", "val.xyz"], 1e-10),
    ],
)
def test_mpiexec_two_ranks_equals_serial(data_dir, kind, extra, rtol):
    args = ["train", "train.xyz", "--kind", kind, *_COMMON, *extra]
    _run([sys.executable, "-c", _SERIAL, *args, "-o", f"{kind}-serial.pt"], data_dir)
    out = _run(
        [
            MPIEXEC,
            "-n",
            "2",
            sys.executable,
            "-m",
            "potlearn_ase.cli.train",
            *args,
            "-o",
            f"{kind}-mpi.pt",
        ],
        data_dir,
    )
    summary = json.loads(out.stdout)  # only rank 0 prints
    assert summary["mpi_ranks"] == 2
    _assert_same_model(data_dir / f"{kind}-serial.pt", data_dir / f"{kind}-mpi.pt", rtol)
    # a different seed gives a different committee, so the comparison above can fail
    _run(
        [sys.executable, "-c", _SERIAL, *args[:-2], "--seed", "8", "-o", f"{kind}-s8.pt"], data_dir
    )
    with pytest.raises(AssertionError):
        _assert_same_model(data_dir / f"{kind}-serial.pt", data_dir / f"{kind}-s8.pt")


@needs_mpi
def test_reference_calls_on_mpi_workers(tmp_path):
    script = tmp_path / "label.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, os, sys
            import numpy as np
            from ase.build import bulk
            from ase.calculators.emt import EMT
            from potlearn_ase.learners.reference import Reference
            from potlearn_ase.training.mpi import mpi_executor

            frames = []
            for k in range(4):
                a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
                a.rattle(0.05, seed=k)
                frames.append(a)
            ref = Reference.from_spec("emt")
            with mpi_executor() as pool:
                workers = pool.num_workers
                pids = sorted({pool.submit(os.getpid).result() for _ in range(4)})
                results = ref.label_many(frames, executor=pool)
            out = {"workers": workers, "pids": pids, "me": os.getpid(), "ok": [], "dE": [],
                   "dF": []}
            for a, r in zip(frames, results):
                b = a.copy()
                b.calc = EMT()
                out["ok"].append(r.ok)
                out["dE"].append(abs(r.atoms.get_potential_energy() - b.get_potential_energy()))
                out["dF"].append(float(np.abs(r.atoms.get_forces() - b.get_forces()).max()))
            json.dump(out, open(sys.argv[1], "w"))
            """
        )
    )
    _run(
        [MPIEXEC, "-n", "2", sys.executable, "-m", "mpi4py.futures", str(script), "res.json"],
        tmp_path,
    )
    res = json.loads((tmp_path / "res.json").read_text())
    assert res["workers"] == 1
    assert res["me"] not in res["pids"]  # the calculations ran in the other rank's process
    assert all(res["ok"])
    assert max(res["dE"]) < 1e-12 and max(res["dF"]) < 1e-12


def test_members_do_not_depend_on_committee(cu_train, cu_test):
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.0, n_radial=4, l_max=1))
    cfg = NeuralTrainConfig(
        n_members=4, hidden=(8,), epochs=12, patience=2, batch_size=3, seed=3, device="cpu"
    )
    full, hist = train_neural(desc, cu_train[:9], cu_test[:3], cfg)
    assert full.members == (0, 1, 2, 3)
    assert len(hist.best_epochs) == 4 and all(0 <= e < 12 for e in hist.best_epochs)
    part, _ = train_neural(desc, cu_train[:9], cu_test[:3], cfg, members=[1, 3])
    # a smaller committee holds the same first members
    small, _ = train_neural(
        desc, cu_train[:9], cu_test[:3], NeuralTrainConfig(**{**cfg.__dict__, "n_members": 2})
    )
    ref = full.subset([1, 3])
    for a, b in zip(ref.parameters(), part.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for a, b in zip(full.subset([0, 1]).parameters(), small.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    # members differ from each other (own weights and bootstrap)
    w = full.weights[0].detach()
    assert float((w[0] - w[1]).abs().max()) > 1e-3
    # joining the parts back gives the whole committee and its predictions
    joined = NeuralCommittee.join([full.subset([2, 0]), part])
    assert joined.members == (0, 1, 2, 3)
    np.testing.assert_allclose(
        joined.predict(cu_test[4])["forces"], full.predict(cu_test[4])["forces"], atol=1e-12
    )
    with pytest.raises(ValueError, match="overlap"):
        NeuralCommittee.join([full.subset([1]), part])


def test_initial_weights_depend_on_seed_and_member_only():
    desc = ACEDescriptor(["Cu", "Au"], ACEConfig(cutoff=4.0, n_radial=3, l_max=1))
    big = NeuralCommittee(desc, n_members=5, hidden=(6,), seed=1)
    mid = NeuralCommittee(desc, members=[4, 2], hidden=(6,), seed=1)
    other = NeuralCommittee(desc, n_members=5, hidden=(6,), seed=2)
    for wb, wm, wo in zip(big.weights, mid.weights, other.weights):
        torch.testing.assert_close(wb[[4, 2]], wm, rtol=0, atol=0)
        assert not torch.allclose(wb, wo)
    assert mid.hyperparameters()["members"] == [4, 2]
    assert "members" not in big.hyperparameters()


def test_member_blocks_cover_every_member_once():
    for M in range(1, 10):
        for size in range(1, 5):
            blocks = member_blocks(M, size)
            assert len(blocks) == size
            assert sum(blocks, []) == list(range(M))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_subparser_registers_train_and_fits_serially(data_dir, tmp_path):
    parser = argparse.ArgumentParser(prog="potlearn")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "m.pt"
    args = parser.parse_args(
        [
            "train",
            str(data_dir / "train.xyz"),
            "--val",
            str(data_dir / "val.xyz"),
            "-o",
            str(out),
            "--committee",
            "4",
            "--cutoff",
            "4.0",
            "--n-radial",
            "4",
            "--l-max",
            "2",
        ]
    )
    assert args.kind == "linear" and args.committee == 4
    assert args.func(args) == 0
    import potlearn_ase
    from tests.conftest import reference_md_frames

    calc = potlearn_ase.load(out)
    assert calc.n_members == 4
    atoms = reference_md_frames(500, 1, rng=21)[0]
    F_ref = atoms.get_forces()
    atoms.calc = calc
    rmse = float(np.sqrt(np.mean((atoms.get_forces() - F_ref) ** 2)))
    assert rmse < 0.15, rmse  # a real fit of EMT Cu, not a placeholder
    bad = parser.parse_args(["train", str(tmp_path / "missing.xyz"), "-o", str(out)])
    with pytest.raises(FileNotFoundError, match="missing.xyz"):
        bad.func(bad)


@needs_mpi
def test_allreduce_accumulation_matches_serial_fit(data_dir):
    script = data_dir / "allreduce.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import numpy as np
            from potlearn_ase.data.io import read
            from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
            from potlearn_ase.models import LinearFitConfig, fit_linear
            from potlearn_ase.training.mpi import fit_linear_mpi, world

            comm = world()
            frames = list(read("train.xyz", parallel=False))
            desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.0, n_radial=4, l_max=1))
            cfg = LinearFitConfig(n_members=2, batch_size=2)
            par = fit_linear_mpi(desc, frames, cfg, rng=3, comm=comm, ordered=False)
            if comm.Get_rank() == 0:
                ser = fit_linear(desc, frames, cfg, rng=3)
                ne_p, ne_s = par.normal_equations, ser.normal_equations
                assert ne_p.n_rows == ne_s.n_rows > 0
                np.testing.assert_allclose(ne_p.AtA, ne_s.AtA, rtol=1e-12, atol=1e-9)
                pp, ps = par.predict(frames[0]), ser.predict(frames[0])
                np.testing.assert_allclose(pp["forces"], ps["forces"], rtol=0, atol=1e-5)
                np.testing.assert_allclose(pp["energy"], ps["energy"], rtol=1e-8)
                print("OK", comm.Get_size())
            """
        )
    )
    out = _run([MPIEXEC, "-n", "2", sys.executable, str(script)], data_dir)
    assert "OK 2" in out.stdout
