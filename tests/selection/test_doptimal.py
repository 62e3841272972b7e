"""D-optimality: maxvol volumes, greedy additions and the extrapolation grade."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from potlearn_ase.selection.doptimal import (
    DOptimalSelector,
    extrapolation_grade,
    maxvol,
    rect_maxvol,
)


def _absdet(A: np.ndarray, rows) -> float:
    return abs(np.linalg.det(A[list(rows)]))


def test_maxvol_finds_the_largest_volume_rows():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(12, 3))
    idx = maxvol(A, tol=1.0)
    best = max(_absdet(A, s) for s in itertools.combinations(range(12), 3))
    # dominance: no single swap improves the volume, and the volume is near the global max
    for i in range(12):
        for j in range(3):
            trial = idx.copy()
            trial[j] = i
            assert _absdet(A, trial) <= _absdet(A, idx) * (1 + 1e-9)
    assert _absdet(A, idx) >= best / 3.0  # r-th root bound for a dominant submatrix: 1/r!


def test_maxvol_picks_planted_large_rows():
    rng = np.random.default_rng(1)
    A = 0.1 * rng.normal(size=(200, 4))
    planted = [17, 60, 123, 188]
    A[planted] = 10 * np.eye(4)
    assert sorted(maxvol(A).tolist()) == planted


def test_duplicated_rows_are_not_rank_deficiency():
    rng = np.random.default_rng(4)
    for _ in range(20):
        A = rng.normal(size=(10, 3))
        A = np.vstack([A, A[np.argmax(np.linalg.norm(A, axis=1))]])  # an archive frame twice
        idx = maxvol(A, tol=1.0)
        assert abs(np.linalg.det(A[idx])) > 0  # distinct rows spanning the space
    with pytest.raises(ValueError, match="rank deficient"):
        maxvol(np.hstack([A, A[:, :1]]))  # a repeated column is


def test_extrapolation_grade_is_at_most_one_inside_and_above_one_for_an_outlier():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(300, 5))
    idx = maxvol(A, tol=1.0)
    gamma = extrapolation_grade(A[idx], A)
    np.testing.assert_allclose(gamma[idx], 1.0)
    assert gamma.max() <= 1.0 + 1e-9
    outlier = 3.0 * A[np.argmax(np.linalg.norm(A, axis=1))][None]
    assert extrapolation_grade(A[idx], outlier)[0] > 1.5
    # per structure: the worst row of each group
    groups = np.repeat(np.arange(3), [100, 100, 100])
    per = extrapolation_grade(A[idx], np.vstack([A[:200], 4 * A[200:]]), groups=groups)
    assert per.shape == (3,) and per[2] > 1.0 >= per[0] - 1e-9


def test_rect_maxvol_adds_the_row_that_grows_the_volume_most():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(40, 3))
    idx = rect_maxvol(A, 6)
    assert len(set(idx.tolist())) == 6
    for m in range(3, 6):
        S = list(idx[:m])
        gains = [np.linalg.det(A[S + [i]].T @ A[S + [i]]) if i not in S else -1 for i in range(40)]
        assert idx[m] == int(np.argmax(gains))


def test_selector_per_structure_and_per_row_groups():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(50, 6))
    X[7] *= 20  # a structure far outside the others
    sel = DOptimalSelector()
    for k in (3, 6, 12):
        picked = sel.select(X, k)
        assert len(set(picked.tolist())) == k and 7 in picked
    rows = rng.normal(size=(30 * 4, 5))
    groups = np.repeat(np.arange(30), 4)
    rows[groups == 11] *= 15
    picked = sel.select(rows, 5, groups=groups)
    assert len(set(picked.tolist())) == 5 and 11 in picked and picked.max() < 30
    with pytest.raises(ValueError, match="k must be"):
        sel.select(X, 51)
