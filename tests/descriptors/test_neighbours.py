

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


def test_a_wider_list_gives_the_same_features_and_derivatives():
    """Pairs beyond the cutoff in a layout add exactly nothing to the descriptor."""
    import numpy as np
    import torch
    from ase.build import bulk

    from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
    from potlearn_ase.descriptors.neighbours import padded_neighbours

    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.5, n_radial=4, l_max=2))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.1, seed=5)
    wide = padded_neighbours([atoms], 5.5)
    assert wide.mask.sum() > desc.neighbours([atoms]).mask.sum()
    ref = desc.compute(atoms)
    out = desc.compute(atoms, neighbours=wide)
    np.testing.assert_allclose(out.features.numpy(), ref.features.numpy(), rtol=0, atol=1e-13)
    G = torch.randn(2, *ref.features.shape, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    for a, b in zip(out.vjp(G), ref.vjp(G)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(  # the autograd path too
        desc.features([atoms], neighbours=wide).numpy(), ref.features.numpy(), atol=1e-13
    )


def _pair_set(nb) -> set[tuple[int, ...]]:
    import numpy as np

    i, k = np.nonzero(nb.mask.numpy())
    j, S = nb.neighbour.numpy()[i, k], nb.shift.numpy()[i, k].astype(int)
    return {(a, b, *s) for a, b, s in zip(i.tolist(), j.tolist(), S.tolist())}


def test_skin_list_gives_the_pairs_of_a_new_list_while_reused():
    import numpy as np
    import pytest
    from ase.build import bulk

    from potlearn_ase.descriptors.neighbours import SkinNeighbourList, padded_neighbours
    from potlearn_ase.errors import InvalidStructureError

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.1, seed=5)
    nl = SkinNeighbourList(4.5, 1.0)
    rng = np.random.default_rng(0)
    start = atoms.positions.copy()
    nl.update(atoms)  # built here
    changed = 0
    before = None
    for _ in range(20):  # random moves of up to 0.45 A from the start: no rebuild needed
        step = rng.normal(size=start.shape)
        step *= 0.45 * rng.uniform(size=(len(atoms), 1)) / np.linalg.norm(step, axis=1)[:, None]
        atoms.positions = start + step
        pairs = _pair_set(nl.update(atoms))
        assert pairs == _pair_set(padded_neighbours([atoms], 4.5))
        changed += before is not None and pairs != before
        before = pairs
    assert nl.n_builds == 1 and changed >= 10  # pairs crossed the cutoff; list kept
    atoms.positions[2, 1] = np.nan
    with pytest.raises(InvalidStructureError):
        nl.update(atoms)
