"""What every committee model shares: predictions of all members from one descriptor pass."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms

from potlearn_ase.descriptors.base import Descriptor, DescriptorOutput, strain_to_voigt_stress

__all__ = ["CommitteeModel", "CommitteePrediction", "threads_for"]

#: below this many atoms, one CPU thread is faster than several (thread start-up and
#: contention dominate the small tensor operations)
SMALL_SYSTEM_ATOMS = 256


class threads_for:
    """Context manager: one torch CPU thread for small structures, the default otherwise."""

    def __init__(self, n_atoms: int, device: torch.device | str = "cpu"):
        self.small = n_atoms < SMALL_SYSTEM_ATOMS and torch.device(device).type == "cpu"
        self.saved = 0

    def __enter__(self) -> None:
        if self.small:
            self.saved = torch.get_num_threads()
            if self.saved != 1:
                torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        if self.small and self.saved != 1:
            torch.set_num_threads(self.saved)


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
        if getattr(self, "active_set", None) is not None:
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
        self, atoms: Atoms, *, forces: bool = True, stress: bool = True
    ) -> CommitteePrediction:
        """Every member's energy, per-atom energies, forces and stress for one structure."""
        device = getattr(self.descriptor, "device", "cpu")
        with torch.no_grad(), threads_for(len(atoms), device):
            out = self.descriptor.compute(atoms, derivatives=forces)
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
