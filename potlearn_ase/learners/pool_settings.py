"""Settings of pool-based active learning (:class:`~potlearn_ase.learners.pool.PoolLearner`)."""

from __future__ import annotations

from dataclasses import dataclass

from potlearn_ase.errors import ConfigError

__all__ = ["DIVERSITY", "PoolConfig"]

DIVERSITY = ("variance", "dpp", "fps", "none")


@dataclass(frozen=True)
class PoolConfig:
    """Settings of a pool-based active-learning run.

    Attributes
    ----------
    n_seed : int
        Structures of the initial set (farthest-point sampling).
    batch_size : int
        Structures labelled per round.
    budget : int
        Labelled pool structures at most (stored ones included).
    score : {"sigma", "gamma", "both"}
        Committee force spread, extrapolation grade, or the mean of their ranks.
    diversity : {"variance", "dpp", "fps", "none"}
        How a batch is picked: by score-weighted variance reduction over the whole scored pool
        (``variance``), or among the most uncertain candidates by k-DPP MAP, farthest-point
        sampling or score alone.
    candidate_factor : int
        ``dpp``, ``fps`` and ``none`` pick among the ``candidate_factor * batch_size``
        top-scored candidates.
    max_scored : int or None
        Score at most this many unlabelled candidates per round (a fresh random subset each
        round); None scores the whole pool.
    target_rmse : float or None
        Stop when the validation force RMSE (eV/A) is at most this.
    reduce : {"mean", "sum"}
        Structure features for the diversity step.
    explore : float
        Share of each batch drawn uniformly at random from the unlabelled pool instead of by
        score, in [0, 1). Uncertainty picks favour rare, extreme structures; a random share
        keeps the typical ones (where most of a test set lies) in the training data.
    density : float
        Exponent ``beta`` of a representativeness weight: each candidate's score is multiplied
        by its mean RBF similarity to the pool to the power ``beta`` ("information density"),
        so uncertain *and* typical structures go first; 0 ranks by uncertainty alone.
    seed : int
        Seeds the seed set, the subsets and the committee draws.
    """

    n_seed: int = 10
    batch_size: int = 10
    budget: int = 200
    score: str = "gamma"
    diversity: str = "variance"
    candidate_factor: int = 5
    max_scored: int | None = 2000
    target_rmse: float | None = None
    reduce: str = "mean"
    explore: float = 0.0
    density: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.score not in ("sigma", "gamma", "both"):
            raise ConfigError(f"score: expected sigma, gamma or both, got {self.score!r}")
        if self.diversity not in DIVERSITY:
            raise ConfigError(
                f"diversity: expected one of {', '.join(DIVERSITY)}, got {self.diversity!r}"
            )
        if not 0.0 <= float(self.explore) < 1.0:
            raise ConfigError(f"explore: a share in [0, 1), got {self.explore!r}")
        for key in ("n_seed", "batch_size", "budget", "candidate_factor"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"{key}: must be at least 1, got {getattr(self, key)}")
        if self.max_scored is not None and int(self.max_scored) < 1:
            raise ConfigError(f"max_scored: must be at least 1 or None, got {self.max_scored}")
        if float(self.density) < 0:
            raise ConfigError(f"density: must not be negative, got {self.density}")
        if self.target_rmse is not None and not float(self.target_rmse) > 0:
            raise ConfigError(f"target_rmse: must be positive (eV/A), got {self.target_rmse}")
