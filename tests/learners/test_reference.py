"""The reference wrapper: correct labels, failures and timeouts reported, never raised."""

from __future__ import annotations

import json
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes
from ase.calculators.emt import EMT

from potlearn_ase.errors import ConfigError, ReferenceFailure
from potlearn_ase.learners.reference import LabelResult, Reference


def rattled_cu(seed: int = 0, repeat=(2, 1, 1)) -> Atoms:
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    a.rattle(0.05, seed=seed)
    return a


class Failing(Calculator):
    """Raises CalculationFailed (like an SCF that does not converge) the first ``n_fail``
    times, then returns a harmonic energy."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, n_fail: int = 10**9, **kwargs):
        super().__init__(**kwargs)
        self.n_fail = n_fail
        self.calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        if self.calls <= self.n_fail:
            raise CalculationFailed("SCF did not converge in 300 iterations")
        x = self.atoms.positions
        self.results = {"energy": float(0.5 * np.sum(x**2)), "forces": -x.copy()}


class NaNForces(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        f = np.zeros((len(self.atoms), 3))
        f[1, 2] = np.nan
        self.results = {"energy": 1.0, "forces": f}


class Slow(Calculator):
    """EMT after waiting ``delay`` seconds (or until ``release`` is set)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, delay: float, release: threading.Event | None = None, **kwargs):
        super().__init__(**kwargs)
        self.delay = delay
        self.release = release or threading.Event()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.release.wait(self.delay)
        emt = EMT()
        emt.calculate(self.atoms, ["energy", "forces"], all_changes)
        self.results = {k: emt.results[k] for k in ("energy", "forces")}


def test_emt_labels_match_direct_emt():
    atoms = rattled_cu(1)
    direct = atoms.copy()
    direct.calc = EMT()
    res = Reference(EMT()).label(atoms)
    assert res.ok and res.error is None and res.attempts == 1 and res.wall_time >= 0
    assert res.atoms is not atoms and atoms.calc is None
    r = res.atoms.calc.results
    assert r["energy"] == pytest.approx(direct.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(r["forces"], direct.get_forces(), atol=1e-10)
    np.testing.assert_allclose(r["stress"], direct.get_stress(), atol=1e-10)  # periodic
    np.testing.assert_allclose(res.atoms.positions, atoms.positions)
    assert res.unwrap() is res.atoms


def test_stress_only_for_periodic_cells_unless_told():
    mol = molecule("H2O")
    mol.center(vacuum=3.0)
    calc = Failing(n_fail=0)
    assert "stress" not in Reference(calc).label(mol).atoms.calc.results
    assert "stress" not in Reference(EMT(), stress=False).label(rattled_cu()).atoms.calc.results
    # asked for stress the calculator cannot give: a recorded failure, not an exception
    res = Reference(Failing(n_fail=0), stress=True, retries=0).label(bulk("Cu"))
    assert not res.ok and "stress" in res.error


def test_failures_are_retried_then_reported():
    calc = Failing()
    res = Reference(calc, retries=2).label(rattled_cu())
    assert not res.ok and res.atoms is None
    assert res.attempts == 3 and calc.calls == 3
    assert "CalculationFailed" in res.error and "SCF did not converge" in res.error
    with pytest.raises(ReferenceFailure, match="3 attempt"):
        res.unwrap()


def test_a_transient_failure_is_recovered_by_a_retry():
    calc = Failing(n_fail=1)
    atoms = rattled_cu(2)
    res = Reference(calc, retries=1).label(atoms)
    assert res.ok and res.attempts == 2
    np.testing.assert_allclose(res.atoms.get_forces(), -atoms.positions)


def test_nan_results_are_failures():
    res = Reference(NaNForces(), retries=1).label(rattled_cu())
    assert not res.ok and res.attempts == 2
    assert "non-finite forces" in res.error


def test_timeout_stops_waiting_and_a_factory_serves_the_next_call():
    release = threading.Event()
    made = []

    def factory():
        calc = Slow(delay=30.0 if not made else 0.0, release=release)
        made.append(calc)
        return calc

    ref = Reference(factory=factory, timeout=0.3, retries=0)
    res = ref.label(rattled_cu())
    try:
        # the calculator is blocked for 30 s: a result now can only be the timeout
        assert not res.ok and res.attempts == 1 and "timeout" in res.error
        # the first calculator is still stuck: the next call gets a fresh one and succeeds
        res2 = ref.label(rattled_cu(3))
        assert res2.ok and len(made) == 2
    finally:
        release.set()


def test_timeout_with_a_single_busy_instance_fails_as_busy():
    release = threading.Event()
    ref = Reference(Slow(delay=30.0, release=release), timeout=0.2, retries=1)
    try:
        res = ref.label(rattled_cu())
        assert not res.ok and res.attempts == 2
        assert "busy" in res.error  # the second attempt found the instance still working
    finally:
        release.set()
    # once the abandoned call has ended, the instance returns to the pool and is used again
    again = ref.label(rattled_cu(5))
    assert again.ok and again.attempts == 1


def test_label_many_preserves_order():
    frames = [rattled_cu(seed=i, repeat=(1 + i % 3, 1, 1)) for i in range(6)]
    # later frames finish first: completion order differs from submission order
    delays = iter([0.3, 0.25, 0.2, 0.15, 0.1, 0.0])
    lock = threading.Lock()

    def factory():
        with lock:
            d = next(delays, 0.0)
        return Slow(delay=d)

    ref = Reference(factory=factory)
    results = ref.label_many(frames, max_workers=6)
    assert all(r.ok for r in results)
    for a, r in zip(frames, results, strict=True):
        direct = a.copy()
        direct.calc = EMT()
        assert len(r.atoms) == len(a)
        np.testing.assert_allclose(r.atoms.get_forces(), direct.get_forces(), atol=1e-10)
    with ThreadPoolExecutor(max_workers=2) as pool:
        again = Reference(EMT()).label_many(frames, executor=pool)
    assert [len(r.atoms) for r in again] == [len(a) for a in frames]


def test_label_many_reports_failures_in_place():
    frames = [rattled_cu(0), bulk("Si"), rattled_cu(1)]  # EMT has no Si parameters
    results = Reference.from_spec("emt").label_many(frames, max_workers=2)
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error == "NotImplementedError: No EMT-potential for Si"
    assert results[1].attempts == 2  # the default: one retry


def test_label_many_through_a_process_pool():
    ref = Reference.from_spec("emt")
    frames = [rattled_cu(seed=i, repeat=(i + 1, 1, 1)) for i in range(3)]
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        results = ref.label_many(frames, executor=pool)
    for a, r in zip(frames, results, strict=True):
        assert r.ok
        direct = a.copy()
        direct.calc = EMT()
        assert r.atoms.get_potential_energy() == pytest.approx(direct.get_potential_energy())


def test_describe_and_provenance_are_json_able():
    ref = Reference.from_spec({"calculator": "emt", "retries": 3})
    d = json.loads(json.dumps(ref.describe()))
    assert d["name"] == "emt" and d["params"] == {"calculator": "emt"} and d["retries"] == 3
    assert Reference(EMT()).name == "emt"
    assert isinstance(ref.make_calculator(), EMT)


def test_constructor_needs_one_calculator():
    with pytest.raises(ConfigError, match="exactly one"):
        Reference()
    with pytest.raises(ConfigError, match="exactly one"):
        Reference(EMT(), factory=EMT)


def test_label_result_fields():
    r = LabelResult(None, False, "boom", 0.5, 2)
    assert (r.ok, r.error, r.wall_time, r.attempts) == (False, "boom", 0.5, 2)
