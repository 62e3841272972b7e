"""Mechanical QoIs of every member: equation of state, cubic elastic constants, vacancy."""

from __future__ import annotations

import logging

import numpy as np
from ase import Atoms, units

from potlearn_ase.analysis.qoi.base import (
    Predictor,
    QoI,
    Source,
    as_predictor,
    conventional_cell,
    lattice_parameter,
    mean_calculator,
    member_predictor,
    repeat_for,
)
from potlearn_ase.errors import InvalidStructureError

__all__ = ["elastic_constants", "equation_of_state", "vacancy_cell", "vacancy_formation_energy"]

logger = logging.getLogger(__name__)


def equation_of_state(
    source: Source | Predictor,
    atoms: Atoms,
    *,
    max_strain: float = 0.04,
    n_points: int = 7,
    eos: str = "birchmurnaghan",
) -> dict[str, QoI]:
    """Equilibrium lattice constant, volume, energy and bulk modulus of every member.

    Energies of isotropically scaled copies of ``atoms`` (linear strain ``+-max_strain``) are
    fitted with :class:`ase.eos.EquationOfState`. The lattice constant is ``a`` of the standard
    conventional cell (:func:`conventional_cell`, so any cell of the same crystal gives the
    same value) scaled by ``(V0 / V)^(1/3)``.

    Returns
    -------
    dict
        ``lattice_constant`` (A), ``volume_per_atom`` (A^3), ``energy_per_atom`` (eV/atom: the
        energy at the minimum, on the potential's own zero; not a cohesive energy, which
        would need the isolated atom) and ``bulk_modulus`` (GPa).
    """
    from ase.eos import EquationOfState

    predict = as_predictor(source)
    if not atoms.pbc.all():
        raise ValueError("equation_of_state needs a fully periodic structure")
    V = atoms.get_volume()
    scales = 1.0 + np.linspace(-max_strain, max_strain, n_points)
    energies, volumes = [], []
    for s in scales:
        a = atoms.copy()
        a.set_cell(atoms.cell * s, scale_atoms=True)
        energies.append(predict(a)["energy"])
        volumes.append(V * s**3)
    E = np.array(energies)  # (n_points, M)
    v0, e0, B = [], [], []
    for m in range(E.shape[1]):
        fit = EquationOfState(volumes, E[:, m], eos=eos)
        v, e, b = fit.fit()
        v0.append(v)
        e0.append(e)
        B.append(b)
    v0a, n = np.array(v0), len(atoms)
    a_ref = lattice_parameter(atoms)
    return {
        "lattice_constant": QoI("lattice_constant", "A", a_ref * (v0a / V) ** (1.0 / 3.0)),
        "volume_per_atom": QoI("volume_per_atom", "A^3", v0a / n),
        "energy_per_atom": QoI("energy_per_atom", "eV/atom", np.array(e0) / n),
        "bulk_modulus": QoI("bulk_modulus", "GPa", np.array(B) / units.GPa),
    }


def elastic_constants(
    source: Source | Predictor, atoms: Atoms, *, strain: float = 0.005
) -> tuple[dict[str, QoI], np.ndarray]:
    """Cubic elastic constants C11, C12, C44 (GPa) of every member from finite strains.

    The strains act on the standard conventional cell of ``atoms`` (:func:`conventional_cell`:
    cube edges along x, y, z), so a rotated or non-cubic setting of the same crystal gives the
    same constants. The full ``6 x 6`` Voigt matrix comes from central differences of the
    stress under the six strains ``+-strain`` (engineering shear strain); C11, C12 and C44 are
    the cubic averages over equivalent entries, with a warning when the matrix is not cubic.
    Clamped-ion: exact for monatomic Bravais lattices.

    Returns
    -------
    qois : dict
        ``C11``, ``C12``, ``C44`` (GPa).
    C : np.ndarray
        ``(M, 6, 6)`` in GPa, in the axes of the conventional cell.
    """
    predict = as_predictor(source)
    conv = conventional_cell(atoms)
    if conv is None:
        logger.warning("no symmetry found: elastic constants in the input cell's x, y, z axes")
    else:
        atoms = conv
    voigt = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
    cols = []
    for a, b in voigt:
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = strain if a == b else 0.5 * strain
        sig = []
        for sgn in (1.0, -1.0):
            at = atoms.copy()
            at.set_cell(atoms.cell.array @ (np.eye(3) + sgn * eps), scale_atoms=True)
            sig.append(predict(at)["stress"])
        cols.append((sig[0] - sig[1]) / (2 * strain))  # (M, 6)
    C = np.stack(cols, axis=2) / units.GPa  # (M, 6 stress, 6 strain)
    C = 0.5 * (C + C.transpose(0, 2, 1))
    Cm = C.mean(axis=0)
    groups = np.array([np.diag(Cm)[:3], [Cm[0, 1], Cm[0, 2], Cm[1, 2]], np.diag(Cm)[3:]])
    tol = 0.02 * abs(Cm[0, 0])
    if np.ptp(groups, axis=1).max() > tol or np.abs(Cm[:3, 3:]).max() > tol:
        logger.warning("the elastic matrix is not cubic: C11, C12, C44 are averages over axes")
    qois = {
        "C11": QoI("C11", "GPa", np.mean([C[:, i, i] for i in range(3)], axis=0)),
        "C12": QoI("C12", "GPa", np.mean([C[:, 0, 1], C[:, 0, 2], C[:, 1, 2]], axis=0)),
        "C44": QoI("C44", "GPa", np.mean([C[:, i, i] for i in range(3, 6)], axis=0)),
    }
    return qois, C


def vacancy_cell(atoms: Atoms, min_atoms: int = 32) -> Atoms:
    """``atoms`` repeated to at least ``min_atoms`` atoms, with atom 0 removed (unrelaxed)."""
    vac = repeat_for(atoms, min_atoms)
    del vac[0]
    return vac


def vacancy_formation_energy(
    source: Source,
    atoms: Atoms,
    *,
    min_atoms: int = 32,
    relax: bool = True,
    fmax: float = 0.02,
    steps: int = 100,
) -> QoI:
    """Vacancy formation energy ``E(N-1) - (N-1)/N E(N)`` (eV) of every member.

    ``atoms`` is repeated to at least ``min_atoms`` atoms; atom 0 is removed and the positions
    (not the cell) are relaxed with the committee mean (or the calculator) when ``relax``.
    """
    from ase.optimize import BFGS

    if len(set(atoms.numbers)) > 1:
        raise InvalidStructureError(
            f"vacancy_formation_energy is defined here for elemental crystals; "
            f"{atoms.get_chemical_formula()} needs chemical potentials for its species"
        )
    predict = member_predictor(source)
    perfect = repeat_for(atoms, min_atoms)
    n = len(perfect)
    vac = vacancy_cell(atoms, min_atoms)
    if relax:
        vac.calc = mean_calculator(source)
        opt = BFGS(vac, logfile=None)
        converged = opt.run(fmax=fmax, steps=steps)
        if not converged:
            logger.warning("vacancy relaxation did not reach fmax=%g in %d steps", fmax, steps)
        vac = vac.copy()
    E_bulk = predict(perfect)["energy"]
    E_vac = predict(vac)["energy"]
    return QoI("vacancy_formation_energy", "eV", E_vac - (n - 1) / n * E_bulk)
