"""Export of linear SNAP models: LAMMPS's pair_style snap must reproduce our predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT

from potlearn_ase.data.generate import label
from potlearn_ase.engines.lammps.library import (
    ase_order,
    atoms_to_lammps,
    import_lammps,
    new_lammps,
    tensor_to_ase,
    vectors_to_ase,
)
from potlearn_ase.errors import EngineError

try:
    import_lammps()
except EngineError as exc:  # pragma: no cover - depends on the installation
    pytest.skip(f"LAMMPS not available: {exc}", allow_module_level=True)

from potlearn_ase.descriptors.snap import SNAPConfig, SNAPDescriptor  # noqa: E402
from potlearn_ase.engines.lammps.snap_export import snap_pair_commands, write_snap_files  # noqa: E402


def _pair_snap(atoms: Atoms, desc: SNAPDescriptor, coeff, param):
    """Energy, forces and stress (ASE frame and units) of LAMMPS's pair_style snap."""
    lmp = new_lammps()
    try:
        rot = atoms_to_lammps(lmp, atoms, desc.elements)
        for cmd in snap_pair_commands(desc, coeff, param):
            lmp.command(cmd)
        lmp.command("thermo_style custom step pe pxx pyy pzz pxy pxz pyz")
        lmp.command("run 0 post no")
        energy = lmp.get_thermo("pe")
        order = ase_order(lmp)
        forces = vectors_to_ase(np.array(lmp.numpy.extract_atom("f")[: len(atoms)][order]), rot)
        p = {k: lmp.get_thermo(k) for k in ("pxx", "pyy", "pzz", "pxy", "pxz", "pyz")}
    finally:
        lmp.close()
    P = np.array(
        [[p["pxx"], p["pxy"], p["pxz"]], [p["pxy"], p["pyy"], p["pyz"]],
         [p["pxz"], p["pyz"], p["pzz"]]]
    )
    # atoms are at rest, so the pressure tensor is the virial one; ASE's stress is its negative
    stress = -tensor_to_ase(P, rot) * units.bar
    return energy, forces, stress


def _predict(desc: SNAPDescriptor, coef: np.ndarray, atoms: Atoms):
    """Energy, forces and 3x3 stress of the linear model ``coef`` through our descriptor."""
    out = desc.compute(atoms)
    W = torch.as_tensor(coef[None, :, 1:])
    dx, de = out.linear_vjp(W)
    species = out.species.numpy()
    energy = float((W[0, out.species] * out.features).sum()) + float(coef[species, 0].sum())
    stress = de[0].numpy() / out.volume if out.volume > 0 else None
    return energy, -dx[0].numpy(), stress


def _cu_frames() -> tuple[list[Atoms], Atoms]:
    """EMT-labelled 32-atom fcc Cu: rattled, compressed, expanded and sheared cells."""
    rng = np.random.default_rng(42)
    frames = []
    for k in range(14):
        atoms = bulk("Cu", "fcc", a=3.61 * (0.97 + 0.06 * rng.random()), cubic=True).repeat(2)
        if k % 5 == 4:  # sheared and stretched cells
            strain = np.eye(3) + rng.normal(0.0, 0.02, (3, 3))
            atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.rattle(0.04 + 0.08 * rng.random(), seed=int(rng.integers(1 << 30)))
        frames.append(label(atoms, EMT()))
    test = bulk("Cu", "fcc", a=3.63, cubic=True).repeat(2)
    test.set_cell(test.cell.array @ (np.eye(3) + [[0.01, 0.02, 0], [0, -0.01, 0.015], [0, 0, 0]]),
                  scale_atoms=True)
    test.rattle(0.08, seed=7)
    test.rotate(35, (1, 2, 0.5), rotate_cell=True)  # not LAMMPS's lower-triangular frame
    return frames, label(test, EMT())


def _fit(desc: SNAPDescriptor, frames: list[Atoms], lam: float = 1e-8) -> np.ndarray:
    """Ridge least squares on per-atom energies and forces from ``linear_terms``."""
    K = desc.n_features
    rows, targets = [], []
    for atoms in frames:
        n = len(atoms)
        e_row, dEdx, _ = desc.compute(atoms).linear_terms()
        rows.append(np.concatenate([[n], e_row[0].numpy()])[None] / n * 30.0)
        targets.append([atoms.get_potential_energy() / n * 30.0])
        A_f = np.zeros((3 * n, 1 + K))
        A_f[:, 1:] = dEdx[:, :, 0, :].reshape(3 * n, K).numpy()
        rows.append(A_f)
        targets.append(-atoms.get_forces().reshape(-1))
    A, y = np.concatenate(rows), np.concatenate(targets)
    scale = np.abs(A).max(0)
    scale[scale == 0] = 1.0
    As = A / scale
    reg = np.sqrt(lam) * np.eye(1 + K)[1:]  # the constant is not regularised
    sol = np.linalg.lstsq(np.vstack([As, reg]), np.concatenate([y, np.zeros(K)]), rcond=None)[0]
    return (sol / scale)[None]


def test_fitted_cu_model_runs_identically_in_lammps(tmp_path):
    desc = SNAPDescriptor(["Cu"])
    frames, test = _cu_frames()
    coef = _fit(desc, frames)
    assert coef.shape == (1, 1 + desc.n_features)

    energy, forces, stress = _predict(desc, coef, test)
    # the fit itself is meaningful: it follows EMT on an unseen, strained and rotated frame
    f_emt = test.get_forces()
    assert np.sqrt(np.mean((forces - f_emt) ** 2)) < 0.1 * np.sqrt(np.mean(f_emt**2))
    assert abs(energy - test.get_potential_energy()) / len(test) < 0.005

    coeff_file, param_file = write_snap_files(coef, desc, tmp_path / "cu_fit")
    e_lmp, f_lmp, s_lmp = _pair_snap(test, desc, coeff_file, param_file)
    assert abs(e_lmp - energy) <= 1e-6 * abs(energy)
    np.testing.assert_allclose(f_lmp, forces, atol=1e-6, rtol=0)
    # LAMMPS's bar differs from ASE's in the 8th digit
    np.testing.assert_allclose(s_lmp, stress, atol=1e-6 * np.abs(stress).max(), rtol=0)
    desc.close()


def test_linear_committee_mean_exports(tmp_path):
    """fit_linear on SNAP features; its mean coefficients run unchanged in pair_style snap."""
    from potlearn_ase.models.linear import LinearCommittee, LinearFitConfig, fit_linear

    desc = SNAPDescriptor(["Cu"])
    frames, test = _cu_frames()
    model = fit_linear(desc, frames, LinearFitConfig(n_members=4), rng=0)
    mean = LinearCommittee(desc, model.mean_coef()[None]).predict(test)
    e_lmp, f_lmp, s_lmp = _pair_snap(
        test, desc, *write_snap_files(model.mean_coef(), desc, tmp_path / "mean")
    )
    assert abs(e_lmp - float(mean["energy"][0])) <= 1e-6 * max(1.0, abs(e_lmp))
    np.testing.assert_allclose(f_lmp, mean["forces"][0], atol=1e-6, rtol=0)
    voigt = s_lmp[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    np.testing.assert_allclose(voigt, mean["stress"][0], atol=1e-6 * np.abs(voigt).max(), rtol=0)
    desc.close()


def _cuau_cell() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 1))
    atoms.numbers[[1, 3, 6, 9, 10]] = 79
    shear = np.array([[0.1, 0.4, -0.2], [0.3, 0.0, 0.2], [0.2, -0.4, 0.1]])
    atoms.set_cell(atoms.cell.array + shear, scale_atoms=True)
    atoms.rattle(0.1, seed=2)
    return atoms


def _cuau_cluster() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 2))[:19]
    atoms.numbers[[0, 4, 7, 11]] = 79
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    atoms.rattle(0.1, seed=3)
    return atoms


CONFIGS = {
    "linear, bzeroflag 1": SNAPConfig(radii={"Au": 0.55}, weights={"Au": 0.7}),
    "quadratic": SNAPConfig(twojmax=4, quadratic=True, radii={"Au": 0.55}, weights={"Au": 0.9}),
    "bzeroflag 0, no switch": SNAPConfig(bzeroflag=0, switchflag=0, rmin0=0.2, rfac0=0.97),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("make", [_cuau_cell, _cuau_cluster], ids=["triclinic", "cluster"])
def test_two_element_export_matches(tmp_path, name, make):
    """Random coefficients: element order, radii, weights and flags all carry over."""
    desc = SNAPDescriptor(["Cu", "Au"], CONFIGS[name])
    atoms = make()
    rng = np.random.default_rng(5)
    coef = rng.normal(0.0, 1e-3, size=(2, 1 + desc.n_features))
    coef[:, 0] = [-3.5, -3.9]
    energy, forces, stress = _predict(desc, coef, atoms)
    e_lmp, f_lmp, s_lmp = _pair_snap(atoms, desc, *write_snap_files(coef, desc, tmp_path / "p"))
    assert abs(e_lmp - energy) <= 1e-6 * abs(energy)
    assert np.abs(forces).max() > 1e-2
    np.testing.assert_allclose(f_lmp, forces, atol=1e-6, rtol=0)
    if stress is not None:
        np.testing.assert_allclose(s_lmp, stress, atol=1e-6 * np.abs(stress).max(), rtol=0)
    desc.close()


def test_constant_term_is_per_atom(tmp_path):
    """Only beta_0 set: pair_style snap gives sum_i beta_0[s_i] with bzeroflag 1 or 0."""
    atoms = _cuau_cell()
    for bzero in (1, 0):
        desc = SNAPDescriptor(["Cu", "Au"], SNAPConfig(bzeroflag=bzero))
        coef = np.zeros((2, 1 + desc.n_features))
        coef[:, 0] = [-3.5, -3.9]
        e_lmp, f_lmp, _ = _pair_snap(atoms, desc, *write_snap_files(coef, desc, tmp_path / "c"))
        n_au = int((atoms.numbers == 79).sum())
        assert e_lmp == pytest.approx(-3.5 * (len(atoms) - n_au) - 3.9 * n_au, rel=1e-12)
        assert np.abs(f_lmp).max() < 1e-12
        desc.close()


def test_file_contents_and_commands(tmp_path):
    config = SNAPConfig(twojmax=4, rcutfac=4.1, rfac0=0.98, rmin0=0.1,
                        radii={"Cu": 0.5, "Ag": 0.6}, weights={"Ag": 0.8}, bzeroflag=0)
    desc = SNAPDescriptor(["Cu", "Ag"], config)
    coef = np.random.default_rng(0).normal(size=(2, 1 + desc.n_features)) / 3.0
    coeff_file, param_file = write_snap_files(coef, desc, tmp_path / "sub dir" / "model")
    assert coeff_file.name == "model.snapcoeff" and param_file.name == "model.snapparam"

    lines = [ln for ln in coeff_file.read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0].split() == ["2", str(1 + desc.n_features)]
    K1 = 1 + desc.n_features
    assert lines[1].split() == ["Cu", "0.5", "1.0"]
    assert lines[2 + K1].split() == ["Ag", "0.6", "0.8"]
    read = np.array([[float(v) for v in lines[2 + s * (K1 + 1) : 2 + s * (K1 + 1) + K1]]
                     for s in range(2)])
    np.testing.assert_array_equal(read, coef)  # written with full precision

    params = dict(
        ln.split() for ln in param_file.read_text().splitlines() if ln and not ln.startswith("#")
    )
    assert params == {"rcutfac": "4.1", "twojmax": "4", "rfac0": "0.98", "rmin0": "0.1",
                      "bzeroflag": "0", "switchflag": "1", "quadraticflag": "0"}

    cmds = snap_pair_commands(desc, coeff_file, param_file)
    assert cmds[0] == "pair_style snap"
    assert cmds[1] == f'pair_coeff * * "{coeff_file}" "{param_file}" Cu Ag'
    desc.close()


def test_bad_inputs(tmp_path):
    desc = SNAPDescriptor(["Cu", "Au"])
    with pytest.raises(ValueError, match=r"\(2, 31\)"):
        write_snap_files(np.zeros((1, 31)), desc, tmp_path / "x")
    coef = np.zeros((2, 31))
    coef[1, 4] = np.nan
    with pytest.raises(ValueError, match=r"coef\[1, 4\] of element Au"):
        write_snap_files(coef, desc, tmp_path / "x")
    assert not (tmp_path / "x.snapcoeff").exists()
    with pytest.raises(TypeError, match="SNAPDescriptor"):
        snap_pair_commands(object(), "a", "b")  # type: ignore[arg-type]
