"""Many-body ACE: invariances, derivatives of every correlation order, smoothness, basis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from scipy.spatial.transform import Rotation

from potlearn_ase.descriptors import (
    ACEConfig,
    ACEDescriptor,
    FullACEConfig,
    FullACEDescriptor,
    descriptor_from_dict,
)
from potlearn_ase.errors import ConfigError
from tests.conftest import finite_difference_forces, finite_difference_stress

SMALL = {  # a small basis of each correlation order
    1: (6.0,),
    2: (6.0, 7.0),
    3: (6.0, 7.0, 7.0),
    4: (6.0, 7.0, 7.0, 6.0),
    5: (6.0, 7.0, 7.0, 6.0, 6.0),
}


def _cuau(compressed: bool = False) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
    atoms.numbers[[1, 3, 6]] = 79
    atoms.rattle(0.1, seed=4)
    if compressed:  # one pair well inside the core radius
        atoms.positions[1] = atoms.positions[0] + [1.3, 0.4, 0.2]
    return atoms


def _desc(nu: int, **kw) -> FullACEDescriptor:
    cfg = dict(cutoff=4.0, correlation_order=nu, max_degree=SMALL[nu], core_radius=2.0)
    cfg.update(kw)
    return FullACEDescriptor(["Cu", "Au"], FullACEConfig(**cfg))


def _energy(desc: FullACEDescriptor, W: torch.Tensor):
    """Member energies: linear part plus the core baseline."""

    def energy(atoms: Atoms) -> np.ndarray:
        out = desc.compute_batch([atoms], derivatives=False)
        lin = (W[:, out.species, :] * out.features).sum((1, 2))
        return (lin + out.baseline_energy()).numpy()

    return energy


@pytest.mark.parametrize("nu", [1, 2, 3, 4, 5])
def test_forces_and_stress_match_finite_differences(nu):
    atoms = _cuau(compressed=True)
    desc = _desc(nu)
    W = torch.tensor(np.random.default_rng(nu).normal(size=(2, 2, desc.n_features)))
    out = desc.compute_batch([atoms])
    assert float(out.baseline_energy()[0]) > 0.1  # the core acts on the compressed pair
    dx, de = out.linear_vjp(W)
    dx = dx + out.baseline_dx
    de = de[:, 0] + out.baseline_dstrain[0]
    fd = finite_difference_forces(_energy(desc, W), atoms)
    np.testing.assert_allclose(-dx.numpy(), fd, atol=1e-6 * max(1.0, np.abs(fd).max()))
    fds = finite_difference_stress(_energy(desc, W), atoms)
    sym = (0.5 * (de + de.transpose(1, 2))).numpy() / atoms.get_volume()
    voigt = sym[:, [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    np.testing.assert_allclose(voigt, fds, atol=1e-6 * max(1.0, np.abs(fds).max()))


def test_closed_form_vjp_matches_autograd():
    atoms = _cuau()
    desc = _desc(4)
    out = desc.compute_batch([atoms])
    G = torch.randn(3, len(atoms), desc.n_features, dtype=torch.float64)
    dx, de = out.vjp(G)
    pos = torch.tensor(atoms.positions, requires_grad=True)
    B = desc.features([atoms], pos)
    torch.testing.assert_close(B.detach(), out.features)
    for m in range(3):
        (gx,) = torch.autograd.grad((G[m] * B).sum(), pos, retain_graph=True)
        torch.testing.assert_close(gx, dx[m])
    # a linear committee's shared pass gives every member's own vjp
    W = torch.randn(3, 2, desc.n_features, dtype=torch.float64)
    dxl, _ = out.linear_vjp(W)
    for m in range(3):
        dxm, _ = out.vjp(W[m : m + 1, out.species, :])
        torch.testing.assert_close(dxl[m], dxm[0])


def test_rotation_translation_permutation_invariance():
    atoms = _cuau()
    desc = _desc(5)
    B = desc.compute(atoms, derivatives=False).features.numpy()
    assert np.abs(B).max() > 1e-3
    Q = Rotation.random(random_state=3).as_matrix()
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ Q.T
    rotated.cell = atoms.cell.array @ Q.T
    mirrored = atoms.copy()
    mirrored.positions = -atoms.positions
    mirrored.cell = -atoms.cell.array
    shifted = atoms.copy()
    shifted.positions += [0.3, -1.1, 2.5]
    for other in (rotated, mirrored, shifted):
        np.testing.assert_allclose(
            desc.compute(other, derivatives=False).features.numpy(), B, atol=1e-10
        )
    perm = np.random.default_rng(0).permutation(len(atoms))
    permuted = atoms[perm]
    np.testing.assert_allclose(
        desc.compute(permuted, derivatives=False).features.numpy(), B[perm], atol=1e-10
    )


def test_energy_and_forces_vanish_continuously_at_the_cutoff():
    desc = FullACEDescriptor(["Cu"], FullACEConfig(cutoff=4.0, correlation_order=3,
                                                   max_degree=(6.0, 7.0, 7.0)))
    W = torch.tensor(np.random.default_rng(1).normal(size=(1, 1, desc.n_features)))
    values = []
    for eps in (1e-1, 1e-2, 1e-3):
        dimer = Atoms("Cu2", positions=[[0, 0, 0], [4.0 - eps, 0.3, 0]], pbc=False)
        dimer.positions[1] *= (4.0 - eps) / np.linalg.norm(dimer.positions[1])
        out = desc.compute(dimer)
        e = float((W[0, 0] * out.features).sum())
        f = float(out.linear_vjp(W)[0].abs().max())
        values.append((eps, abs(e), f))
    for eps, e, f in values:  # C2 cutoff: energy ~ eps^3, force ~ eps^2
        assert e < 1e3 * eps**3 and f < 1e3 * eps**2
    far = Atoms("Cu2", positions=[[0, 0, 0], [4.001, 0, 0]], pbc=False)
    assert float(desc.compute(far).features.abs().max()) == 0.0


def test_core_repulsion_is_repulsive_inside_and_zero_outside():
    desc = FullACEDescriptor(["Cu", "Au"], FullACEConfig(cutoff=4.0, correlation_order=2,
                                                         max_degree=(4.0, 4.0)))
    r_out = float(desc.core.radii[0, 1])
    d = torch.linspace(0.3, 3.0, 400, dtype=torch.float64)
    si, sj = torch.zeros_like(d, dtype=torch.int64), torch.ones_like(d, dtype=torch.int64)
    phi, dphi = desc.core.pair(d, si, sj, torch.ones_like(d, dtype=torch.bool))
    inside = d < r_out
    assert bool((phi[inside] > 0).all() and (dphi[inside] < 0).all())
    assert bool((phi[~inside] == 0).all() and (dphi[~inside] == 0).all())
    near = d[inside].max()
    assert float(phi[inside][-1]) < 1e-3 * float(phi[0]) and (r_out - near) < 0.01


def test_power_spectrum_span_is_the_two_body_part():
    """For one element, the nu <= 2 features span the old power spectrum's space."""
    n_rad, l_max, D2, w_l = 7, 2, 8.0, 1.0  # nu = 2 reaches n = D2 - 1
    old = ACEDescriptor(["Cu"], ACEConfig(cutoff=4.5, n_radial=n_rad, l_max=l_max))
    new = FullACEDescriptor(["Cu"], FullACEConfig(cutoff=4.5, correlation_order=2,
                                                  max_degree=(4, D2), w_l=w_l, l_max=l_max))
    # the old features that the degree rule keeps: A_p00 (n <= D_1 = 4) and the pair products
    # (p, q, l) with (p + 1) + (q + 1) + 2 w_l l <= D2
    keep = list(range(4))
    iu = np.triu_indices(n_rad)
    for l in range(l_max + 1):
        for k, (p, q) in enumerate(zip(*iu)):
            if p + q + 2 + 2 * w_l * l <= D2:
                keep.append(n_rad + l * len(iu[0]) + k)
    rng = np.random.default_rng(5)
    rows_old, rows_new = [], []
    for _ in range(12):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.25, seed=int(rng.integers(1 << 30)))
        rows_old.append(old.compute(atoms, derivatives=False).features.numpy()[:, keep])
        rows_new.append(new.compute(atoms, derivatives=False).features.numpy())
    Xo, Xn = np.concatenate(rows_old), np.concatenate(rows_new)
    assert Xo.shape[1] == Xn.shape[1]  # same count, then each span holds the other
    for X, Y in ((Xn, Xo), (Xo, Xn)):
        coef, *_ = np.linalg.lstsq(X, Y, rcond=None)
        assert np.abs(X @ coef - Y).max() < 1e-8 * np.abs(Y).max()


def test_float32_matches_float64():
    atoms = _cuau()
    d64 = _desc(4)
    d32 = FullACEDescriptor(["Cu", "Au"], d64.config, dtype=torch.float32)
    W = torch.randn(2, 2, d64.n_features, dtype=torch.float64)
    o64, o32 = d64.compute(atoms), d32.compute(atoms)
    torch.testing.assert_close(o32.features.double(), o64.features, rtol=1e-4, atol=1e-4)
    dx64, _ = o64.linear_vjp(W)
    dx32, _ = o32.linear_vjp(W.float())
    torch.testing.assert_close(dx32.double(), dx64, rtol=1e-3, atol=1e-3)


def test_todict_round_trip_and_old_files_load_as_power_spectrum():
    desc = _desc(3)
    again = descriptor_from_dict(desc.todict())
    assert isinstance(again, FullACEDescriptor) and again.n_features == desc.n_features
    for key, M in desc.radial_mixing.items():
        np.testing.assert_array_equal(again.radial_mixing[key], M)
    atoms = _cuau()
    torch.testing.assert_close(again.compute(atoms).features, desc.compute(atoms).features)
    old = {"family": "ace", "elements": ["Cu"], "cutoff": 5.0, "n_radial": 8, "l_max": 2,
           "body_order": 3}
    assert type(descriptor_from_dict(old)) is ACEDescriptor


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"correlation_order": 2, "max_degree": (4.0, 1.5)}, "max_degree"),
        ({"correlation_order": 3, "max_degree": (4.0, 4.0)}, "max_degree"),
        ({"cutoff": 0.3}, "cutoff"),
        ({"cutoff": float("nan")}, "cutoff"),
        ({"core_radius": {"Cu-Ag": 1.5}}, "core_radius"),
        ({"core_radius": 6.0}, "core_radius"),
        ({"correlation_order": 7}, "correlation_order"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        FullACEDescriptor(["Cu", "Au"], FullACEConfig(**kwargs))


def test_design_rows_agree_with_the_vjp():
    frames = [_cuau(compressed=True), bulk("Au", "fcc", a=4.1).repeat((2, 2, 1))]
    frames[1].rattle(0.1, seed=2)
    desc = _desc(4)
    out = desc.compute_batch(frames)
    e_rows, dEdx, dEde = out.linear_terms()
    W = torch.randn(1, 2, desc.n_features, dtype=torch.float64)
    dx, de = out.linear_vjp(W)
    torch.testing.assert_close(torch.einsum("nxsk,sk->nx", dEdx, W[0]), dx[0])
    torch.testing.assert_close(torch.einsum("bxysk,sk->bxy", dEde, W[0]), de[0])
    energy = (W[0, out.species] * out.features).sum(1)
    per_structure = energy.new_zeros(2).index_add(0, out.batch, energy)
    torch.testing.assert_close(torch.einsum("bsk,sk->b", e_rows, W[0]), per_structure)


def test_fitted_cuau_model_keeps_atoms_apart_in_1500_k_md():
    """A fresh linear fit to EMT Cu-Au, run hot: the core keeps every pair above 1.2 A."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from potlearn_ase.calculators import CommitteeCalculator
    from potlearn_ase.models import LinearFitConfig, fit_linear

    rng = np.random.default_rng(0)
    frames = []
    for k in range(24):
        atoms = bulk("Cu", "fcc", a=3.75 + 0.05 * rng.normal(), cubic=True).repeat((2, 2, 2))
        atoms.numbers[rng.permutation(len(atoms))[:12]] = 79
        atoms.rattle(0.05 + 0.15 * k / 24, seed=k)
        atoms.calc = EMT()
        labels = dict(energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                      stress=atoms.get_stress())
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    desc = FullACEDescriptor(["Cu", "Au"], FullACEConfig(cutoff=4.5, correlation_order=3,
                                                         max_degree=(6.0, 8.0, 6.0)))
    model = fit_linear(desc, frames, LinearFitConfig(n_members=2), rng=0)
    atoms = frames[0].copy()
    atoms.calc = CommitteeCalculator(model=model)
    MaxwellBoltzmannDistribution(atoms, temperature_K=1500, rng=np.random.default_rng(1))
    dyn = Langevin(atoms, 2.0 * units.fs, temperature_K=1500, friction=0.02, fixcm=False,
                   rng=np.random.default_rng(2))
    closest = []
    dyn.attach(lambda: closest.append(atoms.get_all_distances(mic=True)[np.triu_indices(32, 1)]
                                      .min()), interval=5)
    dyn.run(300)
    assert min(closest) > 1.2, min(closest)
    # the barrier that keeps them apart at any energy: pushing one atom onto a neighbour,
    # the energy rises all the way in and the force pushes back ever harder (a bounded
    # linear part alone would flatten out as the atoms overlap)
    probe = frames[0].copy()
    probe.calc = CommitteeCalculator(model=model)
    direction = probe.positions[1] - probe.positions[0]
    direction /= np.linalg.norm(direction)
    energies, push = [], []
    for r in np.linspace(1.6, 0.2, 15):
        probe.positions[1] = probe.positions[0] + r * direction
        energies.append(probe.get_potential_energy())
        push.append(float(probe.get_forces()[1] @ direction))
    assert np.all(np.diff(energies) > 0) and np.all(np.diff(push) > 0)
    assert push[-1] > 1000.0  # eV/A at 0.2 A


def test_training_targets_and_predictions_carry_the_core():
    """Fits learn the labels minus the core; every prediction adds it back."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from potlearn_ase.models import LinearCommittee
    from potlearn_ase.training.batches import Shard

    atoms = _cuau(compressed=True)
    rng = np.random.default_rng(3)
    atoms.calc = SinglePointCalculator(atoms, energy=1.0, forces=rng.normal(size=(8, 3)))
    desc = _desc(3)
    out = desc.compute_batch([atoms])
    core_e = float(out.baseline_energy()[0])
    shard = Shard(desc, [atoms], np.arange(1))
    assert float(shard.energy[0]) == pytest.approx(1.0 - core_e)
    np.testing.assert_allclose(shard.forces.numpy(), atoms.get_forces() + out.baseline_dx.numpy())
    zero = LinearCommittee(desc, np.zeros((2, 2, desc.n_features + 1)))
    pred = zero.predict(atoms)  # a model with no weights predicts the core alone
    assert pred["energy"][0] == pytest.approx(core_e)
    np.testing.assert_allclose(pred["forces"][0], -out.baseline_dx.numpy())
