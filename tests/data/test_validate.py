"""Structure and label checks."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from potlearn_ase.data import check_structure, get_labels, require_labels
from potlearn_ase.errors import DataFormatError, InvalidStructureError, MissingLabelError
from tests.data.helpers import emt_label, labelled_molecule


def test_valid_structures_pass():
    check_structure(bulk("Cu", cubic=True))
    check_structure(labelled_molecule())
    slab = bulk("Cu", cubic=True)
    slab.pbc = (True, True, False)
    slab.cell[2] = 0.0  # no third vector needed along a non-periodic direction
    check_structure(slab)


def test_nan_position_is_rejected_with_atom_index_and_where():
    atoms = bulk("Cu", cubic=True)
    atoms.positions[2, 1] = np.nan
    with pytest.raises(InvalidStructureError, match=r"x\.xyz, frame 3: non-finite positions.*2"):
        check_structure(atoms, where="x.xyz, frame 3")


def test_empty_structure_is_rejected_where_it_comes_from():
    with pytest.raises(InvalidStructureError, match="pool.xyz, frame 2: the structure holds no"):
        check_structure(Atoms(cell=[4, 4, 4], pbc=True), where="pool.xyz, frame 2")


def test_inf_cell_is_rejected():
    atoms = bulk("Cu", cubic=True)
    atoms.cell[0, 0] = np.inf
    with pytest.raises(InvalidStructureError, match="non-finite cell"):
        check_structure(atoms)


@pytest.mark.parametrize(
    "cell, pbc",
    [
        ([[3, 0, 0], [0, 3, 0], [3, 3, 0]], (True, True, True)),  # coplanar vectors
        ([[3, 0, 0], [6, 0, 0], [0, 0, 3]], (True, True, False)),  # collinear periodic pair
        ([[0, 0, 0], [0, 3, 0], [0, 0, 3]], (True, False, False)),  # zero periodic vector
    ],
)
def test_singular_periodic_cell_is_rejected(cell, pbc):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1, 1, 1]], cell=cell, pbc=pbc)
    with pytest.raises(InvalidStructureError, match="singular cell"):
        check_structure(atoms, where="frame 0")


def test_nearly_singular_cell_relative_to_lengths_is_rejected():
    eps = 1e-10  # third vector tilted out of plane by 1e-10 A over 100 A lengths
    cell = [[100.0, 0, 0], [0, 100.0, 0], [100.0, 100.0, eps]]
    atoms = Atoms("Cu", cell=cell, pbc=True)
    with pytest.raises(InvalidStructureError, match="singular cell"):
        check_structure(atoms)
    atoms.cell[2] = [100.0, 100.0, 1e-3]  # thin but genuinely three-dimensional
    check_structure(atoms)


def test_get_labels_reads_results_without_calculating():
    atoms = emt_label(bulk("Cu", cubic=True))
    labels = get_labels(atoms)
    assert set(labels) == {"energy", "forces", "stress"}
    assert isinstance(labels["energy"], float)
    assert labels["forces"].shape == (4, 3)
    assert labels["stress"].shape == (6,)
    labels["forces"][:] = 99.0  # a copy: the stored labels do not change
    assert not np.any(atoms.calc.results["forces"] == 99.0)

    fresh = bulk("Cu", cubic=True)
    fresh.calc = EMT()  # attached but never run: no labels, and no calculation triggered
    assert get_labels(fresh) == {}
    assert fresh.calc.results == {}
    assert get_labels(bulk("Cu")) == {}


def test_get_labels_converts_3x3_stress_to_voigt():
    atoms = bulk("Cu", cubic=True)
    s = np.array([[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]])
    atoms.calc = SinglePointCalculator(atoms, energy=0.0)
    atoms.calc.results["stress"] = s
    np.testing.assert_array_equal(get_labels(atoms)["stress"], [1, 2, 3, 4, 5, 6])


def test_require_labels_names_what_is_missing_and_where():
    atoms = bulk("Cu", cubic=True)
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0)
    require_labels(atoms, energy=True, forces=False)
    with pytest.raises(MissingLabelError, match=r"train\.xyz, frame 7: missing forces"):
        require_labels(atoms, where="train.xyz, frame 7")
    with pytest.raises(MissingLabelError, match="missing forces, stress"):
        require_labels(atoms, stress=True)
    labelled = emt_label(bulk("Cu", cubic=True))
    require_labels(labelled, stress=True)


def test_require_labels_rejects_nonfinite_and_misshapen_labels():
    atoms = bulk("Cu", cubic=True)
    atoms.calc = SinglePointCalculator(atoms, energy=np.nan, forces=np.zeros((4, 3)))
    with pytest.raises(MissingLabelError, match="non-finite energy"):
        require_labels(atoms)
    atoms.calc = SinglePointCalculator(atoms, energy=1.0)
    atoms.calc.results["forces"] = np.zeros((3, 3))
    with pytest.raises(DataFormatError, match=r"shape \(3, 3\), expected \(4, 3\)"):
        require_labels(atoms)
