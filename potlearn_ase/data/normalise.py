"""Normalisation of energy and force labels: per-element reference energies and scales."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from ase import Atoms

from potlearn_ase.data.dataset import Dataset
from potlearn_ase.data.split import composition_matrix, fit_reference_energies
from potlearn_ase.data.validate import get_labels
from potlearn_ase.errors import ModelFormatError, UnknownElementError

__all__ = ["Normaliser"]

log = logging.getLogger(__name__)

FORMAT = "potlearn_ase.Normaliser"
VERSION = 1

ArrayT = TypeVar("ArrayT", float, np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class Normaliser:
    """Maps energies and forces to dimensionless, zero-centred values and back.

    A structure's normalised energy is its residual after per-element reference energies,
    in units of ``energy_scale``::

        e = (E - sum_e n_e * mu_e) / energy_scale

    (a per-structure, extensive quantity: a per-atom model output summed over atoms), and
    normalised forces are ``F / force_scale``.

    Parameters
    ----------
    elements
        Chemical symbols; the column order of composition counts.
    reference_energies
        ``{symbol: mu}`` in eV for every element of ``elements``.
    energy_scale
        eV; :meth:`fit` uses the standard deviation of the per-atom residual energy.
    force_scale
        eV/Angstrom; :meth:`fit` uses the RMS of the force components.

    Notes
    -----
    The composition argument of the energy methods (``numbers_or_counts``) may be

    * an :class:`ase.Atoms` or a 1-D integer array of atomic numbers (one structure; the
      energy is a scalar or 0-d array),
    * a 2-D ``(B, len(elements))`` array or tensor of counts per element, in the order of
      ``elements`` (B structures; energies of shape ``(B,)``),
    * a list of Atoms or of atomic-number arrays (B structures).

    Energies may be floats, numpy arrays or torch tensors; the result has the same type
    (tensors keep their device and dtype).
    """

    elements: tuple[str, ...]
    reference_energies: Mapping[str, float]
    energy_scale: float = 1.0
    force_scale: float = 1.0
    _mu: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        els = tuple(self.elements)
        object.__setattr__(self, "elements", els)
        missing = [e for e in els if e not in self.reference_energies]
        if missing:
            raise UnknownElementError(missing[0], list(self.reference_energies))
        refs = {e: float(self.reference_energies[e]) for e in els}
        object.__setattr__(self, "reference_energies", refs)
        object.__setattr__(self, "_mu", np.array([refs[e] for e in els], dtype=np.float64))
        for name in ("energy_scale", "force_scale"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be positive and finite, got {v}")
            object.__setattr__(self, name, v)

    # --- fitting -----------------------------------------------------------------------
    @classmethod
    def fit(
        cls, dataset: Dataset | Sequence[Atoms], *, elements: Sequence[str] | None = None
    ) -> Normaliser:
        """Fit reference energies and scales to labelled frames.

        Parameters
        ----------
        dataset
            The frames; energies and forces are used where present.
        elements
            Elements to cover (default: those of the data set).

        Returns
        -------
        Normaliser

        Raises
        ------
        MissingLabelError
            When no frame carries an energy.

        Notes
        -----
        A scale that cannot be estimated (one labelled frame, no forces, or zero spread)
        is set to 1 with a warning.
        """
        data = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
        els = tuple(elements) if elements is not None else tuple(data.elements)
        refs = fit_reference_energies(data, elements=els)
        mu = np.array([refs[e] for e in els])
        with_e = [a for a in data if "energy" in get_labels(a)]
        counts = composition_matrix(with_e, els)
        energies = np.array([get_labels(a)["energy"] for a in with_e])
        residual = (energies - counts @ mu) / counts.sum(axis=1)
        e_scale = float(np.std(residual)) if len(residual) > 1 else 0.0
        if not e_scale > 1e-12:
            log.warning(
                "energy scale cannot be estimated from %d labelled frames (spread %.3g eV/atom); "
                "using 1 eV",
                len(residual),
                e_scale,
            )
            e_scale = 1.0
        forces = [get_labels(a).get("forces") for a in data]
        comps = np.concatenate([f.ravel() for f in forces if f is not None] or [np.zeros(0)])
        f_scale = float(np.sqrt(np.mean(comps**2))) if comps.size else 0.0
        if not f_scale > 1e-12:
            log.warning("force scale cannot be estimated (no non-zero forces); using 1 eV/A")
            f_scale = 1.0
        return cls(els, refs, energy_scale=e_scale, force_scale=f_scale)

    # --- composition --------------------------------------------------------------------
    def _counts(self, numbers_or_counts: Any) -> tuple[np.ndarray | torch.Tensor, bool]:
        """Counts per element, ``(S,)`` for one structure or ``(B, S)``; and whether batched."""
        x = numbers_or_counts
        if isinstance(x, Atoms):
            return composition_matrix([x], self.elements)[0], False
        if isinstance(x, (list, tuple)):
            frames = [a if isinstance(a, Atoms) else Atoms(numbers=np.asarray(a)) for a in x]
            return composition_matrix(frames, self.elements), True
        if isinstance(x, torch.Tensor) and x.ndim == 2:
            self._check_columns(x.shape[1])
            return x, True
        arr = np.asarray(x)
        if arr.ndim == 2:
            self._check_columns(arr.shape[1])
            return arr.astype(np.float64), True
        if arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer):
            return composition_matrix([Atoms(numbers=arr)], self.elements)[0], False
        raise TypeError(
            "numbers_or_counts must be Atoms, a 1-D integer array of atomic numbers, a "
            f"(B, {len(self.elements)}) array of counts or a list of structures; got "
            f"{type(x).__name__} with shape {getattr(arr, 'shape', None)}"
        )

    def _check_columns(self, n: int) -> None:
        if n != len(self.elements):
            raise ValueError(
                f"counts have {n} columns, the normaliser has {len(self.elements)} elements "
                f"{list(self.elements)}"
            )

    def reference_energy(self, numbers_or_counts: Any) -> np.ndarray | torch.Tensor:
        """Sum of per-element reference energies (eV), one per structure."""
        counts, _ = self._counts(numbers_or_counts)
        if isinstance(counts, torch.Tensor):
            mu = torch.as_tensor(self._mu, device=counts.device)
            return counts.to(mu.dtype) @ mu
        return counts @ self._mu

    def _offset(self, energy: Any, numbers_or_counts: Any) -> Any:
        off = self.reference_energy(numbers_or_counts)
        if isinstance(energy, torch.Tensor):
            off = torch.as_tensor(off, device=energy.device, dtype=energy.dtype)
        elif isinstance(off, torch.Tensor):
            off = off.detach().cpu().numpy()
        return off

    # --- energies and forces ------------------------------------------------------------
    def normalise_energy(self, energy: ArrayT, numbers_or_counts: Any) -> ArrayT:
        """Normalised energy ``(E - sum_e n_e mu_e) / energy_scale`` (see the class notes)."""
        out = (energy - self._offset(energy, numbers_or_counts)) / self.energy_scale
        return float(out) if isinstance(energy, (float, int)) else out

    def denormalise_energy(self, energy: ArrayT, numbers_or_counts: Any) -> ArrayT:
        """Energy in eV from a normalised energy: the inverse of :meth:`normalise_energy`."""
        out = energy * self.energy_scale + self._offset(energy, numbers_or_counts)
        return float(out) if isinstance(energy, (float, int)) else out

    def normalise_forces(self, forces: ArrayT) -> ArrayT:
        """Forces in units of ``force_scale``."""
        return forces / self.force_scale

    def denormalise_forces(self, forces: ArrayT) -> ArrayT:
        """Forces in eV/Angstrom: the inverse of :meth:`normalise_forces`."""
        return forces * self.force_scale

    # --- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable mapping that :meth:`from_dict` restores exactly."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "elements": list(self.elements),
            "reference_energies": dict(self.reference_energies),
            "energy_scale": self.energy_scale,
            "force_scale": self.force_scale,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normaliser:
        """Restore a normaliser written by :meth:`to_dict`.

        Raises
        ------
        ModelFormatError
            For another format, an unknown version or a missing key.
        """
        if data.get("format", FORMAT) != FORMAT:
            raise ModelFormatError(f"not a normaliser: format {data.get('format')!r}")
        if data.get("version", VERSION) != VERSION:
            raise ModelFormatError(
                f"normaliser format version {data.get('version')!r}, this code reads {VERSION}"
            )
        keys = ("elements", "reference_energies", "energy_scale", "force_scale")
        missing = [k for k in keys if k not in data]
        if missing:
            raise ModelFormatError(f"normaliser mapping misses key(s) {', '.join(missing)}")
        return cls(
            tuple(data["elements"]),
            dict(data["reference_energies"]),
            energy_scale=data["energy_scale"],
            force_scale=data["force_scale"],
        )
