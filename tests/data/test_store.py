"""The crash-safe label store: round trips, content hashes, concurrent readers, SIGKILL."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

import potlearn_ase.data.store as store_module
from potlearn_ase.data.store import LabelStore, structure_hash
from potlearn_ase.errors import MissingLabelError, StoreError

PACKAGE = Path(store_module.__file__).resolve().parents[1]

# Deterministic records, shared (as source) with the child processes of the crash tests.
FACTORY = """
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator


def make_atoms(i):
    rng = np.random.default_rng(1000 + i)
    n = 1 + i % 6
    atoms = Atoms(numbers=rng.choice([1, 6, 8, 29], n), positions=rng.uniform(0, 5, (n, 3)),
                  cell=np.diag([5.0 + i % 3, 6.0, 7.0]) + 0.1 * np.eye(3)[::-1],
                  pbc=(True, True, i % 2 == 0))
    atoms.info["temperature"] = 100.0 + i
    atoms.info["source"] = f"md-{i}"
    return atoms


def make_record(i):
    rng = np.random.default_rng(i)
    atoms = make_atoms(i)
    stress = rng.normal(size=6) if i % 3 else None
    atoms.calc = SinglePointCalculator(atoms, energy=-3.25 * len(atoms) + rng.normal(),
                                       forces=rng.normal(size=(len(atoms), 3)), stress=stress)
    return atoms


def make_provenance(i):
    return {"reference": "emt", "reference_params": {"asap_cutoff": False, "k": [i, 2]},
            "engine": "ase", "md_step": i, "uncertainty": {"forces_max": 0.01 * i},
            "wall_time": 0.5 + i, "timestamp": f"t{i}", "run": "crash-test"}
"""
_NS: dict = {}
exec(FACTORY, _NS)
make_atoms, make_record, make_provenance = (
    _NS["make_atoms"],
    _NS["make_record"],
    _NS["make_provenance"],
)

# The child imports only the store (not the whole package and its torch), to stay fast.
CHILD_PRELUDE = f"""
import sys, types
for name, sub in (("potlearn_ase", ""), ("potlearn_ase.data", "/data")):
    module = types.ModuleType(name)
    module.__path__ = [{str(PACKAGE)!r} + sub]
    sys.modules[name] = module
from potlearn_ase.data.store import LabelStore
{FACTORY}
"""

WRITER = (
    CHILD_PRELUDE
    + """
store = LabelStore(sys.argv[1], fold_every=int(sys.argv[2]))
i = 0
while True:
    index = store.append(make_record(i), provenance=make_provenance(i))
    print("L", index, flush=True)
    if i % 7 == 3:
        index = store.append_failure(make_atoms(i), provenance=make_provenance(i),
                                     error=f"SCF did not converge ({i})")
        print("F", index, flush=True)
    i += 1
"""
)


def assert_record(atoms: Atoms, i: int) -> None:
    """Record ``atoms`` read back from a store is exactly ``make_record(i)``."""
    ref = make_record(i)
    assert np.array_equal(atoms.numbers, ref.numbers)
    assert np.array_equal(atoms.positions, ref.positions)
    assert np.array_equal(atoms.cell.array, ref.cell.array)
    assert np.array_equal(atoms.pbc, ref.pbc)
    assert atoms.get_potential_energy() == ref.get_potential_energy()
    assert np.array_equal(atoms.get_forces(), ref.get_forces())
    if "stress" in ref.calc.results:
        assert np.array_equal(atoms.get_stress(), ref.get_stress())
    else:
        assert "stress" not in atoms.calc.results
    assert atoms.info["temperature"] == 100.0 + i and atoms.info["source"] == f"md-{i}"
    assert atoms.info["provenance"] == make_provenance(i)


def test_round_trip_variable_sizes_stress_and_provenance(tmp_path: Path) -> None:
    path = tmp_path / "run" / "new" / "labels.h5"  # a writer creates missing folders
    with LabelStore(path, fold_every=3) as store:
        for i in range(8):
            atoms = make_record(i)
            atoms.info["array"] = np.arange(3)  # not a JSON scalar: dropped
            assert store.append(atoms, provenance=make_provenance(i)) == i
        # five records folded into HDF5, the rest in the journal: both read the same way
        assert len(store) == 8
        for i in range(8):
            assert_record(store[i], i)
        assert "array" not in store[0].info
    with LabelStore(path, "r") as store:
        assert len(store) == 8
        frames = store.frames()
        assert [len(a) for a in frames] == [1 + i % 6 for i in range(8)]
        for i, (a, b) in enumerate(zip(frames, store, strict=True)):
            assert_record(a, i)
            assert_record(b, i)
        assert_record(store[-1], 7)
        assert store.provenance(5) == make_provenance(5)
        with pytest.raises(IndexError):
            store[8]


def test_labels_of_a_real_calculator_and_filled_provenance(tmp_path: Path) -> None:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    with LabelStore(tmp_path / "s.h5") as store:
        store.append(atoms)
    back = LabelStore(tmp_path / "s.h5", "r")[0]
    assert back.get_potential_energy() == energy  # total energy, not per atom
    assert np.array_equal(back.get_forces(), forces)
    assert np.array_equal(back.get_stress(), stress)
    prov = back.info["provenance"]
    assert prov["reference"] is None and prov["uncertainty"] == {} and prov["timestamp"]
    # a 3x3 stress is stored in ASE Voigt order
    sym = np.array([[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]])
    atoms.calc = SinglePointCalculator(atoms, energy=1.0, forces=forces, stress=sym)
    with LabelStore(tmp_path / "s.h5") as store:
        assert np.array_equal(store[store.append(atoms)].get_stress(), [1, 2, 3, 4, 5, 6])


def test_structure_hash_and_find(tmp_path: Path) -> None:
    atoms = make_atoms(4)
    atoms.positions = np.round(atoms.positions, 4)  # on the 1e-8 grid, far from its edges
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((len(atoms), 3)))
    same = atoms.copy()
    same.positions += 1e-10  # below the hash resolution
    displaced = atoms.copy()
    displaced.positions[2, 1] += 1e-6
    strained = atoms.copy()
    strained.set_cell(atoms.cell.array * 1.0001)  # same positions, different cell
    other_pbc = atoms.copy()
    other_pbc.pbc = (False, False, False)
    assert structure_hash(same) == structure_hash(atoms)
    hashes = {structure_hash(a) for a in (atoms, displaced, strained, other_pbc)}
    assert len(hashes) == 4
    with LabelStore(tmp_path / "s.h5") as store:
        store.append(make_record(0))
        store.append(atoms)
        assert store.find(same) == 1 and store.contains(atoms)
        assert store.find(displaced) is None and not store.contains(strained)
        assert not store.contains(other_pbc)
    with LabelStore(tmp_path / "s.h5", "r") as store:  # a resumed run recognises it
        assert store.find(same) == 1 and store.find(make_atoms(0)) == 0
        assert store.find(displaced) is None


def test_failures_survive_reopen_and_are_not_labels(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    with LabelStore(path, fold_every=2) as store:
        store.append(make_record(0), provenance=make_provenance(0))
        for i in (1, 2, 3):
            k = store.append_failure(
                make_atoms(i), provenance=make_provenance(i), error=f"timeout after {i} s"
            )
            assert k == i - 1
    with LabelStore(path, "r") as store:
        assert len(store) == 1 and store.n_failures == 3
        failures = store.failures()
        assert [f.error for f in failures] == [f"timeout after {i} s" for i in (1, 2, 3)]
        for f, i in zip(failures, (1, 2, 3), strict=True):
            assert np.array_equal(f.atoms.positions, make_atoms(i).positions)
            assert f.atoms.calc is None and f.provenance == make_provenance(i)
        assert store.find_failure(make_atoms(2)) == 1
        assert not store.contains(make_atoms(2)) and store.find_failure(make_atoms(0)) is None


def test_missing_labels_store_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    no_forces = make_atoms(1)
    no_forces.calc = SinglePointCalculator(no_forces, energy=1.0)
    stale = make_record(2)
    stale.positions[0] += 0.1  # moved after its calculation
    with LabelStore(path) as store:
        journal = path.with_name("s.h5.journal").read_bytes()
        for atoms in (make_atoms(0), no_forces, stale):
            with pytest.raises(MissingLabelError):
                store.append(atoms)
        assert len(store) == 0
        assert path.with_name("s.h5.journal").read_bytes() == journal
    with LabelStore(path, "r") as store:
        assert len(store) == 0 and store.n_failures == 0


def test_bad_files_and_modes(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.h5"
    with pytest.raises(FileNotFoundError, match="nothing.h5"):
        LabelStore(missing, "r")
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5\n")
    for mode in ("r", "a"):
        with pytest.raises(StoreError, match="notes.h5"):
            LabelStore(text, mode)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(StoreError, match="foreign.h5"):
        LabelStore(foreign, "r")
    path = tmp_path / "s.h5"
    with LabelStore(path):
        with pytest.raises(StoreError, match="already open for writing"):
            LabelStore(path)
        with pytest.raises(StoreError, match="read-only"):
            LabelStore(path, "r").append(make_record(0))
    # a journal that belongs to another store is refused, not replayed
    with LabelStore(tmp_path / "b.h5") as other:
        other.append(make_record(0))
        shutil.copyfile(tmp_path / "b.h5.journal", tmp_path / "s.h5.journal")
    with pytest.raises(StoreError, match="another label store"):
        LabelStore(path, "r")


def test_torn_journal_tail_is_ignored(tmp_path: Path) -> None:
    live, crashed = tmp_path / "live.h5", tmp_path / "crashed.h5"
    with LabelStore(live, fold_every=100) as store:
        for i in range(3):
            store.append(make_record(i), provenance=make_provenance(i))
        # the files as a crash would leave them, the last record half written
        shutil.copyfile(live, crashed)
        journal = live.with_name("live.h5.journal").read_bytes()
        crashed.with_name("crashed.h5.journal").write_bytes(journal[:-40])
    with LabelStore(crashed, "r") as reader:
        assert len(reader) == 2
        assert_record(reader[1], 1)
    with LabelStore(crashed) as store:  # the writer drops the torn tail before appending
        assert len(store) == 2
        assert store.append(make_record(2), provenance=make_provenance(2)) == 2
        assert store.append(make_record(3), provenance=make_provenance(3)) == 3
    with LabelStore(crashed, "r") as reader:
        assert len(reader) == 4
        for i in range(4):
            assert_record(reader[i], i)


READER = (
    CHILD_PRELUDE
    + """
import json
with LabelStore(sys.argv[1], "r") as store:
    print(json.dumps({"n": len(store), "n_failures": store.n_failures,
                      "energies": [a.get_potential_energy() for a in store],
                      "steps": [store.provenance(i)["md_step"] for i in range(len(store))],
                      "errors": [f.error for f in store.failures()]}))
"""
)


def test_reader_in_second_process_while_writer_is_open(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    journal = path.with_name("s.h5.journal")
    with LabelStore(path, fold_every=4) as writer:
        for i in range(6):
            writer.append(make_record(i), provenance=make_provenance(i))
        writer.append_failure(make_atoms(9), provenance=None, error="segfault")
        assert journal.stat().st_size > 24  # some records live only in the journal
        before = (path.read_bytes(), journal.read_bytes())
        out = subprocess.run(
            [sys.executable, "-c", READER, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        seen = json.loads(out.stdout)
        assert seen["n"] == 6 and seen["n_failures"] == 1 and seen["errors"] == ["segfault"]
        assert seen["energies"] == [make_record(i).get_potential_energy() for i in range(6)]
        assert seen["steps"] == list(range(6))
        assert (path.read_bytes(), journal.read_bytes()) == before  # the reader wrote nothing
        reader = LabelStore(path, "r")
        for i in range(6, 10):  # the writer goes on, folding while the reader is open
            writer.append(make_record(i), provenance=make_provenance(i))
        assert len(reader) == 6
        reader.refresh()
        assert len(reader) == 10
        assert_record(reader[9], 9)
        assert_record(reader[2], 2)


def _wait(predicate, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            stderr = proc.stderr.read().decode() if proc.poll() is not None else ""
            raise AssertionError(f"writer exited or stalled (code {proc.poll()}): {stderr}")
        time.sleep(0.0002)


def _acknowledged(log: Path) -> dict[str, int]:
    """Highest acknowledged index of each table (-1 for none), complete lines only."""
    last = {"L": -1, "F": -1}
    for line in log.read_text().splitlines(keepends=True):
        if line.endswith("\n"):
            kind, index = line.split()
            assert int(index) == last[kind] + 1
            last[kind] = int(index)
    return last


def _check_crashed_store(path: Path, acked: dict[str, int]) -> None:
    if acked["L"] < 0 and not path.exists():
        return  # killed before the store was created
    seen: tuple[int, int] | None = None
    for mode in ("r", "a", "r"):  # the reader first sees the crash state as it is
        with LabelStore(path, mode) as store:
            n, n_fail = len(store), store.n_failures
            if seen is None:  # every acknowledged record, at most one more not yet reported
                assert acked["L"] + 1 <= n <= acked["L"] + 2, (n, acked)
                assert acked["F"] + 1 <= n_fail <= acked["F"] + 2, (n_fail, acked)
            else:
                assert (n, n_fail) == seen, mode
            for i, atoms in enumerate(store):
                assert_record(atoms, i)
                assert store.find(make_atoms(i)) == i
            for f in store.failures():
                i = 7 * f.index + 3
                assert f.error == f"SCF did not converge ({i})" and i < n
                assert np.array_equal(f.atoms.positions, make_atoms(i).positions)
            seen = (n, n_fail)
            if mode == "a":  # recovered: appending continues at the right index
                assert store.append(make_record(n), provenance=make_provenance(n)) == n
                seen = (n + 1, n_fail)


def test_sigkill_at_any_moment_keeps_every_acknowledged_record(tmp_path: Path) -> None:
    rng = np.random.default_rng(2024)
    plans = ["early"] * 2 + ["random"] * 5 + ["fold"] * 5
    fold_delays = iter([0.0, 0.001, 0.002, 0.01, 0.03])  # into the copy ... the journal reset
    killed_mid_fold = 0
    for trial, plan in enumerate(plans):
        path = tmp_path / f"trial{trial}.h5"
        log = tmp_path / f"trial{trial}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", WRITER, str(path), "5"], stdout=out, stderr=subprocess.PIPE
            )
        try:
            if plan == "early":  # possibly while the store is being created
                time.sleep(rng.uniform(0.05, 0.4))
            else:
                n_lines = int(rng.integers(1, 80))  # at a fold, or later in the run
                _wait(lambda log=log, n=n_lines: log.read_text().count("\n") >= n, proc)
                if plan == "random":
                    time.sleep(rng.uniform(0.0, 0.25))
                else:
                    tmp = path.with_name(path.name + ".tmp")
                    _wait(lambda tmp=tmp: tmp.exists(), proc)
                    time.sleep(next(fold_delays))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL, stderr
        killed_mid_fold += path.with_name(path.name + ".tmp").exists()
        _check_crashed_store(path, _acknowledged(log))
    assert killed_mid_fold >= 1  # at least one kill landed inside a fold


def test_readers_see_consistent_snapshots_while_the_writer_folds(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    log = tmp_path / "writer.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), "3"], stdout=out, stderr=subprocess.PIPE
        )
    try:
        _wait(lambda: log.stat().st_size > 0, proc)
        last, snapshots = 0, 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            acked = _acknowledged(log)["L"]
            with LabelStore(path, "r") as reader:  # opened mid-append or mid-fold
                n = len(reader)
                assert n >= max(last, acked + 1)
                for i in {0, n // 2, n - 2, n - 1} & set(range(n)):
                    assert_record(reader[i], i)
                assert [f.index for f in reader.failures()] == list(range(reader.n_failures))
            last, snapshots = n, snapshots + 1
        assert snapshots > 10 and last > 10
    finally:
        proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
