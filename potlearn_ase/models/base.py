"""What every committee model shares: predictions of all members from one descriptor pass."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms

from potlearn_ase.descriptors.base import Descriptor, DescriptorOutput, strain_to_voigt_stress
from potlearn_ase.descriptors.neighbours import PaddedNeighbours

__all__ = ["CommitteeModel", "CommitteePrediction", "committee_results"]


class CommitteePrediction(dict):
    """Committee results of one structure, as numpy arrays (ASE units).

    Keys: ``energy`` ``(M,)`` eV, ``energies`` ``(M, n_atoms)`` eV, ``forces`` ``(M, n_atoms, 3)``
    eV/A, and ``stress`` ``(M, 6)`` eV/A^3 (Voigt, ASE sign) for fully periodic structures;
    ``extrapolation_grade`` ``(n_atoms,)`` when the model has an active set.
    """


class CommitteeModel(torch.nn.Module, abc.ABC):
    """A committee of ``M`` potentials sharing one descriptor.

    Subclasses implement :meth:`atomic_energies` and :meth:`feature_gradients` (or
    :meth:`linear_weights` when the members are linear in the features, which lets the
    descriptor share more work across members).
    """

    kind: str = "base"

    def __init__(self, descriptor: Descriptor):
        super().__init__()
        self.descriptor = descriptor
        #: optional :class:`~potlearn_ase.models.active_set.ActiveSet`: when set, predictions
        #: carry each atom's ``extrapolation_grade``
        self.active_set: Any = None

    @property
    def elements(self) -> tuple[str, ...]:
        return self.descriptor.elements

    @property
    @abc.abstractmethod
    def n_members(self) -> int:
        """Number of committee members ``M``."""

    @abc.abstractmethod
    def atomic_energies(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Per-atom energies ``(M, n_atoms)`` in eV from features ``(n_atoms, K)``."""

    def linear_weights(self) -> torch.Tensor | None:
        """``(M, n_species, K)`` when ``E = sum_i W[s_i] . B_i + const``, else None."""
        return None

    def feature_gradients(
        self, features: torch.Tensor, species: torch.Tensor, *, create_graph: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-atom energies ``(M, n)`` and ``dE_m/dB`` ``(M, n, K)``."""
        with torch.enable_grad():
            x = features.detach().unsqueeze(0).expand(self.n_members, -1, -1).clone()
            x.requires_grad_(True)
            e = self.atomic_energies_per_member(x, species)
            (g,) = torch.autograd.grad(e.sum(), x, create_graph=create_graph)
        return (e if create_graph else e.detach()), g

    def atomic_energies_per_member(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Per-atom energies ``(M, n)`` where member ``m`` reads its own copy ``x[m]``."""
        raise NotImplementedError

    # ----------------------------------------------------------------- predictions
    def predict_output(
        self, out: DescriptorOutput, *, forces: bool = True, stress: bool = True
    ) -> dict[str, torch.Tensor]:
        """Committee predictions from a descriptor output (torch tensors)."""
        res: dict[str, torch.Tensor] = {}
        if self.active_set is not None:
            res["extrapolation_grade"] = self.active_set.grade_features(out.features, out.species)
        W = self.linear_weights()
        # a baseline outside the model (e.g. a core repulsion) carried by the descriptor output
        base_e = getattr(out, "baseline_energies", None)
        if not forces:
            e = self.atomic_energies(out.features, out.species)
            e = e if base_e is None else e + base_e
            res["energies"] = e
            res["energy"] = e.sum(1)
            return res
        if W is not None:
            e = self.atomic_energies(out.features, out.species)
            dx, de = out.linear_vjp(W)
        else:
            e, G = self.feature_gradients(out.features, out.species)
            dx, de = out.vjp(G)
        if base_e is not None:
            e, dx, de = e + base_e, dx + out.baseline_dx, de + out.baseline_dstrain  # type: ignore[attr-defined]
        res["energies"] = e
        res["energy"] = e.sum(1)
        res["forces"] = -dx
        if stress and out.volume > 0:
            res["stress"] = strain_to_voigt_stress(de, out.volume)
        return res

    def predict(
        self,
        atoms: Atoms,
        *,
        forces: bool = True,
        stress: bool = True,
        neighbours: PaddedNeighbours | None = None,
    ) -> CommitteePrediction:
        """Every member's energy, per-atom energies, forces and stress for one structure.

        ``neighbours``: the structure's current layout from the descriptor's
        :meth:`~potlearn_ase.descriptors.base.Descriptor.neighbour_list`, when the caller
        reuses one between MD steps. Runs with torch's current thread count (see
        :func:`potlearn_ase.set_cpu_threads`).
        """
        with torch.no_grad():
            out = self.descriptor.compute(atoms, derivatives=forces, neighbours=neighbours)
            res = self.predict_output(out, forces=forces, stress=stress)
        return CommitteePrediction({k: v.detach().cpu().numpy() for k, v in res.items()})

    def predict_many(
        self, frames: Sequence[Atoms], *, forces: bool = True, stress: bool = True
    ) -> list[CommitteePrediction]:
        return [self.predict(a, forces=forces, stress=stress) for a in frames]

    # ----------------------------------------------------------------- persistence
    @abc.abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """JSON-able description needed to rebuild the module before loading tensors."""

    def mean_energy(self, atoms: Atoms) -> float:
        return float(np.mean(self.predict(atoms, forces=False)["energy"]))


def committee_results(
    pred: dict[str, np.ndarray], calibration: float, *, energy_calibration: float | None = None
) -> dict[str, Any]:
    """ASE results (mean and calibrated spread) from per-member predictions.

    ``calibration`` scales the force and stress spreads, ``energy_calibration`` (default
    ``calibration``) the energy spread.
    """
    alpha = float(calibration)
    alpha_e = alpha if energy_calibration is None else float(energy_calibration)
    E = pred["energy"]
    res: dict[str, Any] = {
        "energy": float(E.mean()),
        "free_energy": float(E.mean()),
        "energy_std": alpha_e * float(E.std()),
        "energy_committee": E.copy(),
        "energies": pred["energies"].mean(0),
        "calibration": alpha,
        "energy_calibration": alpha_e,
    }
    if "forces" in pred:
        F = pred["forces"]
        fstd = alpha * F.std(0)
        res["forces"] = F.mean(0)
        res["forces_std"] = fstd
        res["max_force_std"] = float(np.linalg.norm(fstd, axis=1).max()) if len(fstd) else 0.0
        res["forces_committee"] = F.copy()
    if "extrapolation_grade" in pred:
        g = np.asarray(pred["extrapolation_grade"], dtype=float)
        res["extrapolation_grade"] = g
        res["max_extrapolation_grade"] = float(g.max()) if g.size else 0.0
    if "stress" in pred:
        S = pred["stress"]
        res["stress"] = S.mean(0)
        res["stress_std"] = alpha * S.std(0)
        res["stress_committee"] = S.copy()
    return res
