"""The extrapolation grade: a second uncertainty measure, from the training atoms' descriptors.

Committee spread measures how much the fit is *undetermined*; it can be small where the model
has never seen data, when the model's form is too rigid to disagree (a linear model fitted to
bulk MD and asked about a vacancy or a surface). The extrapolation grade of moment tensor
potentials and ACE (Podryabinkin & Shapeev 2017; Lysogorskiy et al. 2023) asks a different
question: is this atom's environment inside the span of the training environments?

For each element, the scaled descriptors of all training atoms form a tall matrix; maxvol picks
the rows spanning the largest volume (the *active set* ``A``). Every atom's descriptor ``x``
is written as ``c = x pinv(A)``, a combination of active rows, and its grade is
``gamma = max_j |c_j|``:

* ``gamma <= 1``: interpolation, inside the volume the training atoms span;
* ``gamma > 1``: extrapolation, growing with the distance; ``gamma > 2`` is a common label
  threshold, ``gamma > 5-10`` a common stop.

The grade needs no committee and no reference, costs one small matrix product per atom, and
is reported by :class:`~potlearn_ase.calculators.CommitteeCalculator` as
``extrapolation_grade`` (N,) and ``max_extrapolation_grade`` when the model carries an active
set (:func:`attach_active_set`). A linear model's :meth:`update` extends its active set with
the new labels (maxvol over the union of the active rows and the new atoms).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms

__all__ = ["ActiveSet", "attach_active_set", "species_indices"]


def species_indices(elements: Sequence[str], numbers: np.ndarray) -> np.ndarray:
    """Index in ``elements`` of each atomic number in ``numbers``."""
    from ase.data import chemical_symbols

    index = {e: s for s, e in enumerate(elements)}
    return np.array([index[chemical_symbols[z]] for z in numbers], dtype=np.int64)


def _features(descriptor: Any, frames: Sequence[Atoms]) -> tuple[np.ndarray, np.ndarray]:
    """Per-atom descriptors ``(n_atoms, K)`` and element indices ``(n_atoms,)`` of ``frames``."""
    from potlearn_ase.selection.kernels import descriptor_features

    _, (feats, _) = descriptor_features(list(frames), descriptor, per_atom=True)
    numbers = np.concatenate([a.numbers for a in frames])
    return np.asarray(feats, dtype=np.float64), species_indices(descriptor.elements, numbers)


def _maxvol_rows(T: np.ndarray) -> np.ndarray:
    """Rows of ``T`` spanning the largest volume of its row space (``rank(T)`` rows)."""
    from potlearn_ase.selection.doptimal import maxvol

    if len(T) == 0:
        return T
    U, s, _ = np.linalg.svd(T, full_matrices=False)
    r = int(np.sum(s > 1e-8 * s[0])) if s.size and s[0] > 0 else 0
    if r == 0:
        return T[:1]
    return T[np.sort(maxvol(U[:, :r] * s[:r]))]


class ActiveSet:
    """Per element, the maxvol rows of the training atoms' scaled descriptors.

    Parameters
    ----------
    elements : sequence of str
        The descriptor's elements, in its order.
    scale : np.ndarray
        ``(S, K)`` per-element feature scale (RMS over the training atoms).
    rows : list of np.ndarray
        Per element, the active rows ``(m_s, K)`` in scaled units (``m_s = 0``: no atom of
        that element was seen; its atoms get an infinite grade).
    """

    def __init__(self, elements: Sequence[str], scale: np.ndarray, rows: Sequence[np.ndarray]):
        self.elements = tuple(elements)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.rows = [np.asarray(r, dtype=np.float64).reshape(-1, self.scale.shape[1]) for r in rows]
        if len(self.rows) != len(self.elements) or self.scale.shape[0] != len(self.elements):
            raise ValueError("one scale row and one active set per element are needed")
        # pinv(A_s).T, (m_s, K): c = x pinv(A_s) = x @ P.T
        self._pinv = [np.linalg.pinv(r).T if len(r) else None for r in self.rows]
        # per (device, dtype): the scale and the pinv matrices as tensors, made once
        self._torch: dict[tuple[Any, Any], tuple[torch.Tensor, list[torch.Tensor | None]]] = {}

    # ------------------------------------------------------------------ building
    @classmethod
    def fit(cls, descriptor: Any, frames: Sequence[Atoms]) -> ActiveSet:
        """The active set of the atoms of ``frames`` (the training structures)."""
        return cls.from_features(descriptor.elements, *_features(descriptor, frames))

    @classmethod
    def from_features(
        cls, elements: Sequence[str], features: np.ndarray, species: np.ndarray
    ) -> ActiveSet:
        """The active set of atoms given by their descriptors ``(n, K)`` and element indices."""
        X = np.asarray(features, dtype=np.float64)
        S, K = len(elements), X.shape[1]
        scale = np.ones((S, K))
        rows = []
        for s in range(S):
            Xs = X[species == s]
            if len(Xs):
                sc = np.sqrt(np.mean(Xs**2, axis=0))
                scale[s] = np.where(sc > 0, sc, 1.0)
            rows.append(_maxvol_rows(Xs / scale[s]))
        return cls(elements, scale, rows)

    def extended(self, descriptor: Any, frames: Sequence[Atoms]) -> ActiveSet:
        """A new active set: maxvol over the current active rows and the atoms of ``frames``.

        The scale is kept, so grades before and after are comparable.
        """
        X, species = _features(descriptor, frames)
        rows = []
        for s, old in enumerate(self.rows):
            new = X[species == s] / self.scale[s]
            rows.append(_maxvol_rows(np.concatenate([old, new])) if len(new) else old)
        return ActiveSet(self.elements, self.scale, rows)

    # ------------------------------------------------------------------ grading
    def grade_features(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """``gamma`` ``(n_atoms,)`` of descriptors ``(n_atoms, K)`` with element indices."""
        key = (features.device, features.dtype)
        if key not in self._torch:
            self._torch[key] = (
                torch.as_tensor(self.scale, dtype=features.dtype, device=key[0]),
                [
                    None if p is None else torch.as_tensor(p, dtype=features.dtype, device=key[0])
                    for p in self._pinv
                ],
            )
        scale, mats = self._torch[key]
        gamma = torch.zeros(features.shape[0], dtype=features.dtype, device=features.device)
        for s, P in enumerate(mats):
            mask = species == s
            if not bool(mask.any()):
                continue
            if P is None:
                gamma[mask] = float("inf")
                continue
            c = (features[mask] / scale[s]) @ P.T  # (n_s, m_s)
            gamma[mask] = c.abs().amax(dim=1)
        return gamma

    def grade_array(self, features: np.ndarray, species: np.ndarray) -> np.ndarray:
        """:meth:`grade_features` for numpy descriptors ``(n, K)`` and element indices."""
        X = torch.as_tensor(np.asarray(features, dtype=np.float64))
        return self.grade_features(X, torch.as_tensor(species)).numpy()

    def grade(self, descriptor: Any, atoms: Atoms) -> np.ndarray:
        """``gamma`` of every atom of ``atoms``."""
        return self.grade_array(*_features(descriptor, [atoms]))

    @property
    def sizes(self) -> list[int]:
        """Active rows per element."""
        return [len(r) for r in self.rows]

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, torch.Tensor]:
        """Tensors for a model file: ``scale``, padded ``rows`` and ``counts``."""
        S, K = self.scale.shape
        m = max(self.sizes, default=0)
        rows = np.zeros((S, m, K))
        for s, r in enumerate(self.rows):
            rows[s, : len(r)] = r
        return {
            "scale": torch.as_tensor(self.scale),
            "rows": torch.as_tensor(rows),
            "counts": torch.as_tensor(np.array(self.sizes, dtype=np.int64)),
        }

    @classmethod
    def from_state(cls, elements: Sequence[str], state: dict[str, torch.Tensor]) -> ActiveSet:
        rows = state["rows"].numpy()
        counts = state["counts"].numpy()
        return cls(elements, state["scale"].numpy(), [rows[s, :c] for s, c in enumerate(counts)])


def attach_active_set(model: Any, frames: Sequence[Atoms]) -> Any:
    """Give ``model`` the active set of its training structures ``frames``; returns it."""
    model.active_set = ActiveSet.fit(model.descriptor, frames)
    return model
