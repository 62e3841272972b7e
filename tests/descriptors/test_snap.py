"""SNAP descriptor through LAMMPS: derivatives against finite differences, invariances, frames."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111

from potlearn_ase.descriptors.base import strain_to_voigt_stress
from potlearn_ase.engines.lammps.library import (
    ase_order,
    atoms_to_lammps,
    import_lammps,
    lammps_box,
    new_lammps,
    vectors_to_ase,
)
from potlearn_ase.errors import ConfigError, EngineError, InvalidStructureError, UnknownElementError
from tests.conftest import finite_difference_forces, finite_difference_stress

try:
    import_lammps()
except EngineError as exc:  # pragma: no cover - depends on the installation
    pytest.skip(f"LAMMPS not available: {exc}", allow_module_level=True)

from potlearn_ase.descriptors.snap import (  # noqa: E402
    SNAPConfig,
    SNAPDescriptor,
    SNAPOutput,
    bispectrum_indices,
)

CUAU_CONFIG = SNAPConfig(radii={"Cu": 0.5, "Au": 0.55}, weights={"Au": 0.7})


@pytest.fixture(scope="module")
def cu_desc() -> SNAPDescriptor:
    d = SNAPDescriptor(["Cu"])
    yield d
    d.close()


@pytest.fixture(scope="module")
def cuau_desc() -> SNAPDescriptor:
    d = SNAPDescriptor(["Cu", "Au"], CUAU_CONFIG)
    yield d
    d.close()


def _weights(desc: SNAPDescriptor, seed: int = 0, scale: float = 0.01) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.normal(0, scale, size=(1, desc.n_species, desc.n_features)))


def _energy(desc: SNAPDescriptor, W: torch.Tensor):
    """A random linear model ``E = sum_i W[s_i] . B_i``."""

    def energy(atoms: Atoms) -> float:
        out = desc.compute(atoms, derivatives=False)
        return float((W[0, out.species] * out.features).sum())

    return energy


def _check_fd(desc: SNAPDescriptor, atoms: Atoms, *, stress: bool, seed: int = 0) -> None:
    W = _weights(desc, seed)
    energy = _energy(desc, W)
    out = desc.compute(atoms)
    dx, de = out.linear_vjp(W)
    fd_forces = finite_difference_forces(energy, atoms, h=1e-4)
    assert np.abs(fd_forces).max() > 0.05  # the check has something to see
    np.testing.assert_allclose(-dx[0].numpy(), fd_forces, atol=1e-4, rtol=0)
    if stress:
        fd_stress = finite_difference_stress(energy, atoms, h=1e-4)
        ours = strain_to_voigt_stress(de[0], out.volume).numpy()
        assert np.abs(fd_stress).max() > 1e-3
        # 1e-4 eV/A^3 of stress is far tighter than needed; compare dE/d(strain) in eV
        np.testing.assert_allclose(ours * out.volume, fd_stress * out.volume, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------- sizes and order
def test_number_of_components_matches_lammps(cu_desc):
    assert len(bispectrum_indices(6)) == 30 == cu_desc.n_features
    assert len(bispectrum_indices(8)) == 55
    assert bispectrum_indices(2) == [(0, 0, 0), (1, 0, 1), (1, 1, 2), (2, 0, 2), (2, 2, 2)]
    quad = SNAPDescriptor(["Cu"], SNAPConfig(twojmax=2, quadratic=True))
    assert quad.n_features == 5 + 15
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.1, seed=1)
    # LAMMPS's column count is checked inside compute: it would raise EngineError otherwise
    B = quad.compute(atoms).features.numpy()
    assert B.shape == (4, 20)
    # quadratic columns are 0.5 B_k^2 and B_k B_l (k < l), as pair_style snap expects
    lin = B[0, :5]
    expect = [0.5 * lin[k] ** 2 if k == l else lin[k] * lin[l] for k in range(5) for l in
              range(k, 5)]
    np.testing.assert_allclose(B[0, 5:], expect, rtol=1e-12, atol=1e-12)
    quad.close()


def test_isolated_atom_has_zero_features_with_bzero():
    lone = Atoms("Cu", positions=[[0.0, 0.0, 0.0]])
    with_b0 = SNAPDescriptor(["Cu"], SNAPConfig(bzeroflag=1))
    without = SNAPDescriptor(["Cu"], SNAPConfig(bzeroflag=0))
    assert np.abs(with_b0.compute(lone).features.numpy()).max() < 1e-12
    raw = without.compute(lone).features.numpy()
    assert np.abs(raw).max() > 0.1
    # bzeroflag only shifts features by the isolated-atom bispectrum
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    diff = without.compute(atoms).features.numpy() - with_b0.compute(atoms).features.numpy()
    np.testing.assert_allclose(diff, np.repeat(raw, 4, axis=0), atol=1e-10)
    with_b0.close()
    without.close()


# ---------------------------------------------------------------------- finite differences
def test_fd_periodic_cu(cu_desc, rattled_cu):
    _check_fd(cu_desc, rattled_cu, stress=True)


def test_fd_two_elements(cuau_desc, rattled_cuau):
    _check_fd(cuau_desc, rattled_cuau, stress=True, seed=1)


def test_fd_rotated_triclinic_cell(cuau_desc, rattled_cuau):
    """A cell that is not lower-triangular is rotated into LAMMPS's frame and back."""
    atoms = rattled_cuau.copy()
    shear = np.array([[0.1, 0.4, -0.2], [0.3, 0.0, 0.2], [0.2, -0.4, 0.1]])
    atoms.set_cell(atoms.cell.array + shear, scale_atoms=True)
    atoms.rotate(40, "x", rotate_cell=True)
    atoms.rotate(25, (1, 1, 0), rotate_cell=True)
    assert np.abs(np.triu(atoms.cell.array, 1)).max() > 0.5
    _check_fd(cuau_desc, atoms, stress=True, seed=2)


def test_fd_cluster_and_virial_identity(cuau_desc):
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 2))[:14]
    atoms.numbers[[2, 5, 9]] = 79
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    atoms.rattle(0.1, seed=5)
    _check_fd(cuau_desc, atoms, stress=False, seed=3)
    out = cuau_desc.compute(atoms)
    assert out.volume == 0.0
    # for a finite system, dE/d(strain)_ab = sum_i x_ia dE/dx_ib exactly
    W = _weights(cuau_desc, 3)
    dx, de = out.linear_vjp(W)
    virial = np.einsum("ia,ib->ab", atoms.positions, dx[0].numpy())
    np.testing.assert_allclose(de[0].numpy(), virial, atol=1e-9)


def test_fd_slab(cu_desc):
    atoms = fcc111("Cu", (2, 2, 3), a=3.6, vacuum=4.0)
    atoms.pbc = (True, True, False)
    atoms.rattle(0.08, seed=6)
    _check_fd(cu_desc, atoms, stress=False, seed=4)


def test_fd_quadratic_features(rattled_cuau):
    desc = SNAPDescriptor(["Cu", "Au"], SNAPConfig(twojmax=2, quadratic=True))
    _check_fd(desc, rattled_cuau[:6], stress=False, seed=5)
    desc.close()


# ---------------------------------------------------------------------- linear terms
def test_linear_terms_consistent_with_linear_vjp(cuau_desc, rattled_cuau):
    out = cuau_desc.compute(rattled_cuau)
    assert isinstance(out, SNAPOutput)
    assert out.features.dtype == torch.float64
    assert out.features.shape == (len(rattled_cuau), cuau_desc.n_features)
    e_row, dEdx, dEde = out.linear_terms()
    S, K = 2, cuau_desc.n_features
    assert e_row.shape == (S, K) and dEdx.shape == (len(rattled_cuau), 3, S, K)
    assert dEde.shape == (3, 3, S, K)
    species = out.species.numpy()
    np.testing.assert_allclose(e_row[1].numpy(), out.features[species == 1].sum(0).numpy())
    W = torch.as_tensor(np.random.default_rng(7).normal(size=(3, S, K)))
    dx, de = out.linear_vjp(W)
    np.testing.assert_allclose(dx.numpy(), np.einsum("iask,msk->mia", dEdx, W), atol=1e-12)
    np.testing.assert_allclose(de.numpy(), np.einsum("absk,msk->mab", dEde, W), atol=1e-12)
    # a translation-invariant energy has no net force
    assert float(dx.sum(1).abs().max()) < 1e-8 * max(1.0, float(dx.abs().max()))


def test_vjp_is_not_available_and_derivatives_flag(cu_desc, rattled_cu):
    out = cu_desc.compute(rattled_cu)
    with pytest.raises(NotImplementedError, match="linear models"):
        out.vjp(torch.zeros(1, len(rattled_cu), cu_desc.n_features, dtype=torch.float64))
    bare = cu_desc.compute(rattled_cu, derivatives=False)
    np.testing.assert_allclose(bare.features.numpy(), out.features.numpy(), atol=1e-12)
    with pytest.raises(RuntimeError, match="derivatives"):
        bare.linear_terms()


# ---------------------------------------------------------------------- invariances
def test_translation_rotation_permutation_invariance(cuau_desc, rattled_cuau):
    atoms = rattled_cuau
    base = cuau_desc.compute(atoms)
    W = _weights(cuau_desc, 8)
    dx0, de0 = base.linear_vjp(W)

    moved = atoms.copy()
    moved.positions += [1.3, -2.2, 7.9]  # crosses the periodic boundaries
    np.testing.assert_allclose(
        cuau_desc.compute(moved).features.numpy(), base.features.numpy(), atol=1e-9
    )

    rotated = atoms.copy()
    rotated.rotate(57, (1, 2, 3), rotate_cell=True)
    Q = np.linalg.solve(atoms.cell.array, rotated.cell.array)  # cell_rot = cell @ Q
    out = cuau_desc.compute(rotated)
    np.testing.assert_allclose(out.features.numpy(), base.features.numpy(), atol=1e-9)
    dx, de = out.linear_vjp(W)
    # forces rotate like vectors, strain derivatives like tensors
    np.testing.assert_allclose(dx[0].numpy(), dx0[0].numpy() @ Q, atol=1e-8)
    np.testing.assert_allclose(de[0].numpy(), Q.T @ de0[0].numpy() @ Q, atol=1e-8)

    perm = np.random.default_rng(9).permutation(len(atoms))
    shuffled = atoms[perm]
    out = cuau_desc.compute(shuffled)
    np.testing.assert_allclose(out.features.numpy(), base.features.numpy()[perm], atol=1e-9)
    np.testing.assert_array_equal(out.species.numpy(), base.species.numpy()[perm])
    dx, _ = out.linear_vjp(W)
    np.testing.assert_allclose(dx[0].numpy(), dx0[0].numpy()[perm], atol=1e-9)


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True), (False, False, False)])
def test_reused_instance_matches_a_fresh_one(cuau_desc, rattled_cuau, pbc):
    """Same cell: only the atoms move, even by many periods; results equal a new instance."""
    start = rattled_cuau.copy()
    start.pbc = pbc
    cuau_desc.compute(start)
    atoms = start.copy()
    atoms.rattle(0.05, seed=10)
    atoms.positions[0] += 3 * atoms.cell[0]
    atoms.positions[1] -= 4 * atoms.cell[2]
    reused = cuau_desc.compute(atoms).linear_terms()
    fresh_desc = SNAPDescriptor(["Cu", "Au"], CUAU_CONFIG)
    fresh = fresh_desc.compute(atoms).linear_terms()
    fresh_desc.close()
    for a, b in zip(reused, fresh, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-9)
    if not all(pbc):  # moving an atom by a cell vector matters without periodicity
        moved = cuau_desc.compute(start).features.numpy()
        assert np.abs(moved - cuau_desc.compute(atoms).features.numpy()).max() > 1e-3


# ---------------------------------------------------------------------- errors and config
def test_unknown_element(cu_desc):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.numbers[2] = 47
    with pytest.raises(UnknownElementError, match="Ag") as info:
        cu_desc.compute(atoms)
    assert info.value.element == "Ag"


def test_singular_periodic_cell(cu_desc):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.5, 1.5, 0]], cell=np.zeros((3, 3)), pbc=True)
    with pytest.raises(InvalidStructureError):
        cu_desc.compute(atoms)
    with pytest.raises(InvalidStructureError, match="singular"):
        lammps_box(atoms)
    good = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu_desc.compute(good)
    good.positions[2, 1] = np.nan  # the reused instance must not take it either
    with pytest.raises(InvalidStructureError, match="atom index 2"):
        cu_desc.compute(good)


def test_config_validation():
    with pytest.raises(ConfigError, match="twojmax"):
        SNAPConfig(twojmax=-2)
    with pytest.raises(ConfigError, match="rfac0"):
        SNAPConfig(rfac0=1.5)
    with pytest.raises(ConfigError, match="bzeroflag"):
        SNAPConfig(bzeroflag=2)
    with pytest.raises(ConfigError, match=r"radii\['Cu'\]"):
        SNAPConfig(radii={"Cu": -0.5})
    with pytest.raises(ConfigError, match="Ni"):
        SNAPDescriptor(["Cu"], SNAPConfig(radii={"Ni": 0.5}))


def test_todict_roundtrip_and_copies(cuau_desc, rattled_cuau):
    from potlearn_ase.descriptors import descriptor_from_dict

    d = json.loads(json.dumps(cuau_desc.todict()))
    assert d["family"] == "snap"
    again = descriptor_from_dict(d)
    assert isinstance(again, SNAPDescriptor)
    assert again.elements == cuau_desc.elements and again.config == cuau_desc.config
    ref = cuau_desc.compute(rattled_cuau, derivatives=False).features.numpy()
    for other in (again, pickle.loads(pickle.dumps(cuau_desc)), copy.deepcopy(cuau_desc)):
        np.testing.assert_allclose(
            other.compute(rattled_cuau, derivatives=False).features.numpy(), ref, atol=1e-12
        )
        other.close()
    with pytest.raises(ConfigError, match="cutoff"):
        SNAPDescriptor.fromdict({**d, "cutoff": 5.0})


# ---------------------------------------------------------------------- lammpsutil frames
@pytest.mark.parametrize(
    "pbc", [(True, True, True), (True, True, False), (True, False, True), (False, True, False),
            (False, False, False)]
)
def test_atoms_to_lammps_positions_roundtrip(pbc):
    atoms = bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2))
    atoms.numbers[[0, 3]] = 79
    atoms.rattle(0.05, seed=11)
    atoms.rotate(30, (1, 0.3, 0.2), rotate_cell=True)
    atoms.set_cell(atoms.cell.array[[1, 0, 2]])  # left-handed
    atoms.pbc = pbc
    lmp = new_lammps()
    rot = atoms_to_lammps(lmp, atoms, ["Cu", "Au"])
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    lmp.command("pair_style zero 4.0")
    lmp.command("pair_coeff * *")
    lmp.command("run 0 post no")
    order = ase_order(lmp)
    x = vectors_to_ase(np.array(lmp.numpy.extract_atom("x")[: len(atoms)][order]), rot)
    types = np.array(lmp.numpy.extract_atom("type")[: len(atoms)][order])
    np.testing.assert_array_equal(types, np.where(atoms.numbers == 79, 2, 1))
    box = lmp.extract_box()
    assert tuple(bool(p) for p in box[5]) == pbc
    # the box of LAMMPS is lower triangular; displacements are lattice vectors or zero
    d = x - atoms.positions
    if any(pbc):
        frac = np.linalg.lstsq(atoms.cell.array[list(np.flatnonzero(pbc))].T, d.T, rcond=None)[0]
        np.testing.assert_allclose(frac, np.round(frac), atol=1e-9)
        lattice = np.round(frac).T @ atoms.cell.array[list(np.flatnonzero(pbc))]
        np.testing.assert_allclose(d, lattice, atol=1e-9)
    else:
        np.testing.assert_allclose(d, 0.0, atol=1e-9)
    assert lammps_box(atoms).boundary == tuple("p" if p else "m" for p in pbc)
    with pytest.raises(EngineError, match="clear"):
        atoms_to_lammps(lmp, atoms, ["Cu", "Au"])
    lmp.close()


def test_declared_interface_batches_by_stacking_and_stays_on_the_cpu(cuau_desc, rattled_cuau):
    slab = fcc111("Cu", (2, 2, 2), a=3.7, vacuum=4.0)
    slab.numbers[[0, 5]] = 79
    frames = [rattled_cuau, slab, rattled_cuau[:3]]
    batch = cuau_desc.compute_batch(frames)
    singles = [cuau_desc.compute(a) for a in frames]
    assert cuau_desc.dtype == torch.float64 and cuau_desc.device == torch.device("cpu")
    np.testing.assert_array_equal(
        batch.features.numpy(), np.concatenate([o.features.numpy() for o in singles])
    )
    assert batch.batch.tolist() == [b for b, a in enumerate(frames) for _ in range(len(a))]
    assert batch.volumes == [o.volume for o in singles] and batch.n_structures == 3
    e, dx, de = batch.linear_terms()
    W = _weights(cuau_desc)
    fx, fe = batch.linear_vjp(W)
    start = 0
    for b, o in enumerate(singles):
        n = o.n_atoms
        e1, dx1, de1 = o.linear_terms()
        np.testing.assert_array_equal(e[b].numpy(), e1.numpy())
        np.testing.assert_array_equal(dx[start : start + n].numpy(), dx1.numpy())
        np.testing.assert_array_equal(de[b].numpy(), de1.numpy())
        gx, ge = o.linear_vjp(W)
        np.testing.assert_array_equal(fx[:, start : start + n].numpy(), gx.numpy())
        np.testing.assert_array_equal(fe[:, b].numpy(), ge.numpy())
        start += n
    with pytest.raises(NotImplementedError, match="linear models only"):
        batch.vjp(torch.zeros(1, batch.features.shape[0], cuau_desc.n_features))
    assert cuau_desc.to("cpu") is cuau_desc and cuau_desc.neighbour_list(0.5) is None
    with pytest.raises(ConfigError, match="cpu only"):
        cuau_desc.to("meta")
    with pytest.raises(TypeError, match="LAMMPS"):
        cuau_desc.compute(rattled_cuau, neighbours=object())  # type: ignore[arg-type]
