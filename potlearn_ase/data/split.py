"""Random splits of a data set (frame by frame, or whole groups such as trajectories) and
per-element reference energies."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from potlearn_ase.data.dataset import Dataset
from potlearn_ase.data.validate import get_labels
from potlearn_ase.errors import ConfigError, MissingLabelError, UnknownElementError

__all__ = ["composition_matrix", "fit_reference_energies", "train_val_test_split"]

log = logging.getLogger(__name__)


def _as_dataset(data: Dataset | Iterable[Atoms]) -> Dataset:
    return data if isinstance(data, Dataset) else Dataset(data)


def train_val_test_split(
    dataset: Dataset | Sequence[Atoms],
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    *,
    rng: np.random.Generator | int,
    groups: str | Sequence[Any] | None = None,
) -> tuple[Dataset, Dataset, Dataset]:
    """Split frames at random into disjoint training, validation and test sets.

    Parameters
    ----------
    dataset
        The frames.
    fractions
        Non-negative fractions of (train, validation, test), summing to 1. Counts are
        rounded by largest remainder, so together they cover every frame exactly once.
    rng
        A :class:`numpy.random.Generator` (advanced by the call) or an integer seed; equal
        seeds give equal splits.
    groups
        Keep frames of one group in one subset: a label per frame, or the name of an
        ``info`` key that holds it (e.g. ``"trajectory"``). Consecutive frames of an MD run
        are near-duplicates, so a validation set drawn from the trajectories the model was
        trained on measures interpolation between neighbours, not the error on new MD. Whole
        groups are dealt out in random order until each subset reaches its share of the
        frames, so the fractions hold as closely as the group sizes allow.

    Returns
    -------
    train, val, test : Dataset
        Subsets sharing the original :class:`ase.Atoms` objects, each in random order.
    """
    data = _as_dataset(dataset)
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or not np.isfinite(f).all() or (f < 0).any() or abs(f.sum() - 1) > 1e-9:
        raise ConfigError(
            f"fractions must be three non-negative numbers summing to 1, got {fractions!r}"
        )
    if groups is not None:
        return _group_split(data, f, np.random.default_rng(rng), _group_labels(data, groups))
    n = len(data)
    exact = f * n
    counts = np.floor(exact).astype(int)
    left = n - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:left]] += 1
    perm = np.random.default_rng(rng).permutation(n)
    a, b = counts[0], counts[0] + counts[1]
    return data[perm[:a]], data[perm[a:b]], data[perm[b:]]


def _group_labels(data: Dataset, groups: str | Sequence[Any]) -> list[Any]:
    if isinstance(groups, str):
        missing = [k for k in range(len(data)) if groups not in data[k].info]
        if missing:
            raise ConfigError(f"groups: frame {missing[0]} has no info key {groups!r}")
        return [data[k].info[groups] for k in range(len(data))]
    labels = list(groups)
    if len(labels) != len(data):
        raise ConfigError(f"groups: {len(labels)} labels for {len(data)} frames")
    return labels


def _group_split(
    data: Dataset, f: np.ndarray, gen: np.random.Generator, labels: list[Any]
) -> tuple[Dataset, Dataset, Dataset]:
    names = list(dict.fromkeys(labels))  # first-seen order, then shuffled
    members: dict[Any, list[int]] = {g: [] for g in names}
    for k, g in enumerate(labels):
        members[g].append(k)
    target = f * len(data)
    taken = np.zeros(3)
    out: list[list[int]] = [[], [], []]
    for i in gen.permutation(len(names)):
        idx = members[names[i]]
        # the subset furthest below its share (relative to it) takes the whole group
        want = np.where(target > 0, (target - taken) / np.maximum(target, 1e-12), -np.inf)
        s = int(np.argmax(want))
        out[s] += idx
        taken[s] += len(idx)
    return tuple(data[gen.permutation(np.array(o, dtype=np.int64))] for o in out)  # type: ignore[return-value]


def composition_matrix(
    frames: Iterable[Atoms], elements: Sequence[str], *, names: Sequence[str] | None = None
) -> np.ndarray:
    """Counts of each element per frame.

    Parameters
    ----------
    frames
        The structures.
    elements
        Chemical symbols, giving the column order.
    names
        How error messages name each frame (default ``"frame <k>"``).

    Returns
    -------
    numpy.ndarray
        ``(n_frames, len(elements))`` float array of atom counts.

    Raises
    ------
    UnknownElementError
        When a frame holds an element not in ``elements``.
    """
    z = np.array([atomic_numbers[s] for s in elements], dtype=np.int64)
    lookup = np.full(max(int(z.max(initial=0)), 118) + 1, -1, dtype=np.int64)
    lookup[z] = np.arange(len(z))
    rows = []
    for k, atoms in enumerate(frames):
        col = lookup[atoms.numbers]
        if (col < 0).any():
            sym = atoms.get_chemical_symbols()[int(np.flatnonzero(col < 0)[0])]
            err = UnknownElementError(sym, list(elements))
            name = names[k] if names is not None else f"frame {k}"
            err.args = (f"{name}: {err.args[0]}",)
            raise err
        rows.append(np.bincount(col, minlength=len(z)))
    return np.array(rows, dtype=float).reshape(-1, len(z))


def fit_reference_energies(
    dataset: Dataset | Sequence[Atoms], *, elements: Sequence[str] | None = None
) -> dict[str, float]:
    """Per-element reference energies by least squares of energy on composition.

    Solves ``min_mu sum_k (E_k - sum_e n_ke mu_e)^2`` over the frames that carry an energy.

    Parameters
    ----------
    dataset
        The frames; those without an energy are skipped.
    elements
        The elements to fit (default: the data set's elements). An element absent from the
        labelled frames gets 0.

    Returns
    -------
    dict
        ``{symbol: energy in eV}``.

    Raises
    ------
    MissingLabelError
        When no frame carries an energy.
    UnknownElementError
        When a frame holds an element not in ``elements``.

    Notes
    -----
    When the compositions do not determine every element (e.g. only Cu3Au cells), the
    least-squares solution of smallest (column-scaled) norm is returned and a warning logged:
    it reproduces the energies as well as any other, but the split between elements is
    arbitrary.
    """
    data = _as_dataset(dataset)
    els = list(elements) if elements is not None else data.elements
    labelled = [(k, get_labels(a)) for k, a in enumerate(data)]
    keep = [k for k, lab in labelled if "energy" in lab]
    if not keep:
        src = f" in {data.source}" if data.source else ""
        raise MissingLabelError(
            f"no frame{src} carries an energy; cannot fit reference energies "
            f"({len(data)} frames)"
        )
    prefix = f"{data.source}, frame" if data.source else "frame"
    A = composition_matrix(
        [data[k] for k in keep], els, names=[f"{prefix} {k}" for k in keep]
    )
    y = np.array([labelled[k][1]["energy"] for k in keep])
    # Scale columns so that the rank test is insensitive to cell sizes.
    norms = np.linalg.norm(A, axis=0)
    present = norms > 0
    mu = np.zeros(len(els))
    if present.any():
        As = A[:, present] / norms[present]
        sol, _, rank, _ = np.linalg.lstsq(As, y, rcond=None)
        mu[present] = sol / norms[present]
        if rank < int(present.sum()):
            log.warning(
                "reference energies are not determined by the compositions (rank %d for %d "
                "elements); returning the solution of smallest norm",
                rank,
                int(present.sum()),
            )
    for e, p in zip(els, present, strict=True):
        if not p:
            log.warning("element %s absent from the labelled frames: reference energy 0", e)
    return {e: float(m) for e, m in zip(els, mu, strict=True)}
