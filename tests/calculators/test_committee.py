"""The ASE calculator: committee mean and spread, calibration, save/load, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

import potlearn_ase
from potlearn_ase.calculators import CommitteeCalculator
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.errors import ModelFormatError, UnknownElementError
from potlearn_ase.models import LinearFitConfig, fit_calibration, fit_linear
from potlearn_ase.models.calibration import force_errors_and_spread
from tests.conftest import finite_difference_forces, finite_difference_stress


@pytest.fixture(scope="module")
def calc(cu_train, cu_test):
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.5, n_radial=6, l_max=2))
    model = fit_linear(desc, cu_train[::2], LinearFitConfig(n_members=8), rng=0)
    alpha = fit_calibration(model, cu_test[::2])
    return CommitteeCalculator(model=model, calibration=alpha, metrics={"note": "test"})


def test_results_are_committee_mean_and_spread(calc, cu_test):
    atoms = cu_test[3].copy()
    atoms.calc = calc
    F = atoms.get_forces()
    r = calc.results
    assert r["forces_committee"].shape == (8, len(atoms), 3)
    np.testing.assert_allclose(F, r["forces_committee"].mean(0))
    np.testing.assert_allclose(r["energy"], r["energy_committee"].mean())
    np.testing.assert_allclose(r["forces_std"], calc.calibration * r["forces_committee"].std(0))
    assert r["max_force_std"] == pytest.approx(np.linalg.norm(r["forces_std"], axis=1).max())
    np.testing.assert_allclose(atoms.get_stress(), r["stress_committee"].mean(0))
    assert r["stress_std"].shape == (6,)
    assert r["free_energy"] == r["energy"]
    np.testing.assert_allclose(r["energies"].sum(), r["energy"])


def test_mean_forces_and_stress_are_derivatives_of_mean_energy(calc, rattled_cu):
    def energy(a):
        a = a.copy()
        a.calc = calc
        return a.get_potential_energy()

    atoms = rattled_cu.copy()
    atoms.calc = calc
    np.testing.assert_allclose(
        atoms.get_forces(), finite_difference_forces(energy, atoms), atol=1e-6
    )
    np.testing.assert_allclose(
        atoms.get_stress(), finite_difference_stress(energy, atoms), atol=1e-7
    )


def test_calibrated_sigma_covers_errors_as_claimed(calc, cu_test):
    err, spread = force_errors_and_spread(calc.model, cu_test[1::2])  # not used to calibrate
    inside = np.mean(np.abs(err) <= calc.calibration * spread)
    assert 0.55 < inside < 0.8, inside


def test_save_load_round_trip(calc, cu_test, tmp_path):
    path = calc.save(tmp_path / "model.pt")
    again = potlearn_ase.load(path)
    a, b = cu_test[0].copy(), cu_test[0].copy()
    a.calc, b.calc = calc, again
    np.testing.assert_array_equal(a.get_forces(), b.get_forces())
    np.testing.assert_array_equal(a.calc.results["forces_std"], b.calc.results["forces_std"])
    assert again.calibration == calc.calibration and again.metrics == {"note": "test"}
    # todict round trip through the constructor
    c = CommitteeCalculator(**json.loads(json.dumps(calc.todict())))
    d = cu_test[0].copy()
    d.calc = c
    np.testing.assert_allclose(d.get_forces(), a.get_forces(), rtol=1e-12)


def test_changing_the_calibration_discards_cached_results(calc, cu_test):
    mine = CommitteeCalculator(model=calc.model, calibration=2.0)
    atoms = cu_test[0].copy()
    atoms.calc = mine
    first = mine.get_property("energy_std", atoms)
    mine.calibration = 10.0
    assert mine.get_property("energy_std", atoms) == pytest.approx(5.0 * first)
    mine.set(calibration=4.0)
    assert mine.calibration == 4.0
    assert mine.get_property("energy_std", atoms) == pytest.approx(2.0 * first)


def test_todict_names_the_file_while_the_model_is_unchanged(calc, cu_test, tmp_path):
    import copy

    from ase.io import Trajectory

    fresh = CommitteeCalculator(model=copy.deepcopy(calc.model), calibration=calc.calibration)
    in_memory = json.dumps(fresh.todict())
    assert len(in_memory) > 50_000  # the whole state
    path = fresh.save(tmp_path / "m.pt")
    atoms = cu_test[2].copy()
    for source in (fresh, potlearn_ase.load(path)):
        d = source.todict()
        assert d["model"] == str(path.resolve()) and len(json.dumps(d)) < 1000
        again = CommitteeCalculator(**json.loads(json.dumps(d)))
        b = atoms.copy()
        b.calc = again
        atoms.calc = source
        np.testing.assert_array_equal(b.get_forces(), atoms.get_forces())
        assert again.calibration == source.calibration
    # ASE writes todict() into every trajectory frame: a few kB, not the model
    atoms.calc = potlearn_ase.load(path)
    with Trajectory(tmp_path / "md.traj", "w") as traj:
        for _ in range(5):
            atoms.positions[0, 0] += 0.01
            atoms.get_forces()
            traj.write(atoms)
    assert (tmp_path / "md.traj").stat().st_size < 5 * 20_000
    # a model updated in place is no longer the file's: the whole state again
    fresh.model.update(cu_test[:1], rng=0)
    assert isinstance(fresh.todict()["model"], dict)
    # a file that changed since the description was taken is refused, naming it
    d = potlearn_ase.load(path).todict()
    fresh.save(path)
    with pytest.raises(ModelFormatError, match="m.pt: the file changed"):
        CommitteeCalculator(**d)


def test_bad_model_files(calc, tmp_path):
    path = calc.save(tmp_path / "model.pt")
    blob = torch.load(path, weights_only=True)
    header = json.loads(blob["header"])
    header["format_version"] = 99
    torch.save({"header": json.dumps(header), "tensors": blob["tensors"]}, tmp_path / "v99.pt")
    with pytest.raises(ModelFormatError, match="format_version"):
        potlearn_ase.load(tmp_path / "v99.pt")
    del header["descriptor"]
    header["format_version"] = 1
    torch.save({"header": json.dumps(header), "tensors": blob["tensors"]}, tmp_path / "nokey.pt")
    with pytest.raises(ModelFormatError, match="descriptor"):
        potlearn_ase.load(tmp_path / "nokey.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ModelFormatError, match="junk.pt"):
        potlearn_ase.load(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        potlearn_ase.load(tmp_path / "missing.pt")


def test_unknown_element_named(calc):
    atoms = bulk("Ni", "fcc", a=3.52)
    atoms.calc = calc
    with pytest.raises(UnknownElementError, match="Ni"):
        atoms.get_potential_energy()


def test_runs_ase_md_and_conserves_energy(calc):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    e0 = atoms.get_total_energy()
    dyn.run(50)
    assert abs(atoms.get_total_energy() - e0) < 2e-3 * len(atoms)


def test_energy_calibration_scales_energy_std_only(tmp_path, rattled_cu):
    """Forces and stress use ``calibration``, energies ``energy_calibration``; both are saved."""
    import numpy as np

    from potlearn_ase.calculators.committee import CommitteeCalculator, committee_results, load
    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.models import LinearCommittee

    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.0, n_radial=3, l_max=1))
    coef = np.random.default_rng(0).normal(scale=0.1, size=(4, 1, desc.n_features + 1))
    model = LinearCommittee(desc, coef)
    pred = model.predict(rattled_cu)
    res = committee_results(pred, 2.0, energy_calibration=3.0)
    assert res["energy_std"] == pytest.approx(3.0 * pred["energy"].std())
    np.testing.assert_allclose(res["forces_std"], 2.0 * pred["forces"].std(0))
    np.testing.assert_allclose(res["stress_std"], 2.0 * pred["stress"].std(0))
    assert committee_results(pred, 2.0)["energy_std"] == pytest.approx(2.0 * pred["energy"].std())
    calc = CommitteeCalculator(model=model, calibration=2.0, energy_calibration=3.0)
    calc.save(tmp_path / "m.pt")
    for again in (load(tmp_path / "m.pt"), CommitteeCalculator(**calc.todict())):
        assert (again.calibration, again.energy_calibration) == (2.0, 3.0)
        atoms = rattled_cu.copy()
        atoms.calc = again
        atoms.get_potential_energy()
        assert again.results["energy_std"] == pytest.approx(res["energy_std"])
        assert again.results["energy_calibration"] == 3.0
