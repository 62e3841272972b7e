

def test_float32_pair_vectors_stay_exact_for_unwrapped_md_positions():
    import torch
    from ase.build import bulk

    from potlearn_ase.descriptors.neighbours import padded_neighbours

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    far = atoms.copy()
    far.positions += 1000.0 * atoms.cell.array.sum(0)  # an atom that diffused 1000 cells away
    ref = padded_neighbours([atoms], 5.0).vectors()
    for frames in ([atoms], [far]):
        r32 = padded_neighbours(frames, 5.0, dtype=torch.float32).vectors()
        assert r32.dtype == torch.float32
        assert float((r32.double() - ref).abs().max()) < 1e-5


def test_radial_basis_and_its_derivative_are_exactly_zero_from_the_cutoff_on():
    """Pairs a skinned neighbour list keeps beyond the cutoff must add nothing."""
    import torch

    from potlearn_ase.descriptors.basis import bessel_radial

    rc = 4.5
    r = torch.tensor([rc, rc + 1e-12, rc + 0.01, rc + 0.5, 2 * rc], dtype=torch.float64)
    R, dR = bessel_radial(r, rc, 8, derivative=True)
    assert torch.count_nonzero(R) == 0 and torch.count_nonzero(dR) == 0
    inside, _ = bessel_radial(torch.tensor([rc - 0.3], dtype=torch.float64), rc, 8)
    assert torch.count_nonzero(inside) == 8  # and not zero everywhere


def test_skin_list_features_equal_a_cutoff_list_and_nan_positions_still_raise():
    import numpy as np
    import pytest
    import torch
    from ase.build import bulk

    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.errors import InvalidStructureError

    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.5, n_radial=4, l_max=2))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.1, seed=5)
    nl = desc.neighbour_list(1.0)
    wide = nl.update(atoms)
    assert wide.mask.sum() > desc.neighbours([atoms]).mask.sum()  # pairs beyond the cutoff
    ref = desc.compute(atoms)
    out = desc.compute(atoms, neighbours=wide)
    np.testing.assert_allclose(out.features.numpy(), ref.features.numpy(), rtol=0, atol=1e-13)
    G = torch.randn(2, *ref.features.shape, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    for a, b in zip(out.vjp(G), ref.vjp(G)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-12)
    # the autograd path too
    np.testing.assert_allclose(
        desc.features([atoms], neighbours=wide).numpy(), ref.features.numpy(), atol=1e-13
    )
    atoms.positions[2, 1] = np.nan
    with pytest.raises(InvalidStructureError):
        nl.update(atoms)
