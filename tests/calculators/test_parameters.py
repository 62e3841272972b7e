"""CommitteeCalculator settings live in ASE's ``parameters``: set(), todict(), trajectories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT
from ase.io import Trajectory, read

import potlearn_ase
from potlearn_ase.calculators import CommitteeCalculator
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.errors import ConfigError
from potlearn_ase.models import LinearFitConfig, fit_linear


@pytest.fixture(scope="module")
def model(cu_train):
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.0, n_radial=4, l_max=2))
    return fit_linear(desc, cu_train[::3], LinearFitConfig(n_members=4), rng=0)


def test_constructor_keywords_are_ase_parameters(model, tmp_path):
    calc = CommitteeCalculator(model=model, calibration=1.5, metrics={"rmse": 0.1}, skin=0.7)
    p = calc.parameters
    assert p["calibration"] == 1.5 and p["metrics"] == {"rmse": 0.1} and p["skin"] == 0.7
    assert p["model"] is None and p["dtype"] is None  # an in-memory model, in its own dtype
    path = calc.save(tmp_path / "m.pt")
    assert p["model"] == str(path.resolve()) and len(p["model_sha256"]) == 64
    # like EMT: parameters at their default are left out of todict (calibration and
    # metrics are always written, for whoever reads a trajectory frame)
    d = calc.todict()
    assert d["skin"] == 0.7 and "dtype" not in d and "device" not in d
    assert "skin" not in CommitteeCalculator(model=model).todict()
    assert set(EMT().todict()) <= set(EMT.default_parameters)


def test_set_and_the_calibration_property_discard_results_only_on_change(model, cu_test):
    calc = CommitteeCalculator(model=model, calibration=2.0)
    atoms = cu_test[0].copy()
    atoms.calc = calc
    first = atoms.calc.get_property("energy_std", atoms)
    assert calc.set(calibration=2.0) == {} and calc.results  # same value: results kept
    assert calc.set(calibration=4.0) == {"calibration": 4.0} and not calc.results
    assert calc.calibration == 4.0 == calc.parameters["calibration"]
    assert calc.get_property("energy_std", atoms) == pytest.approx(2.0 * first)
    calc.calibration = 1.0
    assert not calc.results and calc.parameters["calibration"] == 1.0
    assert calc.get_property("energy_std", atoms) == pytest.approx(0.5 * first)
    calc.set(metrics={"note": "x"}, skin=0.2)
    assert calc.metrics == {"note": "x"} and calc.todict()["skin"] == 0.2


def test_bad_parameters_are_config_errors_naming_the_key(model):
    calc = CommitteeCalculator(model=model)
    with pytest.raises(ConfigError, match="calibraton"):
        calc.set(calibraton=2.0)
    with pytest.raises(ConfigError, match="skin"):
        calc.set(skin=-0.1)
    with pytest.raises(ConfigError, match="model_sha256"):
        calc.set(model_sha256="0" * 64)
    with pytest.raises(ConfigError, match="dtype"):
        CommitteeCalculator(model=model, dtype="int64")


def test_trajectory_frames_carry_parameters_that_rebuild_the_calculator(model, cu_test, tmp_path):
    calc = CommitteeCalculator(model=model, calibration=1.3, skin=0.3)
    path = calc.save(tmp_path / "m.pt")
    frames = []
    with Trajectory(tmp_path / "md.traj", "w") as traj:
        for atoms in cu_test[:3]:
            a = atoms.copy()
            a.calc = calc
            a.get_forces()
            traj.write(a)  # ASE writes the results and calc.todict() of each frame
            frames.append(a)
    back = read(tmp_path / "md.traj", index=":")
    for a, b in zip(frames, back):
        np.testing.assert_array_equal(b.get_forces(), a.get_forces())
        assert b.calc.name == calc.name
        assert dict(b.calc.parameters) == json.loads(json.dumps(calc.todict()))
        again = CommitteeCalculator(**b.calc.parameters)
        assert again.parameters["model"] == str(path.resolve())
        assert again.calibration == 1.3 and again.parameters["skin"] == 0.3
        c = b.copy()
        c.calc = again  # the same model; neighbour slots may differ in order: rounding only
        np.testing.assert_allclose(c.get_forces(), a.get_forces(), rtol=0, atol=1e-12)


def test_a_float32_model_loaded_from_a_file_is_described_by_the_file(model, cu_test, tmp_path):
    path = CommitteeCalculator(model=model).save(tmp_path / "m.pt")
    calc = potlearn_ase.load(path, dtype="float32")
    assert calc.model.descriptor.dtype == torch.float32
    d = calc.todict()
    assert d["model"] == str(path.resolve()) and d["dtype"] == "float32"
    assert len(json.dumps(d)) < 1000  # the file and its precision, not the whole state
    again = CommitteeCalculator(**json.loads(json.dumps(d)))
    assert again.model.descriptor.dtype == torch.float32
    a, b = cu_test[1].copy(), cu_test[1].copy()
    a.calc, b.calc = calc, again
    np.testing.assert_array_equal(a.get_forces(), b.get_forces())
    # set(dtype=...) moves the model and keeps naming the file
    again.set(dtype="float64")
    assert again.model.descriptor.dtype == torch.float64
    assert again.todict()["model"] == str(path.resolve())
    np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-4)
    # an in-memory model given with a dtype runs in it (a converted copy)
    c = CommitteeCalculator(model=model, dtype=torch.float32)
    assert c.model.descriptor.dtype == torch.float32 and model.descriptor.dtype == torch.float64


def test_set_model_swaps_the_model_and_forgets_the_file(model, cu_test, tmp_path):
    calc = CommitteeCalculator(model=model)
    calc.save(tmp_path / "m.pt")
    atoms = cu_test[0].copy()
    atoms.calc = calc
    e0 = atoms.get_potential_energy()
    other = fit_linear(model.descriptor, cu_test[:4], LinearFitConfig(n_members=4), rng=1)
    calc.set(model=other)
    assert calc.model is other and calc.parameters["model"] is None
    assert isinstance(calc.todict()["model"], dict)
    assert atoms.get_potential_energy() != e0


def test_calculations_and_fits_leave_torch_threads_alone(model, cu_train, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # as on a 2-core machine
    atoms = cu_train[0].copy()
    atoms.calc = CommitteeCalculator(model=model)
    atoms.get_forces()
    fit_linear(model.descriptor, cu_train[:2], LinearFitConfig(n_members=2), rng=0)
    assert calls == []
    # the documented place to choose the count: once, before a run
    assert potlearn_ase.set_cpu_threads(len(atoms)) == 1 and calls == [1]
    assert potlearn_ase.set_cpu_threads(threads=2) == 2 and calls == [1]  # already 2
    assert potlearn_ase.set_cpu_threads(100_000) >= 1
    with pytest.raises(ConfigError, match="threads"):
        potlearn_ase.set_cpu_threads(threads=0)
