"""The extrapolation grade: inside the training span <= 1, outside > 1, carried by the model."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from potlearn_ase.calculators import CommitteeCalculator, load
from potlearn_ase.data.generate import label
from potlearn_ase.data.store import LabelStore
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.errors import ConfigError, PotlearnError
from potlearn_ase.learners import Decision, ExtrapolationThreshold
from potlearn_ase.learners.triggers import trigger_from_config
from potlearn_ase.models import LinearFitConfig, attach_active_set, fit_linear

TOL = 1.01 + 1e-9  # maxvol's tolerance


@pytest.fixture(scope="module")
def desc():
    return ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=6, l_max=2))


@pytest.fixture(scope="module")
def model(desc, cu_train):
    return attach_active_set(
        fit_linear(desc, cu_train, LinearFitConfig(n_members=4), rng=0), cu_train
    )


def _vacancy() -> object:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    del atoms[0]
    atoms.rattle(0.02, seed=1)
    return atoms


def _surface() -> object:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 3))
    atoms.center(vacuum=5.0, axis=2)
    return atoms


def test_training_atoms_interpolate_and_defects_extrapolate(model, desc, cu_train, cu_test):
    for atoms in cu_train[::7]:
        assert model.active_set.grade(desc, atoms).max() <= TOL
    grades = [model.active_set.grade(desc, a).max() for a in cu_test]
    bulk_max = max(grades[:10])
    vac = model.active_set.grade(desc, _vacancy())
    surf = model.active_set.grade(desc, _surface())
    # new bulk MD at 300 and 700 K stays inside the training span; a vacancy's neighbours and
    # a surface leave it far behind. Hot MD (1200 K, equilibrated) leaves it too: ten 32-atom
    # training frames do not fill the descriptor space at 1200 K
    assert bulk_max < 1.5
    assert vac.max() > 2 * bulk_max and surf.max() > 2 * bulk_max
    assert vac.max() > 5 and surf.max() > 5  # as docs/uncertainty.md says
    assert max(grades[10:]) > 1.0
    # the surface layers extrapolate, the middle layer (bulk-like, beyond the cutoff) far less
    z = _surface().positions[:, 2]
    middle = np.abs(z - z.mean()) < 1.0
    assert surf[middle].max() < surf[~middle].max()


def test_grade_is_invariant_and_permutes_with_the_atoms(model, desc):
    atoms = _vacancy()
    g = model.active_set.grade(desc, atoms)
    moved = atoms.copy()
    moved.rotate(37, (1, 2, 3), rotate_cell=True)
    moved.translate((0.3, -1.1, 2.0))
    np.testing.assert_allclose(model.active_set.grade(desc, moved), g, rtol=1e-8)
    perm = np.random.default_rng(0).permutation(len(atoms))
    np.testing.assert_allclose(model.active_set.grade(desc, atoms[perm]), g[perm], rtol=1e-10)


def test_calculator_reports_grades_and_keeps_them_through_save_and_load(model, tmp_path):
    calc = CommitteeCalculator(model=model)
    atoms = _vacancy()
    atoms.calc = calc
    atoms.get_forces()
    g = calc.results["extrapolation_grade"]
    assert g.shape == (len(atoms),)
    assert calc.results["max_extrapolation_grade"] == pytest.approx(g.max())
    calc.save(tmp_path / "m.pt")
    again = load(tmp_path / "m.pt")
    atoms.calc = again
    atoms.get_forces()
    np.testing.assert_allclose(again.results["extrapolation_grade"], g, rtol=1e-12)
    # a model without an active set reports none
    plain = CommitteeCalculator(model=fit_linear(model.descriptor, [label(atoms, EMT())]))
    atoms.calc = plain
    atoms.get_forces()
    assert "extrapolation_grade" not in plain.results


def test_update_with_the_defect_brings_it_inside(desc, cu_train):
    m = attach_active_set(
        fit_linear(desc, cu_train[:10], LinearFitConfig(n_members=4)), cu_train[:10]
    )
    vac = label(_vacancy(), EMT())
    assert m.active_set.grade(desc, vac).max() > 2
    m.update([vac])
    assert m.active_set.grade(desc, vac).max() <= TOL
    # the old training atoms are still inside
    assert m.active_set.grade(desc, cu_train[0]).max() <= 2.0


def test_neural_committee_carries_an_active_set(desc, cu_train, tmp_path):
    from potlearn_ase.training.trainer import NeuralTrainConfig, train_neural

    net, _ = train_neural(desc, cu_train[:6], None, NeuralTrainConfig(n_members=2, epochs=2))
    attach_active_set(net, cu_train[:6])
    CommitteeCalculator(model=net).save(tmp_path / "n.pt")
    calc = load(tmp_path / "n.pt")
    atoms = _vacancy()
    atoms.calc = calc
    atoms.get_potential_energy()
    assert calc.results["max_extrapolation_grade"] > 2


def test_extrapolation_trigger(model):
    calc = CommitteeCalculator(model=model)
    trig = trigger_from_config({"kind": "extrapolation", "max_grade": 2.0, "min_gap": 1})
    decisions = []
    for atoms in (bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2), _vacancy()):
        atoms.calc = calc
        atoms.get_forces()
        decisions.append(trig.decide(len(decisions), atoms, calc.results))
    assert decisions == [Decision.SKIP, Decision.LABEL]
    # the force sigma as a second reason to label
    both = ExtrapolationThreshold(max_grade=1e6, max_force_std=1e-9)
    assert both.decide(0, None, {**calc.results}) is Decision.LABEL
    with pytest.raises(PotlearnError, match="active set"):
        ExtrapolationThreshold().decide(0, None, {"max_force_std": 0.1})
    with pytest.raises(ConfigError, match="max_grade"):
        trigger_from_config({"kind": "extrapolation"})


def test_otf_run_labels_on_the_extrapolation_grade(tmp_path):
    import copy

    from potlearn_ase.cli import DEMO_CONFIG
    from potlearn_ase.learners.run import run_otf

    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg.update(run_dir=str(tmp_path / "run"), progress=False, validation=None)
    cfg["md"].update(steps=150, temperature_K=900.0)
    cfg["trigger"] = {"kind": "extrapolation", "max_grade": 3.0, "min_gap": 10}
    summary = run_otf(cfg)
    assert summary["reference_calls"] >= 1
    with LabelStore(tmp_path / "run" / "labels.h5", mode="r") as store:
        grades = [
            store.provenance(i)["uncertainty"].get("max_extrapolation_grade")
            for i in range(1, len(store))
        ]
    # every label was asked for by a grade above the threshold, measured before the update
    assert grades and all(g > 3.0 for g in grades)
    # the saved model carries the grown active set
    calc = load(tmp_path / "run" / "model.pt")
    assert calc.model.active_set is not None
