"""DFT references (GPAW, Quantum ESPRESSO): real calculations, fallbacks and checks before a run.

Si8 in a cubic diamond cell at the Gamma point with low cutoffs keeps each call to seconds;
the physics checked does not need converged settings.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import CalculationFailed
from ase.calculators.emt import EMT

from potlearn_ase.data.store import LabelStore
from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.reference import Reference
from potlearn_ase.learners.run import run_otf

needs_pw = pytest.mark.skipif(shutil.which("pw.x") is None, reason="Quantum ESPRESSO missing")
QE_FAST = {
    "calculator": "espresso",
    "kpts": (1, 1, 1),
    "input_data": {"system": {"ecutwfc": 20.0}},
}
# the SCF is converged until forces change by less than 1e-4 eV/A between iterations, so
# that a label and a separate call (from other starting wave functions) agree to ~1e-4
GPAW_FAST = {
    "calculator": "gpaw",
    "mode": {"name": "pw", "ecut": 200.0},
    "kpts": (1, 1, 1),
    "convergence": {"forces": 1e-4},
}


def _si8(seed: int = 1) -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def _otf_config(reference, run_dir, structure=None) -> dict:
    return {
        "structure": structure
        or {"bulk": "Si", "crystalstructure": "diamond", "a": 5.43, "cubic": True},
        "reference": reference,
        "model": {"kind": "linear", "descriptor": {"cutoff": 4.0, "n_radial": 4, "l_max": 1},
                  "fit": {"n_members": 4}},
        "md": {"ensemble": "langevin", "timestep_fs": 1.0, "steps": 6, "temperature_K": 600.0},
        "trigger": {"kind": "fixed", "max_force_std": 1e-6, "min_gap": 3},
        "initial": {"n_labels": 1, "rattle": 0.05},
        "validation": None,
        "run_dir": str(run_dir),
        "progress": False,
    }


# ------------------------------------------------------------------ fallbacks (no DFT needed)
class _FlakyEMT(EMT):
    """EMT that fails like an unconverged SCF while its ``fail`` parameter is set."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.fail = fail

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        if self.fail:
            raise CalculationFailed("SCF not converged")
        super().calculate(atoms, properties, system_changes)


def test_fallback_settings_are_tried_in_order_and_recorded():
    atoms = bulk("Cu", cubic=True)
    atoms.rattle(0.05, seed=0)
    ref = Reference(
        factory=lambda: _FlakyEMT(fail=True),
        fallbacks=[lambda: _FlakyEMT(fail=True), lambda: _FlakyEMT(fail=False)],
        retries=0,
    )
    res = ref.label(atoms)
    assert res.ok and res.attempts == 3
    assert res.atoms.info["reference_fallback"] == 2
    expected = atoms.copy()
    expected.calc = EMT()
    np.testing.assert_allclose(res.atoms.get_forces(), expected.get_forces(), atol=1e-12)


def test_failure_after_every_fallback_is_recorded_not_used():
    ref = Reference(factory=lambda: _FlakyEMT(fail=True), fallbacks=[lambda: _FlakyEMT(True)])
    res = ref.label(bulk("Cu", cubic=True))
    assert not res.ok and res.atoms is None and res.attempts == 2
    assert "SCF not converged" in res.error


# ------------------------------------------------------------------ Quantum ESPRESSO
@needs_pw
def test_espresso_single_point_through_the_reference():
    ref = Reference.from_spec(QE_FAST)
    atoms = _si8()
    ref.check(atoms)
    res = ref.label(atoms)
    assert res.ok, res.error
    forces = res.atoms.get_forces()
    assert forces.shape == (8, 3) and np.all(np.isfinite(forces))
    assert np.isfinite(res.atoms.get_potential_energy())
    assert np.abs(forces).max() > 0.1  # a rattled cell feels forces
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-3)  # Newton's third law
    assert res.atoms.get_stress().shape == (6,)
    assert ref.params["input_data"]["system"]["degauss"] == 0.01  # documented default kept


@needs_pw
def test_espresso_unconverged_scf_retried_with_fallback():
    spec = {
        **QE_FAST,
        "input_data": {"system": {"ecutwfc": 20.0}, "electrons": {"electron_maxstep": 2}},
        "fallback": [{"input_data": {"electrons": {"electron_maxstep": 100}}}],
    }
    res = Reference.from_spec(spec).label(_si8())
    assert res.ok and res.attempts == 2 and res.atoms.info["reference_fallback"] == 1
    # with no fallback that converges the failure is recorded and nothing is labelled
    spec["fallback"] = [{"input_data": {"electrons": {"electron_maxstep": 3}}}]
    res = Reference.from_spec(spec).label(_si8())
    assert not res.ok and res.atoms is None and "exit status" in res.error


def test_unreachable_pw_x_fails_before_the_run(tmp_path):
    with pytest.raises(ConfigError, match="not an executable"):
        Reference.from_spec({"calculator": "espresso", "command": "/nonexistent/bin/pw.x"})
    with pytest.raises(ConfigError, match="mpiexec-missing"):
        Reference.from_spec({"calculator": "espresso", "command": "mpiexec-missing -n 2 pw.x"})
    spec = {"calculator": "espresso", "command": "/nonexistent/bin/pw.x"}
    with pytest.raises(ConfigError, match="pw.x"):
        run_otf(_otf_config(spec, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@needs_pw
def test_missing_pseudopotential_fails_before_the_run(tmp_path):
    with pytest.raises(ConfigError, match=r"pseudopotentials\.Si: no file 'Si\.missing\.UPF'"):
        Reference.from_spec({**QE_FAST, "pseudopotentials": {"Si": "Si.missing.UPF"}})
    # no default pseudopotential for Al: named before the run directory is made
    structure = {"bulk": "Al", "crystalstructure": "fcc", "a": 4.05, "cubic": True}
    with pytest.raises(ConfigError, match="element Al"):
        run_otf(_otf_config(QE_FAST, tmp_path / "run", structure))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="not a directory"):
        Reference.from_spec({**QE_FAST, "pseudo_dir": str(tmp_path / "nowhere")})


# ------------------------------------------------------------------ GPAW
def test_gpaw_on_the_fly_labels_match_a_direct_call(tmp_path):
    gpaw = pytest.importorskip("gpaw", reason="GPAW is installed by make install")
    summary = run_otf(_otf_config(GPAW_FAST, tmp_path / "run"))
    assert summary["reference_calls"] >= 2 and summary["reference_failures"] == 0
    store = LabelStore(tmp_path / "run" / "labels.h5", mode="r")
    try:
        frames = store.frames()
        engines = [store.provenance(i)["engine"] for i in range(len(store))]
        assert store.provenance(len(store) - 1)["reference"] == "gpaw"
    finally:
        store.close()
    assert len(frames) == summary["reference_calls"] >= 2
    assert engines.count("initial") == 1 and len(engines) >= 2  # at least one call during MD
    last = frames[-1]
    direct = last.copy()
    direct.calc = gpaw.GPAW(
        mode={"name": "pw", "ecut": 200.0},
        kpts=(1, 1, 1),
        xc="PBE",
        occupations={"name": "fermi-dirac", "width": 0.1},
        convergence={"forces": 1e-4},
        txt=None,
    )
    np.testing.assert_allclose(last.get_forces(), direct.get_forces(), atol=5e-4)
    assert abs(last.get_potential_energy() - direct.get_potential_energy()) < 1e-5
