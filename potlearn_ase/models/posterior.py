"""Weighted Bayesian linear least squares from normal equations accumulated batch by batch.

Rows of the design matrix never need to be held all at once: each structure adds its
energy, force and stress rows to ``A^T W A``, ``A^T W y`` and ``y^T W y``. That keeps 100 000
structures in memory and makes adding one label to a fitted model a rank-k update.

The posterior of the weights is Gaussian, ``N(mean, sigma^2 (A^T W A + lambda D)^-1)``, where the
features are first scaled to unit weighted root-mean-square (``D`` holds those scales, so
``lambda`` is dimensionless). ``sigma^2`` is the noise variance by maximum likelihood corrected
for the effective number of fitted parameters; with ``lam="evidence"`` the prior precision is
chosen by maximising the marginal likelihood (MacKay's updates).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["NoiseLevels", "NormalEquations", "Posterior", "infer_noise", "solve_posterior"]


@dataclass
class NormalEquations:
    """Accumulated ``A^T W A``, ``A^T W y``, ``y^T W y`` and the number of rows.

    Parameters
    ----------
    n_params : int
        Number of columns of the design matrix.
    """

    n_params: int
    AtA: np.ndarray = field(init=False)
    Aty: np.ndarray = field(init=False)
    yty: float = 0.0
    n_rows: int = 0

    def __post_init__(self) -> None:
        self.AtA = np.zeros((self.n_params, self.n_params))
        self.Aty = np.zeros(self.n_params)

    def add(self, A: np.ndarray, y: np.ndarray, w: np.ndarray | float = 1.0) -> None:
        """Add rows ``A (r, n_params)`` with targets ``y (r,)`` and weights ``w`` (per row)."""
        A = np.asarray(A, dtype=np.float64).reshape(-1, self.n_params)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        w = np.broadcast_to(np.asarray(w, dtype=np.float64), y.shape)
        Aw = A * w[:, None]
        self.AtA += A.T @ Aw
        self.Aty += Aw.T @ y
        self.yty += float(y @ (w * y))
        self.n_rows += int(np.count_nonzero(w))  # a zero-weight row carries no data

    def remove(self, A: np.ndarray, y: np.ndarray, w: np.ndarray | float = 1.0) -> None:
        """Take out rows added before with :meth:`add` (held-out data, closed form)."""
        A = np.asarray(A, dtype=np.float64).reshape(-1, self.n_params)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        w = np.broadcast_to(np.asarray(w, dtype=np.float64), y.shape)
        n = int(np.count_nonzero(w))
        if n > self.n_rows:
            raise ValueError(f"cannot remove {n} rows from {self.n_rows}")
        Aw = A * w[:, None]
        self.AtA -= A.T @ Aw
        self.Aty -= Aw.T @ y
        self.yty -= float(y @ (w * y))
        self.n_rows -= n

    def merge(self, other: NormalEquations) -> None:
        """Add another accumulator (e.g. from another MPI rank)."""
        self.AtA += other.AtA
        self.Aty += other.Aty
        self.yty += other.yty
        self.n_rows += other.n_rows

    @classmethod
    def weighted_sum(
        cls, parts: list[NormalEquations], weights: np.ndarray | list[float]
    ) -> NormalEquations:
        """``sum_k weights[k] * parts[k]``: rows of part ``k`` with their weights scaled by
        ``weights[k]`` (parts with weight 0 are left out, rows included)."""
        total = cls(parts[0].n_params)
        for ne, wt in zip(parts, weights):
            if wt > 0:
                total.AtA += wt * ne.AtA
                total.Aty += wt * ne.Aty
                total.yty += wt * ne.yty
                total.n_rows += ne.n_rows
        return total

    def sse(self, theta: np.ndarray) -> float:
        """Weighted sum of squared residuals of these rows for parameters ``theta``."""
        return max(self.yty - 2.0 * float(theta @ self.Aty) + float(theta @ self.AtA @ theta),
                   0.0)

    def without(self, part: NormalEquations) -> NormalEquations:
        """These equations less ``part``, rows that were added to them (e.g. a fold's)."""
        new = self.copy()
        new.AtA -= part.AtA
        new.Aty -= part.Aty
        new.yty -= part.yty
        new.n_rows -= part.n_rows
        return new

    def copy(self) -> NormalEquations:
        new = NormalEquations(self.n_params)
        new.AtA = self.AtA.copy()
        new.Aty = self.Aty.copy()
        new.yty = self.yty
        new.n_rows = self.n_rows
        return new

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "AtA": self.AtA,
            "Aty": self.Aty,
            "yty": np.array(self.yty),
            "n_rows": np.array(self.n_rows),
        }

    @classmethod
    def from_state_dict(cls, d: dict[str, np.ndarray]) -> NormalEquations:
        new = cls(int(np.asarray(d["Aty"]).shape[0]))
        new.AtA = np.array(d["AtA"], dtype=np.float64)
        new.Aty = np.array(d["Aty"], dtype=np.float64)
        new.yty = float(np.asarray(d["yty"]))
        new.n_rows = int(np.asarray(d["n_rows"]))
        return new


@dataclass
class Posterior:
    """Gaussian posterior of linear weights.

    Attributes
    ----------
    mean : np.ndarray
        ``(n_params,)`` posterior mean (the ridge solution).
    cov : np.ndarray
        ``(n_params, n_params)`` posterior covariance ``sigma^2 (A^T W A + lambda D)^-1``.
    sigma2 : float
        Noise variance in the units of the weighted rows.
    lam : float
        Ridge parameter used (dimensionless, relative to scaled features).
    n_eff : float
        Effective number of parameters determined by the data.
    """

    mean: np.ndarray
    cov: np.ndarray
    sigma2: float
    lam: float
    n_eff: float

    def sample(self, n: int, *, rng: np.random.Generator, antithetic: bool = True) -> np.ndarray:
        """``(n, n_params)`` draws; with ``antithetic`` the draws come in pairs ``mean +- d``
        (and the mean itself when ``n`` is odd), so their average is the posterior mean
        exactly. For odd ``n`` the pairs' deviations are widened by ``sqrt(n / (n - 1))``,
        so that the spread of the ``n`` draws (``ddof=0``) still estimates the posterior
        covariance without bias."""
        if n == 1:
            return self.mean[None].copy()
        L = _safe_cholesky(self.cov)
        if not antithetic:
            z = rng.standard_normal((n, self.mean.size))
            return self.mean + z @ L.T
        half = n // 2
        z = rng.standard_normal((half, self.mean.size))
        d = z @ L.T
        if n % 2:
            d *= np.sqrt(n / (n - 1))
        draws = [self.mean + d, self.mean - d]
        if n % 2:
            draws.append(self.mean[None])
        return np.concatenate(draws, axis=0)


def _safe_cholesky(C: np.ndarray) -> np.ndarray:
    C = 0.5 * (C + C.T)
    jitter = 0.0
    scale = float(np.mean(np.diag(C))) or 1.0
    for _ in range(8):
        try:
            return np.linalg.cholesky(C + jitter * np.eye(len(C)))
        except np.linalg.LinAlgError:
            jitter = max(jitter * 10.0, 1e-12 * scale)
    w, V = np.linalg.eigh(C)
    return V * np.sqrt(np.clip(w, 0.0, None))


def solve_posterior(
    ne: NormalEquations,
    *,
    lam: float | str = "evidence",
    sigma_floor: float = 1e-4,
    unregularised: np.ndarray | None = None,
    max_iter: int = 50,
    sigma2: float | None = None,
    polish: bool = True,
) -> Posterior:
    """Posterior of the weights from accumulated normal equations.

    Parameters
    ----------
    ne : NormalEquations
        The accumulated system.
    lam : float or "evidence"
        Ridge parameter relative to the scaled features, or ``"evidence"`` to maximise the
        marginal likelihood over it.
    sigma_floor : float
        Smallest noise standard deviation (in the weighted row units), so that a model that
        interpolates a handful of labels does not claim zero uncertainty.
    unregularised : np.ndarray, optional
        Boolean mask of parameters with (almost) no prior penalty (e.g. per-element constants).
    sigma2 : float, optional
        The noise variance of the weighted rows when it is known (rows weighted by ``1 /
        sigma`` of their label type, :func:`infer_noise`: 1); default: estimated from the
        residuals.
    polish : bool
        Finish the evidence maximisation with direct solves (default). Without, the ridge
        parameter comes from the eigensystem of the rescaled system alone, to about 1e-3 in
        its logarithm when some parameters are unregularised: enough to compare settings.
    """
    known = sigma2
    n = ne.n_params
    diag = np.diag(ne.AtA).copy()
    ref = float(np.mean(diag[diag > 0])) if np.any(diag > 0) else 1.0
    scale = np.sqrt(np.maximum(diag, 1e-12 * ref))
    H = ne.AtA / np.outer(scale, scale)
    b = ne.Aty / scale
    prior = np.ones(n)
    if unregularised is not None:
        prior[np.asarray(unregularised, dtype=bool)] = 1e-6
    n_rows = max(ne.n_rows, 1)

    def solve(alpha: float) -> tuple[np.ndarray, float, float]:
        # (H + alpha * diag(prior)) x = b by a direct solve
        Hr = H + alpha * np.diag(prior)
        x = np.linalg.solve(Hr, b)
        gamma = float(np.trace(np.linalg.solve(Hr, H)))
        rss = ne.yty - 2.0 * float(x @ b) + float(x @ H @ x)
        return x, gamma, max(rss, 0.0)

    def evidence(step: Callable[[float], tuple[np.ndarray, float, float]], alpha: float) -> float:
        for _ in range(max_iter):
            x, gamma, rss = step(alpha)
            beta = (
                1.0 / known
                if known is not None
                else max(n_rows - gamma, 1.0) / max(rss, sigma_floor**2 * n_rows)
            )
            new_alpha = gamma / max(float(x @ (prior * x)), 1e-30) / beta
            new_alpha = float(np.clip(new_alpha, 1e-10, 1e6))
            if abs(np.log(new_alpha / alpha)) < 1e-3:
                return new_alpha
            alpha = new_alpha
        return alpha

    if lam == "evidence":
        # H + alpha diag(prior) = D (H' + alpha) D with D = diag(sqrt(prior)): one eigensystem of
        # H' serves every alpha in O(n^2); it loses digits along the unregularised parameters, so
        # it only brings the evidence iteration near its fixed point, which direct solves finish
        d = np.sqrt(prior)
        evals, evecs = np.linalg.eigh(0.5 * (H + H.T) / np.outer(d, d))
        evals = np.clip(evals, 0.0, None)
        bt = evecs.T @ (b / d)

        def solve_fast(alpha: float) -> tuple[np.ndarray, float, float]:
            x = (evecs @ (bt / (evals + alpha))) / d
            gamma = float(np.sum(evals / (evals + alpha)))
            rss = ne.yty - 2.0 * float(x @ b) + float(x @ H @ x)
            return x, gamma, max(rss, 0.0)

        alpha = evidence(solve_fast, 1e-3)
        if unregularised is not None and polish:  # uniform prior: the eigensystem is exact
            alpha = evidence(solve, alpha)
    elif isinstance(lam, (int, float)):
        alpha = float(lam)
    else:
        raise ValueError(f"lam must be a number or 'evidence', got {lam!r}")
    # the solution by a direct solve (the inverse loses digits in an ill-conditioned system);
    # one inverse gives the effective number of parameters and the covariance
    Hr = H + alpha * np.diag(prior)
    x = np.linalg.solve(Hr, b)
    Hinv = np.linalg.inv(Hr)
    gamma = float(np.sum(Hinv * H))  # trace(Hinv H), H symmetric
    rss = max(ne.yty - 2.0 * float(x @ b) + float(x @ H @ x), 0.0)
    sigma2 = known if known is not None else max(rss / max(n_rows - gamma, 1.0), sigma_floor**2)
    cov_scaled = sigma2 * Hinv
    mean = x / scale
    cov = cov_scaled / np.outer(scale, scale)
    return Posterior(mean=mean, cov=0.5 * (cov + cov.T), sigma2=sigma2, lam=alpha, n_eff=gamma)


@dataclass
class NoiseLevels:
    """Per-label-type noise levels inferred by evidence maximisation.

    Attributes
    ----------
    sigma : np.ndarray
        ``(n_blocks,)`` noise standard deviation of each block, in its row units (NaN for a
        block without rows).
    lam : float
        The prior precision at the optimum, relative to the noise-weighted scaled features
        (the ``lam`` of :func:`solve_posterior` for rows weighted by ``1 / sigma``).
    n_eff : np.ndarray
        ``(n_blocks,)`` effective number of parameters each block determines.
    iterations : int
        Fixed-point iterations used.
    """

    sigma: np.ndarray
    lam: float
    n_eff: np.ndarray
    iterations: int
    temper: np.ndarray

    @property
    def weights(self) -> np.ndarray:
        """Row weights ``sqrt(temper) / sigma`` of each block (0 for a block without rows)."""
        ok = np.isfinite(self.sigma)
        return np.where(ok, np.sqrt(self.temper) / np.where(ok, self.sigma, 1.0), 0.0)


def infer_noise(
    blocks: list[NormalEquations],
    *,
    lam: float | str = "evidence",
    sigma_floor: np.ndarray | float = 1e-6,
    unregularised: np.ndarray | None = None,
    temper: np.ndarray | None = None,
    max_iter: int = 2000,
    tol: float = 1e-7,
) -> NoiseLevels:
    """Noise level of each block of rows (energies, forces, stress) by type-II maximum likelihood.

    Each block ``b`` holds unit-weight rows with its own Gaussian noise precision
    ``beta_b``; the weights have the prior ``N(0, (lam D)^-1)`` on features scaled by the
    noise-weighted design (``D``). MacKay's fixed point is iterated: solve the posterior,
    then ``beta_b = (n_b - gamma_b) / rss_b`` with ``gamma_b = beta_b tr(Sigma H_b)`` the
    parameters block ``b`` determines, and (with ``lam="evidence"``)
    ``lam = gamma / |x|^2``. At the fixed point, :func:`solve_posterior` on the blocks
    summed with weights ``temper_b / sigma_b^2`` and ``sigma2=1`` returns the same posterior.

    ``temper`` raises each block's likelihood to a power ``kappa_b`` in ``(0, 1]`` (a tempered
    likelihood, as generalised Bayesian inference uses for a model that cannot fit its data
    exactly): its rows then count as ``kappa_b n_b`` observations; ``kappa_b = structures /
    rows`` gives every label type the weight of its structures. The noise estimate stays per
    row, ``sigma_b^2 = rss_b / (n_b - gamma_b)``.

    Parameters
    ----------
    blocks : list of NormalEquations
        One accumulator per label type, rows added with unit weight.
    lam : float or "evidence"
        Fixed prior precision, or maximise the evidence over it too.
    sigma_floor : float or array
        Smallest noise standard deviation of each block (row units).
    unregularised : np.ndarray, optional
        Boolean mask of parameters without prior penalty.
    temper : np.ndarray, optional
        ``(n_blocks,)`` likelihood powers ``kappa_b`` (default 1: independent rows).
    """
    if not blocks:
        raise ValueError("infer_noise needs at least one block of rows")
    n = blocks[0].n_params
    floor = np.broadcast_to(np.asarray(sigma_floor, dtype=np.float64), (len(blocks),))
    live = [k for k, b in enumerate(blocks) if b.n_rows > 0]
    kappa = np.ones(len(blocks)) if temper is None else np.asarray(temper, dtype=np.float64)
    if not live:
        raise ValueError("infer_noise: no block holds any row")
    prior = np.ones(n)
    if unregularised is not None:
        prior[np.asarray(unregularised, dtype=bool)] = 1e-6
    # start from each block's mean square label: a weighting that does not favour any block
    beta = np.zeros(len(blocks))
    for k in live:
        b = blocks[k]
        beta[k] = b.n_rows / max(b.yty, floor[k] ** 2 * b.n_rows, 1e-300)
    alpha = 1e-3 if lam == "evidence" else float(lam)  # type: ignore[arg-type]
    if lam != "evidence" and not isinstance(lam, (int, float)):
        raise ValueError(f"lam must be a number or 'evidence', got {lam!r}")
    gam = np.zeros(len(blocks))
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (reported below)
        Hw = sum(kappa[k] * beta[k] * blocks[k].AtA for k in live)
        bw = sum(kappa[k] * beta[k] * blocks[k].Aty for k in live)
        diag = np.diag(Hw).copy()
        ref = float(np.mean(diag[diag > 0])) if np.any(diag > 0) else 1.0
        s = np.sqrt(np.maximum(diag, 1e-12 * ref))
        ss = np.outer(s, s)
        Hr = Hw / ss + alpha * np.diag(prior)
        Sigma = np.linalg.inv(0.5 * (Hr + Hr.T))
        x = Sigma @ (bw / s)
        new_beta = beta.copy()
        for k in live:
            b = blocks[k]
            Hk = b.AtA / ss
            bk = b.Aty / s
            rss = max(b.yty - 2.0 * float(x @ bk) + float(x @ Hk @ x), 0.0)
            gam[k] = kappa[k] * beta[k] * float(np.sum(Sigma * Hk))
            dof = max(b.n_rows - gam[k], 1.0)
            new_beta[k] = dof / max(rss, floor[k] ** 2 * dof)
        new_alpha = alpha
        if lam == "evidence":
            new_alpha = float(gam.sum()) / max(float(x @ (prior * x)), 1e-30)
            new_alpha = float(np.clip(new_alpha, 1e-10, 1e6))
        change = max(
            float(np.max(np.abs(np.log(new_beta[live] / beta[live])))),
            abs(np.log(new_alpha / alpha)),
        )
        beta, alpha = new_beta, new_alpha
        if change < tol:
            break
    sigma = np.full(len(blocks), np.nan)
    sigma[live] = 1.0 / np.sqrt(beta[live])
    return NoiseLevels(
        sigma=sigma, lam=alpha, n_eff=gam.copy(), iterations=iterations, temper=kappa.copy()
    )
