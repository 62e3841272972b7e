"""k-means and DBSCAN representatives, the selector registry and ``potlearn select``."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from ase.io import read as ase_read
from scipy.spatial.distance import pdist

from potlearn_ase.cli.select import SELECTORS, add_subparser, get_selector
from potlearn_ase.data.generate import reference_md_frames
from potlearn_ase.data.io import write
from potlearn_ase.errors import ConfigError
from potlearn_ase.selection.clustering import (
    DBSCANSelector,
    KMeansSelector,
    dbscan_clusters,
    principal_components,
)


def _blobs(seed: int = 0, n: int = 40):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0], [0.0, 0.0, 8.0]])
    X = np.concatenate([c + 0.3 * rng.normal(size=(n, 3)) for c in centres])
    return X, np.repeat(np.arange(4), n), centres


def test_kmeans_picks_the_structure_nearest_each_centre():
    X, blob, centres = _blobs()
    picked = KMeansSelector(standardize=False).select(X, 4, rng=0)
    assert sorted(blob[picked].tolist()) == [0, 1, 2, 3]
    for i in picked:
        members = np.flatnonzero(blob == blob[i])
        mean = X[members].mean(0)
        nearest = members[np.argmin(np.linalg.norm(X[members] - mean, axis=1))]
        assert i == nearest


def test_dbscan_representatives_and_noise_points():
    X, blob, _ = _blobs(1)
    outliers = np.array([[20.0, 20.0, 20.0], [-15.0, 4.0, 9.0]])
    X = np.vstack([X, outliers])
    cl = dbscan_clusters(X, eps=1.5, min_samples=5, standardize_features=False)
    assert cl.n_clusters == 4
    assert sorted(blob[cl.representatives].tolist()) == [0, 1, 2, 3]
    assert sorted(cl.noise.tolist()) == [160, 161]
    assert cl.noise[0] == 160  # the most isolated first
    sel = DBSCANSelector(eps=1.5, min_samples=5, standardize=False)
    picked = sel.select(X, 6, rng=0)
    assert set(picked[:4].tolist()) == set(cl.representatives.tolist())
    assert set(picked[4:].tolist()) == {160, 161}
    more = sel.select(X, 20, rng=0)
    assert len(set(more.tolist())) == 20


def test_principal_components_keep_distances_and_the_clustering():
    X, blob, _ = _blobs(4)
    rng = np.random.default_rng(0)
    # the blobs embedded in 60 columns by a random rotation, plus tiny noise in all of them
    Q, _ = np.linalg.qr(rng.normal(size=(60, 60)))
    wide = np.hstack([X, np.zeros((len(X), 57))]) @ Q.T + 1e-4 * rng.normal(size=(len(X), 60))
    Z = principal_components(wide, 0.9999)
    assert Z.shape[1] == 3
    np.testing.assert_allclose(pdist(Z), pdist(wide), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(pdist(principal_components(wide, None)), pdist(wide))
    full = dbscan_clusters(wide, eps=1.5, standardize_features=False, variance_kept=None)
    reduced = dbscan_clusters(wide, eps=1.5, standardize_features=False)
    np.testing.assert_array_equal(full.labels, reduced.labels)
    assert sorted(blob[reduced.representatives].tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="variance_kept"):
        principal_components(wide, 0.0)


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_every_selector_has_the_common_signature(name):
    X, _, _ = _blobs(2, n=30)
    a = get_selector(name).select(X, 10, rng=np.random.default_rng(3))
    b = get_selector(name).select(X, 10, rng=np.random.default_rng(3))
    assert a.dtype.kind == "i" and len(set(a.tolist())) == 10
    assert np.all((a >= 0) & (a < len(X)))
    np.testing.assert_array_equal(a, b)  # reproducible from the rng
    # coverage methods reach all four blobs; D-optimality maximises volume instead, so it
    # skips the blob at the origin (rows of small norm add no volume)
    if name not in ("random", "doptimal"):
        assert len({int(i) // 30 for i in a}) == 4


def test_get_selector_errors_name_the_problem():
    with pytest.raises(ConfigError, match="unknown selector 'nope'"):
        get_selector("nope")
    with pytest.raises(ConfigError, match="dpp"):
        get_selector("dpp", bandwidth=3)
    assert get_selector("maxvol").__class__.__name__ == "DOptimalSelector"


def test_select_command_writes_the_picked_frames(tmp_path):
    frames = reference_md_frames(300, 6, every=3, rng=0) + reference_md_frames(1500, 6, rng=1)
    pool = tmp_path / "pool.xyz"
    write(pool, frames)
    parser = argparse.ArgumentParser()
    add_subparser(parser.add_subparsers())
    out = tmp_path / "picked.xyz"
    args = parser.parse_args(
        ["select", str(pool), "-k", "4", "--method", "dpp", "-o", str(out),
         "--indices", str(tmp_path / "idx.txt"), "--n-radial", "3", "--l-max", "1"]
    )
    assert args.func(args) == 0
    picked = ase_read(out, index=":")
    idx = np.loadtxt(tmp_path / "idx.txt", dtype=int)
    assert len(picked) == 4 and len(set(idx.tolist())) == 4
    for a, i in zip(picked, idx):
        np.testing.assert_allclose(a.positions, frames[i].positions, atol=1e-6)
        np.testing.assert_allclose(a.get_forces(), frames[i].get_forces(), atol=1e-6)
