"""Neighbour-list reuse with a skin: same results as a list rebuilt every step, fewer builds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.md.langevin import Langevin

from potlearn_ase.calculators import CommitteeCalculator
from potlearn_ase.descriptors import ACEConfig, ACEDescriptor
from potlearn_ase.descriptors.neighbours import neighbour_pairs
from potlearn_ase.models import LinearFitConfig, fit_linear

CUTOFF = 4.5  # between the third (4.42 A) and fourth (5.1 A) fcc Cu shells: pairs cross it
KEYS = ("energy", "energies", "forces", "stress", "energy_std", "forces_std", "stress_std")


@pytest.fixture(scope="module")
def model(cu_train):
    desc = ACEDescriptor(["Cu"], ACEConfig(cutoff=CUTOFF, n_radial=4, l_max=2))
    return fit_linear(desc, cu_train[::3], LinearFitConfig(n_members=4), rng=0)


def _same(a: dict, b: dict) -> None:
    assert set(KEYS) & set(a) == set(KEYS) & set(b)
    for k in set(KEYS) & set(b):
        x, y = np.asarray(a[k]), np.asarray(b[k])
        scale = max(1.0, float(np.abs(y).max()))
        assert float(np.abs(x - y).max()) <= 1e-12 * scale, k


def _pairs_inside(atoms) -> set[tuple[int, ...]]:
    i, j, S = neighbour_pairs(atoms, CUTOFF)
    return {(a, b, *s) for a, b, s in zip(i.tolist(), j.tolist(), S.tolist())}


def test_md_with_a_reused_list_matches_a_list_rebuilt_every_step(model):
    reuse = CommitteeCalculator(model=model, calibration=1.7)  # the default skin, 0.5 A
    fresh = CommitteeCalculator(model=model, calibration=1.7, skin=0.0)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=2)
    atoms.calc = reuse
    dyn = Langevin(
        atoms, 2 * units.fs, temperature_K=1500, friction=0.05, fixcm=False,
        rng=np.random.default_rng(1),
    )
    seen = {"crossings_while_reused": 0, "calls": 0}
    last: dict = {"builds": None, "inside": None}

    def check() -> None:
        other = atoms.copy()
        other.calc = fresh
        other.get_forces()
        seen["calls"] += 1
        _same(reuse.results, fresh.results)
        builds, inside = reuse.neighbour_list().n_builds, _pairs_inside(atoms)
        if builds == last["builds"] and inside != last["inside"]:
            seen["crossings_while_reused"] += 1  # a pair crossed the cutoff, list kept
        last.update(builds=builds, inside=inside)

    dyn.attach(check, interval=1)
    dyn.run(200)
    builds = reuse.neighbour_list().n_builds
    assert seen["calls"] == 201
    assert seen["crossings_while_reused"] >= 10, seen
    assert 2 <= builds <= seen["calls"] // 4, builds  # rebuilt as atoms moved, not every step
    assert fresh.neighbour_list().n_builds == seen["calls"]


def test_the_list_is_rebuilt_after_a_large_move_a_cell_or_pbc_change(model):
    calc = CommitteeCalculator(model=model, skin=0.5)
    fresh = CommitteeCalculator(model=model, skin=0.0)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=3)
    atoms.calc = calc

    def builds_after(change) -> int:
        change()
        atoms.get_forces()
        other = atoms.copy()
        other.calc = fresh
        other.get_forces()
        _same(calc.results, fresh.results)
        return calc.neighbour_list().n_builds

    def move(i: int, dx: float):
        return lambda: atoms.positions.__setitem__((i, 0), atoms.positions[i, 0] + dx)

    assert builds_after(lambda: None) == 1
    assert builds_after(move(3, 0.2)) == 1  # 0.2 A < skin / 2 from the build
    assert builds_after(move(7, -0.24)) == 1
    assert builds_after(move(3, 0.1)) == 2  # atom 3 is now 0.3 A from where it was built
    assert builds_after(move(3, -0.2)) == 2
    strained = atoms.cell.array @ (np.eye(3) + 1e-3 * np.diag([1, 0, 0]))
    assert builds_after(lambda: atoms.set_cell(strained, scale_atoms=True)) == 3
    assert builds_after(lambda: atoms.set_pbc([True, True, False])) == 4
    assert builds_after(lambda: atoms.pop(5)) == 5
    assert builds_after(lambda: None) == 5
    calc.set(skin=1.0)  # a new skin: a new list
    assert builds_after(lambda: None) == 1
    calc.set(skin=0.0)  # no skin: a new list on every call
    assert [builds_after(move(0, 1e-6)) for _ in range(3)] == [1, 2, 3]


def test_float32_reuse_forms_pair_vectors_from_current_float64_positions(model):
    desc = ACEDescriptor(["Cu"], model.descriptor.config, dtype=torch.float32)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=4)
    atoms.positions += 1000.0 * atoms.cell.array.sum(0)  # unwrapped MD far from the origin
    nl = desc.neighbour_list(0.5)
    nl.update(atoms)
    atoms.positions[:5] += 0.1
    reused = desc.compute(atoms, neighbours=nl.update(atoms))
    assert nl.n_builds == 1
    ref = ACEDescriptor(["Cu"], model.descriptor.config).compute(atoms)
    err = float((reused.features.double() - ref.features).abs().max())
    assert err <= 2e-4 * float(ref.features.abs().max()), err
