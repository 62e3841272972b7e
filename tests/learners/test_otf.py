"""On-the-fly learning under ASE dynamics: labels, reference forces, rewinds, the full loop."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin

from potlearn_ase.calculators import CommitteeCalculator
from potlearn_ase.cli import DEMO_CONFIG
from potlearn_ase.data.generate import thermalize
from potlearn_ase.data.store import LabelStore, structure_hash
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.otf import OnTheFlyLearner
from potlearn_ase.learners.reference import Reference
from potlearn_ase.learners.run import run_otf
from potlearn_ase.learners.triggers import Decision, FixedThreshold, TrustWindow
from potlearn_ase.models import LinearFitConfig, fit_linear

OTF_FIT = LinearFitConfig(n_members=8, energy_weight=30.0, force_weight=1.0, stress_weight=1.0)


def _learner(tmp_path, cu_train, trigger, n_start=1):
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=6, l_max=2))
    # the fixed weights potlearn otf fits with (run settings 30, 1, 1): the thresholds below
    # are for that committee's spread
    model = fit_linear(desc, cu_train[:n_start], OTF_FIT, rng=0)
    calc = CommitteeCalculator(model=model)
    store = LabelStore(tmp_path / "labels.h5")
    for a in cu_train[:n_start]:
        store.append(a, provenance={"reference": "emt", "engine": "initial"})
    return OnTheFlyLearner(calc, Reference.from_spec("emt"), store, trigger, run_dir=tmp_path)


def test_labelled_steps_use_reference_forces_and_update_the_model(tmp_path, cu_train):
    learner = _learner(tmp_path, cu_train, FixedThreshold(1e-12))  # label every step
    atoms = cu_train[20].copy()
    atoms.rattle(0.02, seed=5)
    rows_before = learner.model.normal_equations.n_rows
    results, decision = learner.step(atoms)
    assert decision is Decision.LABEL and results["labelled"]
    ref = atoms.copy()
    ref.calc = EMT()
    np.testing.assert_allclose(results["forces"], ref.get_forces(), atol=1e-10)
    assert learner.model.normal_equations.n_rows == rows_before + 1 + 3 * len(atoms) + 6
    assert learner.store.contains(atoms)
    prov = learner.store.provenance(len(learner.store) - 1)
    assert prov["reference"] == "emt" and "max_force_std" in prov["uncertainty"]
    # the same structure again: the stored label is reused, the reference is not called, and
    # the model is neither trained nor calibrated on it a second time
    calls = learner.n_reference_calls
    rows, alpha, ratios = (learner.model.normal_equations.n_rows, learner.committee.calibration,
                           len(learner.state.ratios))
    again, _ = learner.step(atoms)
    learner.step(atoms)
    assert learner.n_reference_calls == calls and learner.state.n_reused_labels == 2
    np.testing.assert_allclose(again["forces"], ref.get_forces(), atol=1e-10)
    assert learner.model.normal_equations.n_rows == rows
    assert learner.committee.calibration == alpha and len(learner.state.ratios) == ratios
    assert len(learner.state.label_steps) == 1
    learner.store.close()


def test_ase_dynamics_learn_where_the_committee_is_unsure(tmp_path, cu_train, cu_test):
    learner = _learner(tmp_path, cu_train, FixedThreshold(0.02))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    thermalize(atoms, 1200, np.random.default_rng(0))
    dyn = Langevin(
        atoms,
        2 * units.fs,
        temperature_K=1200,
        friction=0.02,
        rng=np.random.default_rng(1),
        fixcm=False,
    )
    learner.attach(dyn, trajectory=tmp_path / "md.traj", interval=1)
    dyn.run(200)
    calls = learner.n_reference_calls
    assert 1 <= calls <= 30
    # each label's provenance names the MD step whose geometry it is
    from ase.io import read

    traj = read(tmp_path / "md.traj", ":")
    for i in range(1, len(learner.store)):  # the first one is the starting label
        step = learner.store.provenance(i)["md_step"]
        np.testing.assert_allclose(learner.store[i].positions, traj[step].positions, atol=1e-12)
    decisions = [h["decision"] for h in learner.history]
    assert decisions.count("label") == calls
    err = [learner.model.predict(a)["forces"].mean(0) - a.get_forces() for a in cu_test]
    assert np.sqrt(np.mean(np.square(err))) < 0.03
    # every stored structure is distinct: no reference call was repeated
    hashes = [structure_hash(a) for a in learner.store.frames()]
    assert len(set(hashes)) == len(hashes)
    learner.store.close()


def test_rejected_frames_rewind_to_the_last_accepted_state(tmp_path, cu_train):
    class RejectOnce(TrustWindow):
        calls = 0

        def decide(self, step, atoms, results):
            RejectOnce.calls += 1
            return Decision.REJECT if RejectOnce.calls == 6 else Decision.SKIP

    learner = _learner(tmp_path, cu_train, RejectOnce(FixedThreshold(1.0), reject_above=2.0))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    thermalize(atoms, 600, np.random.default_rng(0))
    dyn = Langevin(
        atoms,
        2 * units.fs,
        temperature_K=600,
        friction=0.02,
        rng=np.random.default_rng(1),
        fixcm=False,
    )
    learner.attach(dyn)
    snapshots = []
    dyn.attach(lambda: snapshots.append(atoms.positions.copy()), interval=1)
    dyn.run(8)
    assert learner.state.n_rejects == 1
    assert dyn.nsteps == 8 and learner.state.md_step == 8  # eight kept steps, the reject redone
    # after the rejected step the positions were put back to those of the accepted step before
    i = 5  # the observer list sees the rewound state at the rejected step
    np.testing.assert_allclose(snapshots[i], snapshots[i - 1])
    # the rewound (accepted) state was labelled so the model learns where the MD was going
    assert learner.n_reference_calls == 1
    learner.store.close()


def test_full_loop_from_config_small_cell(tmp_path):
    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg.update(run_dir=str(tmp_path / "run"), progress=False)
    cfg["md"]["steps"] = 400
    # 400 steps of the ramp heat the weakly thermostatted MD to about 600 K: the held-out
    # frames (equilibrated at their temperature) cover what the run sampled
    cfg["validation"] = {"temperatures_K": [300.0, 600.0], "frames": 4, "every": 20}
    summary = run_otf(cfg)
    assert 1 <= summary["reference_calls"] <= 12
    assert summary["force_rmse"] < 0.03
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["reference_calls"] == summary["reference_calls"]
    for name in ("sigma_threshold.png", "labels.png", "parity_forces.png", "model.pt", "md.traj"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    with pytest.raises(ConfigError, match="run_dir"):
        run_otf(cfg)  # a finished run is not overwritten


def test_config_errors_name_the_key(tmp_path):
    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["md"]["stepz"] = 10
    with pytest.raises(ConfigError, match="md.stepz"):
        run_otf(cfg, run_dir=tmp_path / "a")
    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["md"]["steps"] = "many"
    with pytest.raises(ConfigError, match="md.steps"):
        run_otf(cfg, run_dir=tmp_path / "b")
    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["trigger"] = {"kind": "adaptive", "factr": 2}
    with pytest.raises(ConfigError, match="factr"):
        run_otf(cfg, run_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()  # nothing half-made is left behind
    for section, key, bad in (("initial", "n_labels", 0), ("md", "timestep_fs", -2.0),
                              ("md", "steps", -5)):
        cfg = copy.deepcopy(DEMO_CONFIG)
        cfg.setdefault(section, {})[key] = bad
        with pytest.raises(ConfigError, match=f"{section}: {key}: must"):
            run_otf(cfg, run_dir=tmp_path / "d")
    cfg = copy.deepcopy(DEMO_CONFIG)  # the model's sections name theirs
    cfg["model"]["descriptor"]["cutoff"] = 0.0
    with pytest.raises(ConfigError, match="model.descriptor: cutoff must be positive"):
        run_otf(cfg, run_dir=tmp_path / "d")
    cfg["model"]["cutoff"] = 4.0  # a flat key of release 0.1 beside its nested twin
    with pytest.raises(ConfigError, match="model.cutoff and model.descriptor.cutoff"):
        run_otf(cfg, run_dir=tmp_path / "d")
    # a file's errors name the file; a structure file's missing frame names the index
    import yaml

    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["md"]["stepz"] = 10
    (tmp_path / "otf.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"otf.yaml: unknown key md.stepz"):
        run_otf(tmp_path / "otf.yaml")
    from ase.io import write

    write(tmp_path / "start.xyz", bulk("Cu", "fcc", a=3.61, cubic=True))
    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["structure"] = {"file": str(tmp_path / "start.xyz"), "index": 3}
    with pytest.raises(ConfigError, match="structure.index: .*start.xyz has no frame 3"):
        run_otf(cfg, run_dir=tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_batch_mode_labels_a_diverse_subset_in_parallel(tmp_path, cu_train):
    from concurrent.futures import ThreadPoolExecutor

    from potlearn_ase.learners.otf import OTFConfig

    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=6, l_max=2))
    model = fit_linear(desc, cu_train[:1], OTF_FIT, rng=0)
    store = LabelStore(tmp_path / "labels.h5")
    store.append(cu_train[0], provenance={"reference": "emt", "engine": "initial"})
    with ThreadPoolExecutor(2) as pool:
        learner = OnTheFlyLearner(
            CommitteeCalculator(model=model),
            Reference.from_spec("emt"),
            store,
            FixedThreshold(1e-12),  # every frame is a candidate
            settings=OTFConfig(batch_window=10, batch_size=3),
            executor=pool,
        )
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        thermalize(atoms, 900, np.random.default_rng(0))
        dyn = Langevin(
            atoms,
            2 * units.fs,
            temperature_K=900,
            friction=0.02,
            rng=np.random.default_rng(1),
            fixcm=False,
        )
        learner.attach(dyn)
        dyn.run(29)  # 30 learner steps: three windows of ten
        assert learner.n_reference_calls == 9
        assert len(store) == 1 + 9
        # labelled in batches: the model was updated three times, not nine
        assert len(set(learner.state.label_steps)) == 3
        # each frame of a batch names its own MD step
        steps = [store.provenance(i)["md_step"] for i in range(1, 10)]
        assert len(set(steps)) == 9
        # a run that ends mid-window labels the window's candidates instead of dropping them
        dyn.run(4)
        learner.flush()
    assert learner.n_reference_calls == 12 and len(store) == 13
    store.close()


def test_learner_drives_an_optimiser_and_npt(tmp_path, cu_train):
    from ase.md.nptberendsen import NPTBerendsen
    from ase.optimize import BFGS

    learner = _learner(tmp_path, cu_train, FixedThreshold(0.05), n_start=3)
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(2)  # strained: relaxes under EMT
    atoms.rattle(0.05, seed=2)
    opt = BFGS(atoms, logfile=None)
    learner.attach(opt)
    opt.run(fmax=0.05, steps=50)
    assert np.abs(atoms.get_forces()).max() < 0.1
    thermalize(atoms, 300, np.random.default_rng(3))
    npt = NPTBerendsen(
        atoms,
        2 * units.fs,
        temperature_K=300,
        pressure_au=0.0,
        compressibility_au=4.57e-5 / units.bar,
    )
    learner.attach(npt)
    v0 = atoms.get_volume()
    npt.run(30)
    assert atoms.get_volume() != v0  # the cell moved under the committee's stress
    assert np.isfinite(atoms.get_stress()).all()
    learner.store.close()


def test_neural_committee_is_fine_tuned_after_labels(tmp_path, cu_train):
    from potlearn_ase.learners.otf import OTFConfig
    from potlearn_ase.training.trainer import NeuralTrainConfig, train_neural

    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.5, n_radial=4, l_max=1))
    model, _ = train_neural(
        desc,
        cu_train[:4],
        None,
        NeuralTrainConfig(n_members=3, hidden=(8,), epochs=20, device="cpu"),
    )
    store = LabelStore(tmp_path / "labels.h5")
    for a in cu_train[:4]:
        store.append(a, provenance={"reference": "emt"})
    learner = OnTheFlyLearner(
        CommitteeCalculator(model=model),
        Reference.from_spec("emt"),
        store,
        FixedThreshold(1e-12),
        settings=OTFConfig(neural_finetune_epochs=3),
    )
    before = [p.detach().clone() for p in learner.model.parameters()]
    atoms = cu_train[25].copy()
    atoms.rattle(0.03, seed=9)
    results, decision = learner.step(atoms)
    assert decision is Decision.LABEL and results["labelled"]
    after = list(learner.model.parameters())
    assert any(not np.allclose(a.detach().numpy(), b.numpy()) for a, b in zip(after, before))
    assert len(store) == 5
    store.close()


def test_run_from_a_structure_file_with_two_elements(tmp_path):
    from ase.build import bulk as build_bulk

    from potlearn_ase.data.io import write

    start = build_bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 1))
    start.numbers[::4] = 79  # Cu3Au-like ordering, EMT knows both
    write(tmp_path / "start.xyz", [start])
    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg.update(run_dir=str(tmp_path / "run"), progress=False, validation=None)
    cfg["structure"] = {"file": str(tmp_path / "start.xyz")}
    cfg["md"].update(steps=60, temperature_K=600.0)
    cfg["trigger"] = {"kind": "fixed", "max_force_std": 0.02, "min_gap": 10}
    summary = run_otf(cfg)
    assert summary["reference_calls"] >= 2
    with LabelStore(tmp_path / "run" / "labels.h5", mode="r") as store:
        assert set(store[0].get_chemical_symbols()) == {"Cu", "Au"}
