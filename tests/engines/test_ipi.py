"""i-PI bridge: the real ``i-pi`` server, our socket client, committee extras, learning on beads.

Each test starts ``i-pi`` on an input from ``examples/ipi`` (a few steps), serves it from this
process and kills the server in a ``finally`` block (``launch_ipi``). i-PI writes its outputs
in atomic units (Hartree, Bohr); the comparisons convert with ASE's constants.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import uuid
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.units import Bohr, Hartree

from potlearn_ase.calculators import CommitteeCalculator
from potlearn_ase.cli.ipi import add_subparser
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.engines.ipi.client import (
    IPIClient,
    committee_extras,
    launch_ipi,
    socket_path,
)
from potlearn_ase.errors import ConfigError, EngineError
from potlearn_ase.models import LinearFitConfig, fit_linear

pytest.importorskip("ipi")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ipi"
ALPHA = 1.7  # a calibration factor different from 1, so its use is visible


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, cu_train) -> Path:
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=6, l_max=2))
    model = fit_linear(desc, cu_train[::3], LinearFitConfig(n_members=8), rng=0)
    path = tmp_path_factory.mktemp("ipi-model") / "model.pt"
    CommitteeCalculator(model=model, calibration=ALPHA).save(path)
    return path


def _calc(model_path: Path) -> CommitteeCalculator:
    import potlearn_ase

    return potlearn_ase.load(model_path)


def _prepare(
    tmp_path: Path, name: str, steps: int, address: str, prefix: str | None = None
) -> Path:
    """Copy an example input into tmp_path with fewer steps and a unique socket."""
    shutil.copy(EXAMPLES / "cu32.extxyz", tmp_path)
    text = (EXAMPLES / name).read_text()
    text = re.sub(r"<total_steps>\d+</total_steps>", f"<total_steps>{steps}</total_steps>", text)
    text = re.sub(r"<address>[^<]*</address>", f"<address>{address}</address>", text)
    text = text.replace('filename="pos" stride="10"', 'filename="pos" stride="1"')
    if prefix is not None:
        text = text.replace("<simulation ", f'<simulation sockets_prefix="{prefix}" ', 1)
    out = tmp_path / name
    out.write_text(text)
    return out


def _columns(path: Path) -> np.ndarray:
    return np.loadtxt(path, comments="#", ndmin=2)


def _extras_blocks(path: Path) -> list[list[float]]:
    blocks: list[list[float]] = []
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#EXTRAS"):
            blocks.append([])
        elif line.strip():
            blocks[-1].extend(float(x) for x in line.split())
    return blocks


def test_nvt_energies_virial_and_committee_reach_ipi(tmp_path, model_path):
    steps = 4
    address = f"potlearn-test-{uuid.uuid4().hex[:8]}"  # ffcommittee's socket: /tmp/ipi_<address>
    xml = _prepare(tmp_path, "nvt.xml", steps, address)
    calc = _calc(model_path)
    atoms = ase.io.read(EXAMPLES / "cu32.extxyz")
    with launch_ipi(xml, cwd=tmp_path) as proc:
        client = IPIClient.from_calculator(calc, atoms, unixsocket=address, server=proc)
        stats = client.run()
        assert proc.wait(timeout=30) == 0
    assert stats.evaluations == steps + 1
    assert not Path(socket_path(address)).exists()

    table = _columns(tmp_path / "nvt.out")  # step time conserved T potential P K V (a.u.)
    frames = ase.io.read(tmp_path / "nvt.pos_0.extxyz", index=":")
    assert len(table) == len(frames) == steps + 1
    sigma = _extras_blocks(tmp_path / "nvt.sigma_0")
    members = _extras_blocks(tmp_path / "nvt.committee_0")
    assert len(members) == steps + 1
    for row, frame, pot, sig in zip(table, frames, members, sigma):
        frame.calc = calc
        e = frame.get_potential_energy()
        stress = frame.get_stress()
        res = calc.results
        # i-PI's potential is the energy we sent
        assert row[4] * Hartree == pytest.approx(e, abs=1e-6 * len(frame))
        # virial: pressure_md * 3V - 2 K_md = tr(virial) = -V tr(stress)
        V = row[7] * Bohr**3
        assert V == pytest.approx(frame.get_volume(), rel=1e-7)
        tr_vir = (3 * row[5] * row[7] - 2 * row[6]) * Hartree
        assert tr_vir == pytest.approx(-V * stress[:3].sum(), rel=1e-5, abs=1e-6)
        # the committee went through ffcommittee (parse_json): calibrated members, centred
        expected = e + ALPHA * (res["energy_committee"] - res["energy_committee"].mean())
        np.testing.assert_allclose(np.asarray(pot) * Hartree, expected, rtol=0, atol=1e-6)
        assert sig[0] * Hartree == pytest.approx(np.std(expected, ddof=1), rel=1e-5)
        assert sig[0] > 0


def test_pimd_four_beads_through_the_cli(tmp_path, model_path, capsys):
    steps, nbeads = 3, 4
    xml = _prepare(tmp_path, "pimd.xml", steps, "pimd", prefix=f"{tmp_path}/")
    parser = argparse.ArgumentParser()
    add_subparser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "ipi",
            "--model",
            str(model_path),
            "--structure",
            str(EXAMPLES / "cu32.extxyz"),
            "--socket",
            f"{tmp_path}/pimd",
        ]
    )
    with launch_ipi(xml, cwd=tmp_path) as proc:
        assert args.func(args) == 0
        assert proc.wait(timeout=30) == 0
    assert f"served {nbeads * (steps + 1)} structures" in capsys.readouterr().out

    calc = _calc(model_path)
    table = _columns(tmp_path / "pimd.out")
    beads = [ase.io.read(tmp_path / f"pimd.pos_{b}.extxyz", index=":") for b in range(nbeads)]
    assert len(table) == steps + 1 and all(len(t) == steps + 1 for t in beads)
    for k, row in enumerate(table):
        energies = []
        for b in range(nbeads):
            a = beads[b][k]
            a.calc = calc
            energies.append(a.get_potential_energy())
        # i-PI's potential is the bead average; the beads differ (a real ring polymer)
        assert row[4] * Hartree == pytest.approx(np.mean(energies), abs=1e-6 * len(a))
    # the beads start together and spread apart: a real ring polymer
    assert np.ptp(energies) > 1e-5
    # every bead's extras: its committee (8 members) and its request id, distinct per bead
    ids = set()
    for b in range(nbeads):
        members = _extras_blocks(tmp_path / f"pimd.committee_{b}")
        rows = _extras_blocks(tmp_path / f"pimd.sigma_{b}")  # id, sigma_E, sigma_F, labelled
        assert len(members) == len(rows) == steps + 1
        assert all(len(m) == 8 for m in members)
        a = beads[b][-1]
        a.calc = calc
        a.get_potential_energy()
        assert rows[-1][1] == pytest.approx(calc.results["energy_std"], rel=1e-5)
        assert rows[-1][2] == pytest.approx(calc.results["max_force_std"], rel=1e-5)
        assert rows[-1][3] == 0
        ids.update(int(r[0]) for r in rows)
    assert len(ids) == nbeads


def test_pimd_learning_labels_uncertain_beads_with_emt(tmp_path, cu_train):
    from ase.calculators.emt import EMT

    from potlearn_ase.data.store import LabelStore
    from potlearn_ase.data.validate import get_labels
    from potlearn_ase.engines.ipi.learning import run_ipi_learning

    steps = 3
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=6, l_max=2))
    # unsure; the fixed weights potlearn otf fits with, for which the threshold is set
    cfg = LinearFitConfig(n_members=8, energy_weight=30.0, force_weight=1.0, stress_weight=1.0)
    model = fit_linear(desc, cu_train[:1], cfg, rng=0)
    calc = CommitteeCalculator(model=model)
    xml = _prepare(tmp_path, "pimd.xml", steps, "learn", prefix=f"{tmp_path}/")
    start = ase.io.read(tmp_path / "cu32.extxyz")
    start.rattle(0.08, seed=7)  # off the lattice: the one-frame committee disagrees
    ase.io.write(tmp_path / "cu32.extxyz", start, format="extxyz")
    run_dir = tmp_path / "otf"
    config = {
        "reference": "emt",
        "trigger": {"kind": "fixed", "max_force_std": 0.02, "min_gap": 3},
        "run_dir": str(run_dir),
    }
    atoms = ase.io.read(EXAMPLES / "cu32.extxyz")
    with launch_ipi(xml, cwd=tmp_path) as proc:
        summary = run_ipi_learning(
            calc, atoms, config, unixsocket="learn", sockets_prefix=f"{tmp_path}/", server=proc
        )
        assert proc.wait(timeout=30) == 0
    assert summary["evaluations"] == 4 * (steps + 1)
    assert summary["labels"] >= 1 and summary["reference_calls"] == summary["labels"]
    assert set(summary["labelled_requests"]) <= {0, 1, 2, 3}
    assert json.loads((run_dir / "summary.json").read_text())["labels"] == summary["labels"]
    store = LabelStore(run_dir / "labels.h5", mode="r")
    try:
        assert len(store) == summary["labels"]
        assert store.provenance(0)["engine"] == "ipi"
        labelled = store[0]
        ref = labelled.copy()
        ref.calc = EMT()
        np.testing.assert_allclose(get_labels(labelled)["forces"], ref.get_forces(), atol=1e-8)
    finally:
        store.close()
    # i-PI saw the labelled beads flagged in their extras
    flagged = sum(r[3] for b in range(4) for r in _extras_blocks(tmp_path / f"pimd.sigma_{b}"))
    assert flagged == summary["labels"]
    assert (run_dir / "model.pt").exists()
    # the same run_dir again: refused without --resume, continued with it
    with pytest.raises(ConfigError, match="holds a run already"):
        run_ipi_learning(calc, atoms, config, unixsocket="learn", sockets_prefix=f"{tmp_path}/")
    fresh = CommitteeCalculator(model=fit_linear(desc, cu_train[:1], LinearFitConfig(n_members=8),
                                                 rng=0))
    with launch_ipi(xml, cwd=tmp_path) as proc:
        again = run_ipi_learning(fresh, atoms, config, resume=True, unixsocket="learn",
                                 sockets_prefix=f"{tmp_path}/", server=proc)
        assert proc.wait(timeout=30) == 0
    # the learned model of run_dir replaced the one-frame start: all the labels are in it
    assert fresh.model.normal_equations.n_rows >= calc.model.normal_equations.n_rows
    state = json.loads((run_dir / "state.json").read_text())
    assert state["n_labels"] == summary["labels"] + again["labels"]
    with LabelStore(run_dir / "labels.h5", mode="r") as store2:
        keys = {store2.provenance(i)["timestamp"] for i in range(len(store2))}
        assert len(store2) == len(keys) == summary["labels"] + again["labels"]


def test_extras_are_calibrated_members_in_atomic_units(rattled_cu, model_path):
    calc = _calc(model_path)
    atoms = rattled_cu
    atoms.calc = calc
    atoms.get_stress()
    res = calc.results
    x = committee_extras(res, atoms)
    assert set(x) >= {"committee_pot", "committee_force", "committee_virial", "calibration"}
    pot = np.asarray(x["committee_pot"]) * Hartree
    assert pot.mean() == pytest.approx(res["energy"], abs=1e-9)
    assert pot.std() == pytest.approx(res["energy_std"], rel=1e-9)  # alpha * std, ddof=0
    f = np.asarray(x["committee_force"]).reshape(8, -1, 3) * Hartree / Bohr
    np.testing.assert_allclose(f.mean(0), res["forces"], atol=1e-10)
    np.testing.assert_allclose(f.std(0), res["forces_std"], atol=1e-10)
    vir = np.asarray(x["committee_virial"]).reshape(8, 3, 3) * Hartree
    stress = res["stress"]
    assert np.trace(vir.mean(0)) == pytest.approx(-atoms.get_volume() * stress[:3].sum(), rel=1e-9)
    # a plain calculator has no committee: no extras
    from ase.calculators.emt import EMT

    atoms.calc = EMT()
    atoms.get_forces()
    assert committee_extras(atoms.calc.results, atoms) == {}


def test_client_refuses_remote_hosts_and_reports_a_missing_server(rattled_cu, model_path, tmp_path):
    calc = _calc(model_path)
    with pytest.raises(ConfigError, match="loopback"):
        IPIClient.from_calculator(calc, rattled_cu, host="10.0.0.1", port=31415)
    with pytest.raises(ConfigError, match="exactly one"):
        IPIClient.from_calculator(calc, rattled_cu)
    with pytest.raises(EngineError, match="no i-PI server"):
        IPIClient.from_calculator(
            calc, rattled_cu, unixsocket=str(tmp_path / "nobody"), connect_timeout=0.2
        )


def test_learn_config_errors_name_the_key(tmp_path, rattled_cu, model_path):
    from potlearn_ase.engines.ipi.learning import run_ipi_learning

    cfg = tmp_path / "learn.yaml"
    cfg.write_text("reference: emt\ntrigger: {kind: fixed, max_force_std: 0.05}\nrun_dirr: x\n")
    with pytest.raises(ConfigError, match="run_dirr"):
        run_ipi_learning(_calc(model_path), rattled_cu, cfg, unixsocket="unused")
    cfg.write_text(f"trigger: {{kind: fixed}}\nrun_dir: {tmp_path / 'otf'}\n")
    with pytest.raises(ConfigError, match="max_force_std"):
        run_ipi_learning(_calc(model_path), rattled_cu, cfg, unixsocket="unused")
