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

from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase.analysis.qoi.base import (
    QoI,
    QoIReport,
    Source,
    mean_only,
    member_predictor,
    posterior_committee,
)
from potlearn_ase.analysis.qoi.mechanics import (
    elastic_constants,
    equation_of_state,
    vacancy_cell,
    vacancy_formation_energy,
)
from potlearn_ase.analysis.qoi.phonons import PhononResult, phonon_band_plot, phonons
from potlearn_ase.analysis.qoi.rdf import RDFResult, rdf

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

#: every QoI family :func:`compute_qois` knows, in the order it computes them
QOI_NAMES = ("eos", "elastic", "vacancy", "phonons", "rdf")


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
    calibration: float | None = None,
    relax_lattice: bool = True,
    phonon_options: dict[str, Any] | None = None,
    vacancy_options: dict[str, Any] | None = None,
    rdf_options: dict[str, Any] | None = None,
    rng: np.random.Generator | int | None = None,
    progress: bool = False,
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
    calibration : float, optional
        Factor applied to the member spread of every QoI (the calculator's ``alpha``). By
        default a CommitteeCalculator's own, else 1 (the raw spread); 1 asks for the raw
        spread of a calculator too.
    relax_lattice : bool
        Rescale ``atoms`` to the equilibrium volume of the committee mean first.
    phonon_options, vacancy_options, rdf_options : dict, optional
        Keyword arguments of :func:`phonons`, :func:`vacancy_formation_energy`, :func:`rdf`.
    progress : bool
        A progress bar (stderr), one step per QoI.
    """
    from tqdm.auto import tqdm

    from potlearn_ase.calculators.committee import CommitteeCalculator

    unknown = sorted(set(which) - set(QOI_NAMES))
    if unknown:
        raise ValueError(f"unknown QoI {unknown[0]!r}; known: {', '.join(QOI_NAMES)}")
    if isinstance(source, CommitteeCalculator):
        calibration = source.calibration if calibration is None else calibration
        source = source.model
    calibration = 1.0 if calibration is None else float(calibration)
    predict = member_predictor(source)
    qois: dict[str, QoI] = {}
    structure = atoms.copy()
    stages = [w for w in QOI_NAMES if w in which]
    bar = tqdm(total=len(stages), desc="qoi", unit="qoi", disable=not progress)
    bar.set_postfix_str("eos" if "eos" in which else "lattice")
    if "eos" in which or relax_lattice:
        eos = equation_of_state(predict, atoms)
        if relax_lattice:
            mean_E = member_predictor(mean_only(source))
            v0 = equation_of_state(mean_E, atoms)["volume_per_atom"].mean * len(atoms)
            structure.set_cell(atoms.cell * (v0 / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
        if "eos" in which:
            qois.update(eos)
            bar.update()
    if "elastic" in which:
        bar.set_postfix_str("elastic")
        qois.update(elastic_constants(predict, structure)[0])
        bar.update()
    if "vacancy" in which:
        bar.set_postfix_str("vacancy")
        qois["vacancy_formation_energy"] = vacancy_formation_energy(
            source, structure, **(vacancy_options or {})
        )
        bar.update()
    # the curves below are scaled as a whole, and their scalar QoIs taken from the scaled
    # curves, so every spread is scaled exactly once
    qois = {k: QoI(q.name, q.unit, _scale_spread(q.samples, calibration)) for k, q in qois.items()}
    ph = None
    if "phonons" in which:
        bar.set_postfix_str("phonons")
        ph = phonons(source, structure, **(phonon_options or {}))
        ph = PhononResult(
            labels=ph.labels,
            special_frequencies=_scale_spread(ph.special_frequencies, calibration),
            path_labels=ph.path_labels,
            path_x=ph.path_x,
            label_x=ph.label_x,
            bands=_scale_spread(ph.bands, calibration) if ph.bands.size else ph.bands,
            dos_frequencies=ph.dos_frequencies,
            dos=_scale_spread(ph.dos, calibration) if ph.dos.size else ph.dos,
        )
        qois.update({q.name: q for q in ph.qois()})
        bar.update()
    rd = None
    if "rdf" in which:
        bar.set_postfix_str("rdf")
        rd = rdf(source, structure, rng=rng, **(rdf_options or {}))
        rd = RDFResult(r=rd.r, g=_scale_spread(rd.g, calibration), ess=rd.ess, n_frames=rd.n_frames)
        qois.update({q.name: q for q in rd.qois()})
        bar.update()
    bar.close()
    return QoIReport(
        qois=qois,
        phonons=ph,
        rdf=rd,
        structure=structure,
        extrapolation=_extrapolation(source, structure, which, vacancy_options),
    )


def _extrapolation(
    source: Source, structure: Atoms, which: Sequence[str], vacancy_options: dict | None
) -> dict[str, float]:
    """Largest extrapolation grade of the bulk cell and the (unrelaxed) vacancy cell."""
    active = getattr(source, "active_set", None)
    if active is None:
        return {}
    out = {"bulk": float(active.grade(source.descriptor, structure).max())}
    if "vacancy" in which:
        cell = vacancy_cell(structure, (vacancy_options or {}).get("min_atoms", 32))
        out["vacancy"] = float(active.grade(source.descriptor, cell).max())
    return out
