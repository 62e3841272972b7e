"""The pieces every QoI shares: a scalar sampled per member, the report, the member predictors.

A *source* is a committee (its members are the samples) or a plain ASE calculator (one
sample, e.g. the reference); :func:`member_predictor` turns either into
``atoms -> {"energy": (M,), "forces": (M, N, 3), "stress": (M, 6)}`` with one descriptor pass
for all members.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from potlearn_ase.models.base import CommitteeModel

if TYPE_CHECKING:
    from potlearn_ase.analysis.qoi.phonons import PhononResult
    from potlearn_ase.analysis.qoi.rdf import RDFResult

__all__ = [
    "Predictor",
    "QoI",
    "QoIReport",
    "Source",
    "member_predictor",
    "posterior_committee",
]

Source = CommitteeModel | Calculator
Predictor = Callable[[Atoms], dict[str, np.ndarray]]


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
class QoIReport:
    """Scalar QoIs with their member samples, plus phonon and RDF curves.

    Attributes
    ----------
    qois : dict of str to QoI
    phonons : PhononResult or None
    rdf : RDFResult or None
    structure : ase.Atoms
        The unit cell at the committee mean's lattice constant, where the QoIs were computed.
    extrapolation : dict of str to float
        For a model with an active set: the largest extrapolation grade of the structures
        behind each QoI family (``"bulk"``, ``"vacancy"``); above 1 the QoI is extrapolated.
    """

    qois: dict[str, QoI]
    phonons: PhononResult | None = None
    rdf: RDFResult | None = None
    structure: Atoms | None = None
    extrapolation: dict[str, float] = field(default_factory=dict)

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
        if self.extrapolation:
            grades = ", ".join(f"{k} {v:.3g}" for k, v in self.extrapolation.items())
            lines.append(f"max extrapolation grade: {grades}")
            if max(self.extrapolation.values()) > 1.5:
                lines.append(
                    "  (> 1: outside the training atoms' span; sigma there covers the parameter "
                    "uncertainty only, not the extrapolation)"
                )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"qois": {k: q.to_dict() for k, q in self.qois.items()}}
        if self.extrapolation:
            out["extrapolation_grade"] = dict(self.extrapolation)
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
    out = LinearCommittee(
        model.descriptor,
        draws.reshape(n_samples, S, K1),
        posterior=model.posterior,
        normal_equations=model.normal_equations,
        config=model.config,
    )
    out.active_set = getattr(model, "active_set", None)  # same training data, same grades
    return out


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


def as_predictor(source: Source | Predictor) -> Predictor:
    if isinstance(source, (CommitteeModel, Calculator)):
        return member_predictor(source)
    return source


def mean_calculator(source: Source) -> Calculator:
    """The calculator that drives relaxations and MD: the committee mean, or ``source``."""
    from potlearn_ase.calculators.committee import CommitteeCalculator

    if isinstance(source, CommitteeModel):
        return CommitteeCalculator(model=source)
    return source


def conventional_cell(atoms: Atoms, *, symprec: float = 1e-3) -> Atoms | None:
    """The standard conventional cell of ``atoms`` in the standard orientation (spglib), at
    the same volume per atom; None when spglib is missing or finds no symmetry.

    For a cubic crystal the cube edges lie along x, y and z, whatever the input cell was
    (primitive, conventional, a supercell, or a rotated or orthorhombic setting).
    """
    try:
        import spglib
    except ImportError:
        return None
    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    try:
        with warnings.catch_warnings():  # spglib 2.x warns about its old error handling
            warnings.simplefilter("ignore", DeprecationWarning)
            std = spglib.standardize_cell(cell, to_primitive=False, no_idealize=False,
                                          symprec=symprec)
    except Exception:  # spglib raises its own error types across versions
        return None
    if std is None:
        return None
    lattice, positions, numbers = std
    out = Atoms(numbers=numbers, cell=lattice, scaled_positions=positions, pbc=True)
    scale = (atoms.get_volume() / len(atoms) / (out.get_volume() / len(out))) ** (1.0 / 3.0)
    out.set_cell(out.cell * scale, scale_atoms=True)
    return out


def lattice_parameter(atoms: Atoms) -> float:
    """``a`` of the standard conventional cell (``a`` of the input cell's Bravais lattice
    without spglib; the cube root of the volume per atom as a last resort)."""
    conv = conventional_cell(atoms)
    if conv is not None:
        return float(conv.cell.lengths()[0])
    try:
        return float(atoms.cell.get_bravais_lattice().a)
    except (ValueError, AttributeError, RuntimeError):
        return float((atoms.get_volume() / len(atoms)) ** (1.0 / 3.0))


def repeat_for(atoms: Atoms, min_atoms: int) -> Atoms:
    n = max(1, int(np.ceil((min_atoms / len(atoms)) ** (1.0 / 3.0) - 1e-9)))
    return atoms.repeat(n)


def mean_only(source: Source) -> Source:
    """A one-member committee holding the mean of a linear committee (else ``source``)."""
    from potlearn_ase.models.linear import LinearCommittee

    if isinstance(source, LinearCommittee):
        return LinearCommittee(source.descriptor, source.mean_coef()[None], config=source.config)
    return source
