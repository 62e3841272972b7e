"""ACE-like descriptor: derivatives against finite differences and autograd, invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule

from potlearn_ase.descriptors import ACEConfig, ACEDescriptor, descriptor_from_dict
from potlearn_ase.errors import InvalidStructureError, UnknownElementError
from tests.conftest import finite_difference_forces, finite_difference_stress


def _linear_energy(desc: ACEDescriptor, W: torch.Tensor):
    def energy(atoms: Atoms) -> np.ndarray:
        out = desc.compute(atoms, derivatives=False)
        return (W[:, out.species, :] * out.features).sum((1, 2)).numpy()

    return energy


CASES = {
    "Cu periodic": (["Cu"], lambda: bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))),
    "CuAu periodic": (["Cu", "Au"], None),
    "Cu cluster": (["Cu"], lambda: bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))),
    "CH4 molecule": (["H", "C"], lambda: molecule("CH4")),
}


def _structure(name: str, rattled_cuau: Atoms) -> Atoms:
    if name == "CuAu periodic":
        return rattled_cuau
    atoms = CASES[name][1]()
    if name == "Cu cluster":
        atoms.pbc = False
    atoms.rattle(0.08, seed=7)
    return atoms


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("body_order", [3, 4])
def test_forces_match_finite_differences(name, body_order, rattled_cuau):
    elements = CASES[name][0]
    atoms = _structure(name, rattled_cuau)
    desc = ACEDescriptor(
        elements, ACEConfig(cutoff=4.0, n_radial=4, l_max=3, body_order=body_order)
    )
    rng = np.random.default_rng(0)
    W = torch.tensor(rng.normal(size=(3, len(elements), desc.n_features)))
    out = desc.compute(atoms)
    dx, de = out.linear_vjp(W)
    fd = finite_difference_forces(_linear_energy(desc, W), atoms)
    np.testing.assert_allclose(-dx.numpy(), fd, atol=1e-6 * max(1.0, np.abs(fd).max()))
    if atoms.pbc.all():
        V = atoms.get_volume()
        fds = finite_difference_stress(_linear_energy(desc, W), atoms)
        sym = 0.5 * (de + de.transpose(1, 2)).numpy() / V
        voigt = np.stack(
            [sym[:, 0, 0], sym[:, 1, 1], sym[:, 2, 2], sym[:, 1, 2], sym[:, 0, 2], sym[:, 0, 1]], -1
        )
        np.testing.assert_allclose(voigt, fds, atol=1e-6 * max(1.0, np.abs(fds).max()))


def test_closed_form_matches_autograd(rattled_cuau):
    desc = ACEDescriptor(["Cu", "Au"], ACEConfig(cutoff=4.5, n_radial=5, l_max=2, body_order=4))
    out = desc.compute(rattled_cuau)
    G = torch.randn(2, len(rattled_cuau), desc.n_features, dtype=torch.float64)
    dx, de = out.vjp(G)
    pos = torch.tensor(rattled_cuau.positions, requires_grad=True)
    cell = torch.tensor(rattled_cuau.cell.array[None], requires_grad=True)
    B = desc.features([rattled_cuau], pos, cell)
    torch.testing.assert_close(B.detach(), out.features)
    for m in range(2):
        gx, gc = torch.autograd.grad((G[m] * B).sum(), (pos, cell), retain_graph=True)
        torch.testing.assert_close(gx, dx[m])
        # dE/dstrain = x^T dE/dx + cell^T dE/dcell (strain acts on both)
        strain = pos.detach().T @ gx + cell.detach()[0].T @ gc[0]
        torch.testing.assert_close(strain, de[m])


def test_invariance_rotation_translation_permutation(rattled_cuau):
    desc = ACEDescriptor(["Cu", "Au"], ACEConfig(cutoff=4.5, n_radial=5, l_max=3))
    ref = desc.compute(rattled_cuau, derivatives=False).features.numpy()
    rotated = rattled_cuau.copy()
    rotated.rotate(37, (1, 2, 3), rotate_cell=True)
    rotated.translate((0.3, -1.1, 2.0))
    np.testing.assert_allclose(
        desc.compute(rotated, derivatives=False).features.numpy(), ref, atol=1e-10
    )
    perm = np.random.default_rng(1).permutation(len(rattled_cuau))
    permuted = rattled_cuau[perm]
    np.testing.assert_allclose(
        desc.compute(permuted, derivatives=False).features.numpy(), ref[perm], atol=1e-10
    )


def test_small_cell_and_mixed_pbc():
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=5.0, n_radial=4, l_max=2))
    prim = bulk("Cu", "fcc", a=3.6)  # one atom, cell much smaller than twice the cutoff
    big = prim.repeat((3, 3, 3))
    f1 = desc.compute(prim, derivatives=False).features.numpy()
    f2 = desc.compute(big, derivatives=False).features.numpy()
    np.testing.assert_allclose(f2, np.repeat(f1, len(big), axis=0), rtol=1e-10, atol=1e-12)
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    assert list(slab.pbc) == [True, True, False]
    slab.rattle(0.05, seed=2)
    out = desc.compute(slab)
    W = torch.randn(1, 1, desc.n_features, dtype=torch.float64)
    fd = finite_difference_forces(_linear_energy(desc, W), slab)
    np.testing.assert_allclose(-out.linear_vjp(W)[0].numpy(), fd, atol=1e-6 * np.abs(fd).max())
    # surface atoms see fewer neighbours than bulk atoms
    assert out.features[:, 0].min() < out.features[:, 0].max()


def test_bad_input():
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.0))
    with pytest.raises(UnknownElementError, match="Ag"):
        desc.compute(bulk("Ag", "fcc", a=4.1))
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.positions[1, 0] = np.nan
    with pytest.raises(InvalidStructureError):
        desc.compute(atoms)
    flat = bulk("Cu", "fcc", a=3.6, cubic=True)
    flat.cell[2] = flat.cell[0]
    with pytest.raises(InvalidStructureError):
        desc.compute(flat)
    with pytest.raises(ValueError, match="l_max"):
        ACEConfig(l_max=5)


def test_todict_round_trip():
    desc = ACEDescriptor(["Cu", "Ni"], ACEConfig(cutoff=4.2, n_radial=6, l_max=1, body_order=4))
    again = descriptor_from_dict(desc.todict())
    assert again.todict() == desc.todict()
    assert again.n_features == desc.n_features


def test_batch_matches_single_structures(rattled_cu, rattled_cuau):
    desc = ACEDescriptor(["Cu", "Au"], ACEConfig(cutoff=4.0, n_radial=4, l_max=2))
    frames = [rattled_cu, rattled_cuau]
    batch = desc.compute_batch(frames)
    G = torch.randn(2, batch.features.shape[0], desc.n_features, dtype=torch.float64)
    dx, de = batch.vjp(G)
    start = 0
    for b, atoms in enumerate(frames):
        single = desc.compute(atoms)
        n = len(atoms)
        sx, sde = single.vjp(G[:, start : start + n])
        torch.testing.assert_close(sx, dx[:, start : start + n])
        torch.testing.assert_close(sde, de[:, b])
        start += n
