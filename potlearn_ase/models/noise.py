"""Noise level of each label type of a linear fit, inferred from the data.

Energies (per atom), force components and virials (per atom) are measured in different
units and fitted with different accuracy, so one weight ratio cannot suit every data set. Each
label type gets its own Gaussian noise level, found by type-II maximum likelihood
(:func:`potlearn_ase.models.posterior.infer_noise`); rows are then weighted by
``1 / sigma`` of their type, and the committee drawn from the posterior has a spread that
follows each type's own accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from ase import Atoms

from potlearn_ase.descriptors.base import Descriptor
from potlearn_ase.models.design import LABEL_BLOCKS, design_rows_by_type
from potlearn_ase.models.linear import LinearFitConfig
from potlearn_ase.models.posterior import NoiseLevels, NormalEquations, infer_noise

__all__ = [
    "LabelBlocks",
    "accumulate_blocks",
    "add_rows_by_type",
    "parse_lam",
    "resolve_noise",
    "row_structures",
    "unit_rows",
]

log = logging.getLogger(__name__)


@dataclass
class LabelBlocks:
    """Unit-weight normal equations of each label type (:data:`LABEL_BLOCKS`).

    Attributes
    ----------
    parts : list of NormalEquations
        One accumulator per label type: energies per atom, force components, virials per atom.
    structures : np.ndarray
        ``(3,)`` number of structures that gave rows to each part.
    """

    parts: list[NormalEquations]
    structures: np.ndarray

    @classmethod
    def empty(cls, n_params: int) -> LabelBlocks:
        return cls([NormalEquations(n_params) for _ in LABEL_BLOCKS], np.zeros(3, dtype=np.int64))

    def merge(self, other: LabelBlocks) -> None:
        """Add another accumulator (e.g. another MPI rank's)."""
        for mine, theirs in zip(self.parts, other.parts):
            mine.merge(theirs)
        self.structures += other.structures


def accumulate_blocks(
    descriptor: Descriptor,
    frames: Sequence[Atoms],
    config: LinearFitConfig,
    *,
    first_index: int = 0,
    blocks: LabelBlocks | None = None,
) -> LabelBlocks:
    """Add the unit-weight rows of ``frames`` to ``blocks`` (new ones when not given).

    Stress rows come from periodic structures with a stress label.
    """
    P = len(descriptor.elements) * (descriptor.n_features + 1)
    blocks = blocks if blocks is not None else LabelBlocks.empty(P)
    A, y, block = unit_rows(descriptor, frames, config, first_index)
    add_rows_by_type(blocks, A, y, block)
    return blocks


def unit_rows(
    descriptor: Descriptor, frames: Sequence[Atoms], config: LinearFitConfig, first_index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-weight design rows of ``frames``, their targets and label type (index into
    :data:`LABEL_BLOCKS`); ``first_index`` is the position of ``frames[0]`` (for errors)."""
    unit = replace(config, energy_weight=1.0, force_weight=1.0, stress_weight=1.0, weights="fixed")
    A, y, _, block = design_rows_by_type(descriptor, frames, unit, first_index)
    return A, y, block


def row_structures(block: np.ndarray) -> np.ndarray:
    """The structure (0, 1, ...) of each row, from the rows' label types: each structure's
    rows open with its energy row."""
    return np.searchsorted(np.flatnonzero(block == 0), np.arange(len(block)), side="right") - 1


def add_rows_by_type(
    blocks: LabelBlocks,
    A: np.ndarray,
    y: np.ndarray,
    block: np.ndarray,
    select: np.ndarray | None = None,
) -> None:
    """Add unit-weight rows to the part of their label type (only the ``select`` ones), and
    count the structures that gave rows to each part."""
    owner = row_structures(block)
    for k, ne in enumerate(blocks.parts):
        sel = block == k if select is None else (block == k) & select
        if np.any(sel):
            ne.add(A[sel], y[sel], 1.0)
            blocks.structures[k] += len(np.unique(owner[sel]))


def resolve_noise(
    blocks: LabelBlocks, n_species: int, config: LinearFitConfig
) -> tuple[LinearFitConfig, NormalEquations, NoiseLevels]:
    """Infer each label type's noise level and weight the blocks by it.

    Parameters
    ----------
    blocks : LabelBlocks
        From :func:`accumulate_blocks`.
    n_species : int
        Number of elements (their constants are not penalised).
    config : LinearFitConfig
        The fit settings (``lam``, ``sigma_floor``, ``temper``).

    Returns
    -------
    (LinearFitConfig, NormalEquations, NoiseLevels)
        The settings with weights ``sqrt(kappa) / sigma`` (0 for a label type without rows)
        and ``noise_inferred=True``; the blocks summed with those weights squared; the noise
        levels (eV/atom for energies and stress, eV/A for forces).
    """
    parts = blocks.parts
    P = parts[0].n_params
    unreg = np.zeros(P, dtype=bool)
    unreg[:: P // n_species] = True
    floor = config.sigma_floor * np.array([0.1, 1.0, 0.1])
    rows = np.array([ne.n_rows for ne in parts], dtype=np.float64)
    temper = np.ones(3)
    if config.temper == "structures":
        temper = np.where(rows > 0, blocks.structures / np.maximum(rows, 1.0), 1.0)
    noise = infer_noise(
        parts, lam=config.lam, sigma_floor=floor, unregularised=unreg, temper=temper
    )
    weights = noise.weights
    total = NormalEquations.weighted_sum(parts, weights**2)
    resolved = replace(
        config,
        energy_weight=float(weights[0]),
        force_weight=float(weights[1]),
        stress_weight=float(weights[2]),
        noise_inferred=True,
    )
    log.info(
        "inferred noise: energy %.3g eV/atom, forces %.3g eV/A, stress %.3g eV/atom "
        "(%d iterations)", *noise.sigma, noise.iterations,
    )
    return resolved, total, noise


def parse_lam(text: str | float) -> float | str:
    """``lam`` from text: ``"evidence"`` or a non-negative number.

    Raises
    ------
    ConfigError
        For anything else (naming the value).
    """
    from potlearn_ase.errors import ConfigError

    if isinstance(text, str) and text.strip().lower() == "evidence":
        return "evidence"
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"lam must be 'evidence' or a number, got {text!r}") from None
    if not value >= 0:
        raise ConfigError(f"lam must be 'evidence' or a number >= 0, got {text!r}")
    return value
