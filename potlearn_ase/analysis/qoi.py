"""Uncertainty of quantities of interest (QoIs): committee members pushed through properties.

Every member of a committee (for a linear model: a draw from the parameter posterior) is a
potential of its own; a QoI computed with each member gives a sample of the QoI's predictive
distribution, reported as mean +- sigma. The work is shared: each structure (a strained cell,
a displaced phonon supercell, an MD frame) is described once and :meth:`CommitteeModel.predict`
returns every member's energy, forces and stress from that one descriptor pass. For more
samples than members, :func:`posterior_committee` draws a larger linear committee from the
posterior.

The same functions take a plain ASE calculator (a one-member "committee", e.g. the reference),
so a potential and its reference are compared by exactly the same procedure.

Conventions and approximations (first order in the member spread):

* the structures are built at the equilibrium lattice constant of the committee mean; each
  member's own lattice constant is a QoI, but elastic constants, vacancy and phonons of every
  member are evaluated at the mean's lattice constant;
* elastic constants are clamped-ion (exact for monatomic Bravais lattices such as fcc Cu);
* the vacancy is relaxed with the committee mean and every member's energy is read at that
  geometry (the error is second order in the member's displacement of the minimum);
* the RDF comes from one MD run with the committee mean; each member's RDF is obtained by
  Boltzmann reweighting of its frames, ``w_m ~ exp(-(E_m - E_mean) / kT)``.

Units: eV, Angstrom, GPa for moduli, THz for phonon frequencies.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

from potlearn_ase.models.base import CommitteeModel

__all__ = [
    "QOI_NAMES",
    "PhononResult",
    "QoI",
    "QoIReport",
    "RDFResult",
    "compute_qois",
    "elastic_constants",
    "equation_of_state",
    "member_predictor",
    "phonon_band_plot",
    "phonons",
    "posterior_committee",
    "rdf",
    "vacancy_formation_energy",
]

logger = logging.getLogger(__name__)

#: every QoI family :func:`compute_qois` knows, in the order it computes them
QOI_NAMES = ("eos", "elastic", "vacancy", "phonons", "rdf")

Source = CommitteeModel | Calculator
Predictor = Callable[[Atoms], dict[str, np.ndarray]]


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class QoI:
    """One scalar quantity of interest, sampled once per committee member.

    Attributes
    ----------
    name : str
        E.g. ``"lattice_constant"``.
    unit : str
        E.g. ``"A"``, ``"GPa"``, ``"eV"``, ``"THz"``.
    samples : np.ndarray
        ``(M,)`` one value per member (posterior draw).
    """

    name: str
    unit: str
    samples: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples))

    @property
    def std(self) -> float:
        """Standard deviation over members (``ddof=0``, as the calculator's ``*_std``)."""
        return float(np.std(self.samples))

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "mean": self.mean, "std": self.std, "n": int(self.samples.size)}


@dataclass(frozen=True)
class PhononResult:
    """Phonons of every member: frequencies at special points, band structure and DOS (THz).

    Attributes
    ----------
    labels : tuple of str
        Special points, e.g. ``("G", "X", "W", "K", "L")``.
    special_frequencies : np.ndarray
        ``(M, n_points, n_bands)`` sorted frequencies at the special points.
    path_labels : tuple of str
        Labels along the band path; ``path_x`` their positions ``label_x``.
    path_x : np.ndarray
        ``(n_q,)`` distance along the band path (1/A).
    label_x : np.ndarray
        Positions of ``path_labels`` on ``path_x``.
    bands : np.ndarray
        ``(M, n_q, n_bands)``; empty when bands were not asked for.
    dos_frequencies : np.ndarray
        ``(n_f,)`` frequency grid of the DOS; ``dos`` ``(M, n_f)`` states per THz per cell.
    dos : np.ndarray
    """

    labels: tuple[str, ...]
    special_frequencies: np.ndarray
    path_labels: tuple[str, ...] = ()
    path_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    label_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bands: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    dos_frequencies: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dos: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def qois(self) -> list[QoI]:
        """Scalar QoIs ``phonon_<point>_<band>`` (band 1 the lowest) at each special point.

        The three acoustic branches at Gamma (zero by translation invariance) are left out.
        """
        out = []
        for k, lab in enumerate(self.labels):
            for b in range(self.special_frequencies.shape[2]):
                if lab == "G" and b < 3:
                    continue
                out.append(QoI(f"phonon_{lab}_{b + 1}", "THz", self.special_frequencies[:, k, b]))
        return out


@dataclass(frozen=True)
class RDFResult:
    """Radial distribution function of every member (Boltzmann-reweighted MD frames).

    Attributes
    ----------
    r : np.ndarray
        ``(n_bins,)`` bin centres (A).
    g : np.ndarray
        ``(M, n_bins)``.
    ess : np.ndarray
        ``(M,)`` effective number of frames behind each member's RDF (Kish).
    n_frames : int
        Frames sampled from the MD.
    """

    r: np.ndarray
    g: np.ndarray
    ess: np.ndarray
    n_frames: int

    def qois(self) -> list[QoI]:
        """Position (A) and height of the first peak, from a parabola through the top bins."""
        pos, height = [], []
        for g in self.g:
            k = int(np.argmax(g))
            k = min(max(k, 1), len(g) - 2)
            y0, y1, y2 = g[k - 1], g[k], g[k + 1]
            den = y0 - 2 * y1 + y2
            off = 0.5 * (y0 - y2) / den if den != 0 else 0.0
            dr = self.r[1] - self.r[0]
            pos.append(self.r[k] + off * dr)
            height.append(y1 - 0.25 * (y0 - y2) * off)
        return [
            QoI("rdf_peak_position", "A", np.array(pos)),
            QoI("rdf_peak_height", "", np.array(height)),
        ]


@dataclass(frozen=True)
class QoIReport:
    """Scalar QoIs with their member samples, plus phonon and RDF curves.

    Attributes
    ----------
    qois : dict of str to QoI
    phonons : PhononResult or None
    rdf : RDFResult or None
    structure : ase.Atoms
        The unit cell at the committee mean's lattice constant, where the QoIs were computed.
    """

    qois: dict[str, QoI]
    phonons: PhononResult | None = None
    rdf: RDFResult | None = None
    structure: Atoms | None = None

    def samples(self) -> dict[str, np.ndarray]:
        """``name -> (M,)`` member values of every scalar QoI."""
        return {k: q.samples for k, q in self.qois.items()}

    def table(self, reference: QoIReport | None = None) -> str:
        """Text table ``name  mean +- sigma  unit`` (with a reference column when given)."""
        head = f"{'quantity':<24} {'mean':>12} {'sigma':>10}  {'unit':<6}"
        if reference is not None:
            head += f" {'reference':>12} {'z':>7}"
        lines = [head, "-" * len(head)]
        for name, q in self.qois.items():
            line = f"{name:<24} {q.mean:>12.5g} {q.std:>10.3g}  {q.unit:<6}"
            if reference is not None and name in reference.qois:
                ref = reference.qois[name].mean
                z = (q.mean - ref) / q.std if q.std > 0 else float("nan")
                line += f" {ref:>12.5g} {z:>7.2f}"
            lines.append(line)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"qois": {k: q.to_dict() for k, q in self.qois.items()}}
        if self.phonons is not None:
            p = self.phonons
            out["phonons"] = {
                "labels": list(p.labels),
                "special_frequencies_mean": p.special_frequencies.mean(0).tolist(),
                "special_frequencies_std": p.special_frequencies.std(0).tolist(),
            }
            if p.dos.size:
                out["phonons"]["dos_frequencies"] = p.dos_frequencies.tolist()
                out["phonons"]["dos_mean"] = p.dos.mean(0).tolist()
                out["phonons"]["dos_std"] = p.dos.std(0).tolist()
        if self.rdf is not None:
            out["rdf"] = {
                "r": self.rdf.r.tolist(),
                "g_mean": self.rdf.g.mean(0).tolist(),
                "g_std": self.rdf.g.std(0).tolist(),
                "ess": self.rdf.ess.tolist(),
            }
        return out


# --------------------------------------------------------------------------- members
def posterior_committee(
    model: CommitteeModel, n_samples: int, *, rng: np.random.Generator | int | None = None
) -> CommitteeModel:
    """A linear committee of ``n_samples`` members drawn from ``model``'s parameter posterior.

    Parameters
    ----------
    model : LinearCommittee
        A linear model that keeps its posterior.
    n_samples : int
        Members of the new committee (antithetic pairs, see ``Posterior.sample``).
    rng : numpy Generator or seed

    Raises
    ------
    ValueError
        For a model without a Gaussian posterior (neural committees: use their members).
    """
    from potlearn_ase.models.linear import LinearCommittee

    if not isinstance(model, LinearCommittee) or model.posterior is None:
        raise ValueError(
            f"posterior_committee needs a linear model with a posterior; got a {model.kind} "
            "model (use its committee members instead)"
        )
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    S, K1 = model.coef.shape[1:]
    draws = model.posterior.sample(n_samples, rng=np.random.default_rng(rng))
    return LinearCommittee(
        model.descriptor,
        draws.reshape(n_samples, S, K1),
        posterior=model.posterior,
        normal_equations=model.normal_equations,
        config=model.config,
    )


def member_predictor(source: Source) -> Predictor:
    """``atoms -> {"energy": (M,), "forces": (M, N, 3), "stress": (M, 6)}`` for a committee
    (one descriptor pass for all members) or a plain ASE calculator (``M = 1``)."""
    from potlearn_ase.calculators.committee import CommitteeCalculator

    if isinstance(source, CommitteeCalculator):
        source = source.model
    if isinstance(source, CommitteeModel):
        model = source

        def predict_model(atoms: Atoms) -> dict[str, np.ndarray]:
            return dict(model.predict(atoms, forces=True, stress=bool(atoms.pbc.all())))

        return predict_model
    if isinstance(source, Calculator):
        calc = source

        def predict_calc(atoms: Atoms) -> dict[str, np.ndarray]:
            a = atoms.copy()
            a.calc = calc
            out = {
                "energy": np.array([a.get_potential_energy()]),
                "forces": a.get_forces()[None],
            }
            if a.pbc.all():
                out["stress"] = a.get_stress(voigt=True)[None]
            return out

        return predict_calc
    raise TypeError(f"expected a CommitteeModel or an ASE Calculator, got {type(source).__name__}")


def _as_predictor(source: Source | Predictor) -> Predictor:
    if isinstance(source, (CommitteeModel, Calculator)):
        return member_predictor(source)
    return source


def _mean_calculator(source: Source) -> Calculator:
    """The calculator that drives relaxations and MD: the committee mean, or ``source``."""
    from potlearn_ase.calculators.committee import CommitteeCalculator

    if isinstance(source, CommitteeModel):
        return CommitteeCalculator(model=source)
    return source


def _lattice_parameter(atoms: Atoms) -> float:
    try:
        return float(atoms.cell.get_bravais_lattice().a)
    except (ValueError, AttributeError, RuntimeError):
        return float((atoms.get_volume() / len(atoms)) ** (1.0 / 3.0))


def _repeat_for(atoms: Atoms, min_atoms: int) -> Atoms:
    n = max(1, int(np.ceil((min_atoms / len(atoms)) ** (1.0 / 3.0) - 1e-9)))
    return atoms.repeat(n)


# --------------------------------------------------------------------------- QoIs
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
    fitted with :class:`ase.eos.EquationOfState`. The lattice constant is the Bravais lattice's
    ``a`` scaled by ``(V0 / V)^(1/3)``.

    Returns
    -------
    dict
        ``lattice_constant`` (A), ``volume_per_atom`` (A^3), ``cohesive_energy`` (eV/atom: the
        energy per atom at the minimum) and ``bulk_modulus`` (GPa).
    """
    from ase.eos import EquationOfState

    predict = _as_predictor(source)
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
    a_ref = _lattice_parameter(atoms)
    return {
        "lattice_constant": QoI("lattice_constant", "A", a_ref * (v0a / V) ** (1.0 / 3.0)),
        "volume_per_atom": QoI("volume_per_atom", "A^3", v0a / n),
        "cohesive_energy": QoI("cohesive_energy", "eV/atom", np.array(e0) / n),
        "bulk_modulus": QoI("bulk_modulus", "GPa", np.array(B) / units.GPa),
    }


def elastic_constants(
    source: Source | Predictor, atoms: Atoms, *, strain: float = 0.005
) -> tuple[dict[str, QoI], np.ndarray]:
    """Cubic elastic constants C11, C12, C44 (GPa) of every member from finite strains.

    The full ``6 x 6`` Voigt matrix comes from central differences of the stress under the six
    strains ``+-strain`` (engineering shear strain); C11, C12 and C44 are the cubic averages
    over equivalent entries. Clamped-ion: exact for monatomic Bravais lattices.

    Returns
    -------
    qois : dict
        ``C11``, ``C12``, ``C44`` (GPa).
    C : np.ndarray
        ``(M, 6, 6)`` in GPa.
    """
    predict = _as_predictor(source)
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
    qois = {
        "C11": QoI("C11", "GPa", np.mean([C[:, i, i] for i in range(3)], axis=0)),
        "C12": QoI("C12", "GPa", np.mean([C[:, 0, 1], C[:, 0, 2], C[:, 1, 2]], axis=0)),
        "C44": QoI("C44", "GPa", np.mean([C[:, i, i] for i in range(3, 6)], axis=0)),
    }
    return qois, C


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

    predict = member_predictor(source)
    perfect = _repeat_for(atoms, min_atoms)
    n = len(perfect)
    vac = perfect.copy()
    del vac[0]
    if relax:
        vac.calc = _mean_calculator(source)
        opt = BFGS(vac, logfile=None)
        converged = opt.run(fmax=fmax, steps=steps)
        if not converged:
            logger.warning("vacancy relaxation did not reach fmax=%g in %d steps", fmax, steps)
        vac = vac.copy()
    E_bulk = predict(perfect)["energy"]
    E_vac = predict(vac)["energy"]
    return QoI("vacancy_formation_energy", "eV", E_vac - (n - 1) / n * E_bulk)


def _phonopy_atoms(atoms: Atoms) -> Any:
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=atoms.cell.array,
        scaled_positions=atoms.get_scaled_positions(),
    )


def phonons(
    source: Source,
    atoms: Atoms,
    *,
    supercell: int | Sequence[int] | None = None,
    min_atoms: int = 48,
    displacement: float = 0.01,
    bands: bool = True,
    dos: bool = True,
    npoints: int = 60,
    mesh: Sequence[int] = (12, 12, 12),
    dos_sigma: float = 0.15,
) -> PhononResult:
    """Harmonic phonons (phonopy, finite displacements) of every member.

    The displaced supercells are predicted once each; every member's forces give its own
    force constants. Special points and the band path follow ASE's Bravais-lattice
    conventions (:meth:`ase.cell.Cell.bandpath`) on phonopy's primitive cell.

    Parameters
    ----------
    source : CommitteeModel or ASE Calculator
    atoms : ase.Atoms
        The unit cell (primitive or conventional).
    supercell : int or 3 ints, optional
        Diagonal supercell multipliers of ``atoms``; by default the smallest cube of copies
        with at least ``min_atoms`` atoms.
    displacement : float
        Finite displacement (A).
    bands, dos : bool
        Also compute the band structure along the path (``npoints`` q-points) and the total
        DOS on a ``mesh`` with Gaussian smearing ``dos_sigma`` (THz).
    """
    from ase.cell import Cell
    from phonopy import Phonopy

    predict = member_predictor(source)
    if supercell is None:
        supercell = max(1, int(np.ceil((min_atoms / len(atoms)) ** (1.0 / 3.0) - 1e-9)))
    sc = [int(supercell)] * 3 if np.ndim(supercell) == 0 else [int(s) for s in supercell]
    ph = Phonopy(_phonopy_atoms(atoms), supercell_matrix=np.diag(sc), primitive_matrix="auto")
    ph.generate_displacements(distance=displacement)
    forces = []
    for cell in ph.supercells_with_displacements:
        a = Atoms(cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)
        F = predict(a)["forces"]
        forces.append(F - F.mean(axis=1, keepdims=True))  # remove drift
    F_all = np.stack(forces, axis=1)  # (M, n_disp, N, 3)
    path = Cell(ph.primitive.cell).bandpath(npoints=npoints)
    labels = tuple(path.special_points)
    special_q = np.array([path.special_points[k] for k in labels])
    x, label_x, path_labels = path.get_linear_kpoint_axis()
    M = F_all.shape[0]
    spec, band_list, dos_list = [], [], []
    fmax_dos = None
    for m in range(M):
        ph.forces = F_all[m]
        ph.produce_force_constants(show_drift=False)
        ph.run_qpoints(special_q)
        spec.append(np.sort(ph.qpoints.frequencies, axis=1))
        if bands:
            ph.run_qpoints(path.kpts)
            band_list.append(ph.qpoints.frequencies)
        if dos:
            ph.run_mesh(list(mesh), is_gamma_center=True)
            if fmax_dos is None:
                fmax_dos = 1.3 * float(np.max(ph.mesh.frequencies)) + 1.0
            ph.run_total_dos(
                sigma=dos_sigma, freq_min=-1.0, freq_max=fmax_dos, freq_pitch=0.05,
                use_tetrahedron_method=False,
            )
            dos_f = np.array(ph.total_dos.frequency_points)
            dos_list.append(np.array(ph.total_dos.dos))
    return PhononResult(
        labels=labels,
        special_frequencies=np.array(spec),
        path_labels=tuple(path_labels),
        path_x=np.asarray(x),
        label_x=np.asarray(label_x),
        bands=np.array(band_list) if bands else np.zeros((0, 0, 0)),
        dos_frequencies=np.asarray(dos_f) if dos else np.zeros(0),
        dos=np.array(dos_list) if dos else np.zeros((0, 0)),
    )


def rdf(
    source: Source,
    atoms: Atoms,
    *,
    temperature_K: float = 300.0,
    steps: int = 300,
    equilibration: int = 100,
    every: int = 5,
    timestep_fs: float = 2.0,
    r_max: float | None = None,
    n_bins: int = 80,
    min_atoms: int = 32,
    rng: np.random.Generator | int | None = None,
) -> RDFResult:
    """Radial distribution function of a short Langevin MD, per member by reweighting.

    The MD runs with the committee mean (or the calculator). Each frame's member energies
    ``E_m`` give member ``m`` the weight ``exp(-(E_m - E_mean) / kT)``, normalised over frames;
    a member's RDF is the weighted average of the frames' histograms. ``ess`` reports the
    effective number of frames behind each member (low values: the members disagree by more
    than ``kT`` and the reweighted spread is noisy).
    """
    from ase.md.langevin import Langevin
    from ase.neighborlist import neighbor_list

    from potlearn_ase.data.generate import thermalize

    gen = np.random.default_rng(rng)
    cell = _repeat_for(atoms, min_atoms)
    cell.calc = _mean_calculator(source)
    predict = member_predictor(source)
    if r_max is None:
        # half the smallest perpendicular width: no double counting of periodic images
        c = cell.cell.array
        widths = cell.get_volume() / np.linalg.norm(np.cross(c[[1, 2, 0]], c[[2, 0, 1]]), axis=1)
        r_max = 0.5 * float(widths.min())
    thermalize(cell, temperature_K, gen)
    dyn = Langevin(cell, timestep_fs * units.fs, temperature_K=temperature_K, friction=0.02,
                   rng=gen, fixcm=False)
    dyn.run(equilibration)
    edges = np.linspace(0.0, r_max, n_bins + 1)
    hists, energies = [], []
    for _ in range(max(1, (steps - equilibration) // every)):
        dyn.run(every)
        d = neighbor_list("d", cell, r_max)
        hists.append(np.histogram(d, bins=edges)[0])
        energies.append(predict(cell)["energy"])
    H = np.array(hists, dtype=float)  # (F, n_bins)
    E = np.array(energies)  # (F, M)
    beta = 1.0 / (units.kB * temperature_K)
    logw = -beta * (E - E.mean(axis=1, keepdims=True))
    logw -= logw.max(axis=0, keepdims=True)
    w = np.exp(logw)
    w /= w.sum(axis=0, keepdims=True)
    n = len(cell)
    rho = n / cell.get_volume()
    r = 0.5 * (edges[1:] + edges[:-1])
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = (w.T @ H) / (n * rho * shell)
    return RDFResult(r=r, g=g, ess=1.0 / np.sum(w**2, axis=0), n_frames=len(H))


# --------------------------------------------------------------------------- all at once
def _scale_spread(x: np.ndarray, alpha: float) -> np.ndarray:
    if alpha == 1.0:
        return x
    mean = x.mean(axis=0, keepdims=True)
    return mean + alpha * (x - mean)


def compute_qois(
    source: Source,
    atoms: Atoms,
    *,
    which: Sequence[str] = ("eos", "elastic", "vacancy", "phonons"),
    calibration: float = 1.0,
    relax_lattice: bool = True,
    phonon_options: dict[str, Any] | None = None,
    vacancy_options: dict[str, Any] | None = None,
    rdf_options: dict[str, Any] | None = None,
    rng: np.random.Generator | int | None = None,
) -> QoIReport:
    """Several QoIs of every member, mean +- sigma, in one report.

    Parameters
    ----------
    source : CommitteeModel, CommitteeCalculator or ASE Calculator
        A committee (its members are the samples; see :func:`posterior_committee` for more)
        or a reference calculator computed the same way.
    atoms : ase.Atoms
        The unit cell (e.g. ``ase.build.bulk("Cu", "fcc", a=3.61)``).
    which : sequence of str
        Among :data:`QOI_NAMES`.
    calibration : float
        Factor applied to the member spread of every QoI (the calculator's ``alpha``);
        a CommitteeCalculator passes its own.
    relax_lattice : bool
        Rescale ``atoms`` to the equilibrium volume of the committee mean first.
    phonon_options, vacancy_options, rdf_options : dict, optional
        Keyword arguments of :func:`phonons`, :func:`vacancy_formation_energy`, :func:`rdf`.
    """
    from potlearn_ase.calculators.committee import CommitteeCalculator

    unknown = sorted(set(which) - set(QOI_NAMES))
    if unknown:
        raise ValueError(f"unknown QoI {unknown[0]!r}; known: {', '.join(QOI_NAMES)}")
    if isinstance(source, CommitteeCalculator):
        calibration = source.calibration if calibration == 1.0 else calibration
        source = source.model
    predict = member_predictor(source)
    qois: dict[str, QoI] = {}
    structure = atoms.copy()
    if "eos" in which or relax_lattice:
        eos = equation_of_state(predict, atoms)
        if relax_lattice:
            mean_E = member_predictor(_mean_only(source))
            v0 = equation_of_state(mean_E, atoms)["volume_per_atom"].mean * len(atoms)
            structure.set_cell(atoms.cell * (v0 / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
        if "eos" in which:
            qois.update(eos)
    if "elastic" in which:
        qois.update(elastic_constants(predict, structure)[0])
    if "vacancy" in which:
        qois["vacancy_formation_energy"] = vacancy_formation_energy(
            source, structure, **(vacancy_options or {})
        )
    ph = None
    if "phonons" in which:
        ph = phonons(source, structure, **(phonon_options or {}))
        ph = PhononResult(
            labels=ph.labels,
            special_frequencies=_scale_spread(ph.special_frequencies, calibration),
            path_labels=ph.path_labels, path_x=ph.path_x, label_x=ph.label_x,
            bands=_scale_spread(ph.bands, calibration) if ph.bands.size else ph.bands,
            dos_frequencies=ph.dos_frequencies,
            dos=_scale_spread(ph.dos, calibration) if ph.dos.size else ph.dos,
        )
        qois.update({q.name: q for q in ph.qois()})
    rd = None
    if "rdf" in which:
        rd = rdf(source, structure, rng=rng, **(rdf_options or {}))
        rd = RDFResult(r=rd.r, g=_scale_spread(rd.g, calibration), ess=rd.ess,
                       n_frames=rd.n_frames)
        qois.update({q.name: q for q in rd.qois()})
    qois = {k: QoI(q.name, q.unit, _scale_spread(q.samples, calibration)) for k, q in qois.items()}
    return QoIReport(qois=qois, phonons=ph, rdf=rd, structure=structure)


def _mean_only(source: Source) -> Source:
    """A one-member committee holding the mean of a linear committee (else ``source``)."""
    from potlearn_ase.models.linear import LinearCommittee

    if isinstance(source, LinearCommittee):
        return LinearCommittee(source.descriptor, source.mean_coef()[None], config=source.config)
    return source


# --------------------------------------------------------------------------- plot
def phonon_band_plot(
    result: PhononResult,
    path: str | os.PathLike,
    *,
    reference: PhononResult | None = None,
    n_sigma: float = 1.0,
    title: str | None = None,
) -> Path:
    """Phonon bands (mean line, ``+-n_sigma`` band) and DOS side by side, saved as PNG.

    A ``reference`` (e.g. the reference calculator's phonons) is drawn as dashed lines.
    """
    from potlearn_ase.analysis.plots import _figure, _save

    if not result.bands.size:
        raise ValueError("phonon_band_plot needs bands: compute phonons(..., bands=True)")
    fig = _figure((7.0, 4.0))
    has_dos = bool(result.dos.size)
    gs = fig.add_gridspec(1, 2, width_ratios=(3, 1)) if has_dos else fig.add_gridspec(1, 1)
    ax = fig.add_subplot(gs[0, 0])
    mean, std = result.bands.mean(0), result.bands.std(0)
    x = result.path_x
    for b in range(mean.shape[1]):
        ax.fill_between(x, mean[:, b] - n_sigma * std[:, b], mean[:, b] + n_sigma * std[:, b],
                        color="tab:blue", alpha=0.3, lw=0)
        ax.plot(x, mean[:, b], color="tab:blue", lw=1.2,
                label="committee mean" if b == 0 else None)
        if reference is not None and reference.bands.size:
            ax.plot(reference.path_x, reference.bands.mean(0)[:, b], color="k", lw=1, ls="--",
                    label="reference" if b == 0 else None)
    for lx in result.label_x:
        ax.axvline(lx, color="0.7", lw=0.6)
    ax.set_xticks(result.label_x)
    ax.set_xticklabels(["$\\Gamma$" if s == "G" else s for s in result.path_labels])
    ax.set_xlim(x[0], x[-1])
    ax.set_ylabel("frequency (THz)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or f"phonons, mean $\\pm$ {n_sigma:g} sigma")
    if has_dos:
        ax2 = fig.add_subplot(gs[0, 1], sharey=ax)
        f, dm, ds = result.dos_frequencies, result.dos.mean(0), result.dos.std(0)
        ax2.fill_betweenx(f, dm - n_sigma * ds, dm + n_sigma * ds, color="tab:blue", alpha=0.3)
        ax2.plot(dm, f, color="tab:blue", lw=1.0)
        if reference is not None and reference.dos.size:
            ax2.plot(reference.dos.mean(0), reference.dos_frequencies, color="k", lw=1, ls="--")
        ax2.set_xlabel("DOS")
        ax2.tick_params(labelleft=False)
    return _save(fig, path)
