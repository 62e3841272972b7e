

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
