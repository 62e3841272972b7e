"""Data-parallel neural training (``split="structures"``) against serial runs.

Two ranks train on shards of every batch and add the gradients in shard order: the result is
the serial run with the same number of shards to the last bit, and the plain serial run (one
shard) to rounding. The measured difference after training (15 epochs, early stopping and
bootstrap on) is ~4e-16 relative to the largest parameter, so the bound asserted here,
1e-11 relative, leaves room for other BLAS builds without hiding a real error.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from potlearn_ase.data.io import write
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.errors import ConfigError
from potlearn_ase.training.mpi import train_neural_mpi
from potlearn_ase.training.trainer import NeuralTrainConfig, train_neural
from tests.conftest import finite_difference_forces
from tests.training.test_mpi import MPIEXEC, _assert_same_model, _run, needs_mpi

#: relative bound on |parameter difference| between a sharded and a one-shard run
ROUNDING = 1e-11

_DESC = dict(cutoff=4.0, n_radial=4, l_max=1)
_CFG = dict(n_members=3, hidden=(8,), epochs=15, patience=4, batch_size=3, seed=5, device="cpu")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, cu_train, cu_test) -> Path:
    d = tmp_path_factory.mktemp("data-parallel")
    write(d / "train.xyz", cu_train[:10])
    write(d / "val.xyz", cu_test[:4])
    return d


def _max_rel_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    out = 0.0
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        scale = max(float(x.abs().max()), 1e-12)
        out = max(out, float((x - y).abs().max()) / scale)
    return out


def test_shards_change_results_only_by_rounding(cu_train, cu_test):
    desc = ACEDescriptor(["Cu"], ACEConfig(**_DESC))
    cfg = NeuralTrainConfig(**_CFG)
    one, h1 = train_neural(desc, cu_train[:8], cu_test[:3], cfg)
    # 8 structures in batches of 3: shards of 1-2 structures, some shards empty
    many, h3 = train_neural(desc, cu_train[:8], cu_test[:3], cfg, shards=3)
    assert h1.best_epochs == h3.best_epochs
    np.testing.assert_allclose(h1.val_loss, h3.val_loss, rtol=1e-12)
    assert _max_rel_diff(one, many) < ROUNDING
    # the same shards give the same bits
    again, _ = train_neural(desc, cu_train[:8], cu_test[:3], cfg, shards=3)
    assert _max_rel_diff(many, again) == 0.0
    # train_neural_mpi without MPI is the serial training in either split
    ser, hists = train_neural_mpi(desc, cu_train[:8], cu_test[:3], cfg, split="structures")
    assert len(hists) == 1 and _max_rel_diff(one, ser) == 0.0
    # the trained committee's forces are its energy's derivatives
    atoms = cu_test[4]
    fd = finite_difference_forces(lambda a: many.predict(a, forces=False)["energy"], atoms)
    np.testing.assert_allclose(many.predict(atoms)["forces"], fd, atol=1e-6)


def test_bad_split_and_shards_are_refused(cu_train):
    desc = ACEDescriptor(["Cu"], ACEConfig(**_DESC))
    cfg = NeuralTrainConfig(**{**_CFG, "epochs": 1})
    with pytest.raises(ConfigError, match="split"):
        train_neural_mpi(desc, cu_train[:3], None, cfg, split="atoms")
    with pytest.raises(ConfigError, match="shards"):
        train_neural(desc, cu_train[:3], None, cfg, shards=0)


_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from potlearn_ase.data.io import read
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.training.mpi import train_neural_mpi, world
    from potlearn_ase.training.trainer import NeuralTrainConfig, train_neural

    comm = world()
    train = list(read("train.xyz", parallel=False))
    val = list(read("val.xyz", parallel=False))
    desc = ACEDescriptor(["Cu"], ACEConfig(**json.loads(sys.argv[1])))
    cfg = NeuralTrainConfig(**json.loads(sys.argv[2]))
    par, hists = train_neural_mpi(desc, train, val, cfg, comm=comm, split="structures")
    states = comm.gather({k: v.clone() for k, v in par.state_dict().items()}, root=0)
    if comm.Get_rank() == 0:
        same = max(float((states[0][k] - states[1][k]).abs().max()) for k in states[0])
        sharded, h2 = train_neural(desc, train, val, cfg, shards=2)
        plain, h1 = train_neural(desc, train, val, cfg)
        def diff(m):
            return max(
                float((a - b).abs().max()) / max(float(a.abs().max()), 1e-12)
                for a, b in zip(par.state_dict().values(), m.state_dict().values())
            )
        print(json.dumps({
            "ranks": comm.Get_size(), "between_ranks": same, "vs_two_shards": diff(sharded),
            "vs_serial": diff(plain), "epochs": [hists[0].best_epochs, h2.best_epochs,
            h1.best_epochs], "n_hist": len(hists),
        }))
    """
)


@needs_mpi
def test_two_ranks_split_structures_match_serial(data_dir):
    script = data_dir / "data_parallel.py"
    script.write_text(_SCRIPT)
    cfg = {**_CFG, "hidden": list(_CFG["hidden"])}
    out = _run(
        [MPIEXEC, "-n", "2", sys.executable, str(script), json.dumps(_DESC), json.dumps(cfg)],
        data_dir,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["ranks"] == 2 and res["n_hist"] == 1
    assert res["between_ranks"] == 0.0  # every rank holds the same committee
    assert res["vs_two_shards"] == 0.0  # a serial run with two shards, to the last bit
    assert res["vs_serial"] < ROUNDING  # a plain serial run, to rounding
    a, b, c = res["epochs"]
    assert a == b == c


@needs_mpi
def test_cli_split_structures_reproduced_by_serial_shards(data_dir):
    common = [
        "train",
        "train.xyz",
        "--val",
        "val.xyz",
        "--kind",
        "neural",
        "--committee",
        "3",
        "--cutoff",
        "4.0",
        "--n-radial",
        "4",
        "--l-max",
        "1",
        "--hidden",
        "8",
        "--epochs",
        "10",
        "--patience",
        "3",
        "--batch-size",
        "3",
        "--seed",
        "7",
        "--split",
        "structures",
    ]
    _run(
        [
            sys.executable,
            "-m",
            "potlearn_ase.cli.train",
            *common,
            "--shards",
            "2",
            "-o",
            "dp-serial.pt",
        ],
        data_dir,
    )
    out = _run(
        [
            MPIEXEC,
            "-n",
            "2",
            sys.executable,
            "-m",
            "potlearn_ase.cli.train",
            *common,
            "-o",
            "dp-mpi.pt",
        ],
        data_dir,
    )
    summary = json.loads(out.stdout)
    assert summary["mpi_ranks"] == 2 and summary["split"] == "structures"
    _assert_same_model(Path(data_dir) / "dp-serial.pt", Path(data_dir) / "dp-mpi.pt", rtol=0.0)
