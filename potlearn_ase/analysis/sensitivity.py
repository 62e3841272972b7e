"""Sensitivity of quantities of interest to the parameters and the training data of a linear model.

For a linear committee the parameters ``theta`` have a Gaussian posterior ``N(mean, Sigma)``
with ``Sigma = U diag(lambda) U^T``. Writing ``theta = mean + sum_k z_k sqrt(lambda_k) u_k``,
the whitened coordinates ``z`` have a standard normal posterior, and

* ``dq/dz_k`` comes from central differences ``q(mean +- h sqrt(lambda_k) u_k)`` along the
  posterior principal directions; every perturbed parameter vector is one member of a single
  committee, so one descriptor pass per structure serves all ``2k`` evaluations;
* to first order ``Var q = sum_k (dq/dz_k)^2 = g^T Sigma g`` with ``g = dq/dtheta``; the share
  of that variance explained by parameter ``j`` (the variance removed if ``theta_j`` were known
  exactly) is the squared posterior correlation of ``q`` and ``theta_j``,
  ``(Sigma g)_j^2 / (Sigma_jj g^T Sigma g)``, between 0 and 1 (shares of correlated
  parameters overlap, so they need not add up to 1);
* the active subspace is spanned by the leading eigenvectors of
  ``C = E[sum_q grad_z q grad_z q^T / Var q]`` (gradients in whitened coordinates, i.e. weighted
  by the posterior covariance; the expectation over the mean and optional posterior draws);
* the influence of a training structure ``i`` on a QoI is ``Delta q_i = grad_theta q . Delta
  theta_i``, with ``Delta theta_i`` the exact leave-one-out change of the posterior mean at
  fixed regularisation, ``-(H - A_i^T W_i A_i)^-1 A_i^T W_i r_i``, or the infinitesimal
  influence function ``d theta / d w_i = H^-1 A_i^T W_i r_i`` (``H = sigma^2 Sigma^-1`` the
  regularised normal matrix, ``r_i`` the residuals of structure ``i``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase.models.base import CommitteeModel
from potlearn_ase.models.linear import LinearCommittee, design_rows

__all__ = [
    "SensitivityResult",
    "parameter_names",
    "posterior_directions",
    "qoi_sensitivity",
    "sensitivity_plot",
    "sensitivity_table",
    "training_influence",
]

QoIFunction = Callable[[CommitteeModel], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class SensitivityResult:
    """Gradients of QoIs along the posterior principal directions, and what follows from them.

    Attributes
    ----------
    qoi_names : tuple of str
    qoi_values : np.ndarray
        ``(Q,)`` QoIs of the posterior-mean parameters.
    eigenvalues : np.ndarray
        ``(k,)`` posterior variances along the principal directions used (descending).
    directions : np.ndarray
        ``(P, k)`` the unit principal directions ``u_k`` in parameter space.
    gradient_z : np.ndarray
        ``(Q, k)`` ``dq/dz_k`` at the mean: QoI change per posterior sigma along ``u_k``.
    gradient : np.ndarray
        ``(Q, P)`` ``dq/dtheta`` (restricted to the span of the directions used).
    variance : np.ndarray
        ``(Q,)`` first-order posterior variance ``sum_k gradient_z**2``.
    contributions : np.ndarray
        ``(Q, P)`` share of each QoI's first-order variance explained by each parameter, in
        [0, 1]: the squared posterior correlation of the QoI and the parameter.
    active_eigenvalues : np.ndarray
        ``(k,)`` eigenvalues of the active-subspace matrix (descending).
    active_directions : np.ndarray
        ``(P, k)`` active directions mapped to parameter space (unit vectors).
    parameter_names : tuple of str
    """

    qoi_names: tuple[str, ...]
    qoi_values: np.ndarray
    eigenvalues: np.ndarray
    directions: np.ndarray
    gradient_z: np.ndarray
    gradient: np.ndarray
    variance: np.ndarray
    contributions: np.ndarray
    active_eigenvalues: np.ndarray
    active_directions: np.ndarray
    parameter_names: tuple[str, ...]

    def top_parameters(self, qoi: str, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` parameters carrying most of ``qoi``'s variance: ``(name, fraction)``."""
        q = self.qoi_names.index(qoi)
        order = np.argsort(-self.contributions[q])[:n]
        return [(self.parameter_names[j], float(self.contributions[q, j])) for j in order]


def posterior_directions(model: LinearCommittee) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and unit eigenvectors ``(P, P)`` of the posterior covariance."""
    post = _posterior(model)
    lam, U = np.linalg.eigh(0.5 * (post.cov + post.cov.T))
    order = np.argsort(lam)[::-1]
    return np.clip(lam[order], 0.0, None), U[:, order]


def _posterior(model: CommitteeModel) -> Any:
    if not isinstance(model, LinearCommittee) or model.posterior is None:
        raise ValueError(
            "sensitivity analysis needs a linear model with a parameter posterior, got a "
            f"{model.kind} model"
        )
    return model.posterior


def parameter_names(model: LinearCommittee) -> tuple[str, ...]:
    """Readable names of the flattened parameters ``coef[s, j]``.

    ``Cu:const`` is the per-element constant. For the ACE-like descriptor the features read
    ``A0[Cu,n]`` (body order 2, radial function ``n`` of neighbour element Cu),
    ``l2[Cu,n|Cu,n']`` (body order 3, angular degree ``l``) and ``A0^3[...]`` (body order 4);
    other descriptors give ``B<k>``.
    """
    desc = model.descriptor
    K = desc.n_features
    feats = [f"B{k}" for k in range(K)]
    if desc.family == "ace":
        cfg = desc.config
        chan = [f"{el},{n}" for el in desc.elements for n in range(cfg.n_radial)]
        P = len(chan)
        names = [f"A0[{c}]" for c in chan]
        pairs = [(p, q) for p in range(P) for q in range(p, P)]
        for ell in range(cfg.l_max + 1):
            names += [f"l{ell}[{chan[p]}|{chan[q]}]" for p, q in pairs]
        if cfg.body_order == 4:
            names += [
                f"A0^3[{chan[p]}|{chan[q]}|{chan[r]}]"
                for p in range(P) for q in range(p, P) for r in range(q, P)
            ]
        if len(names) == K:
            feats = names
    return tuple(f"{el}:{f}" for el in model.elements for f in ("const", *feats))


def qoi_sensitivity(
    model: LinearCommittee,
    qoi_fn: QoIFunction,
    *,
    n_directions: int | None = None,
    step: float = 1.0,
    n_points: int = 1,
    rng: np.random.Generator | int | None = None,
) -> SensitivityResult:
    """Gradients of QoIs along the posterior principal directions, variance shares, active subspace.

    Parameters
    ----------
    model : LinearCommittee
        A linear model with a posterior.
    qoi_fn : callable
        ``committee -> {name: (M,) per-member values}``, e.g.
        ``lambda m: compute_qois(m, atoms, which=("eos", "elastic")).samples()``. It is called
        once with a committee whose members are the perturbed parameter vectors.
    n_directions : int, optional
        Use the ``n_directions`` directions of largest posterior variance (default: all with
        non-negligible variance).
    step : float
        Finite-difference step in posterior sigmas.
    n_points : int
        Points at which gradients are averaged for the active subspace: the posterior mean,
        then ``n_points - 1`` posterior draws. The reported gradients are those at the mean.
    rng : numpy Generator or seed
        Draws the extra points.
    """
    post = _posterior(model)
    lam, U = posterior_directions(model)
    keep = lam > 1e-14 * lam[0]
    if n_directions is not None:
        keep[n_directions:] = False
    lam, U = lam[keep], U[:, keep]
    k = lam.size
    D = U * np.sqrt(lam)  # (P, k) one posterior sigma along each direction
    gen = np.random.default_rng(rng)
    points = [post.mean]
    if n_points > 1:
        points += list(post.sample(n_points - 1, rng=gen, antithetic=False))
    coefs = []
    for theta in points:
        coefs += [theta + step * D.T, theta - step * D.T]
    coefs.append(post.mean[None])
    C = np.concatenate(coefs)
    S, K1 = model.coef.shape[1:]
    probe = LinearCommittee(model.descriptor, C.reshape(-1, S, K1), config=model.config)
    values = qoi_fn(probe)
    names = tuple(values)
    V = np.stack([np.asarray(values[n], dtype=float).reshape(-1) for n in names])  # (Q, members)
    if V.shape[1] != C.shape[0]:
        raise ValueError(f"qoi_fn returned {V.shape[1]} values per QoI for {C.shape[0]} members")
    G = []
    for p in range(len(points)):
        block = V[:, 2 * k * p : 2 * k * (p + 1)]
        G.append((block[:, :k] - block[:, k:]) / (2.0 * step))
    Gz = np.stack(G)  # (points, Q, k)
    grad_z = Gz[0]
    variance = np.sum(grad_z**2, axis=1)
    gradient = (grad_z / np.sqrt(lam)) @ U.T  # (Q, P)
    sigma_g = (grad_z * np.sqrt(lam)) @ U.T  # Sigma g, restricted to the span
    diag = np.maximum(np.diag(post.cov), 1e-300)
    with np.errstate(invalid="ignore", divide="ignore"):
        contributions = np.where(
            variance[:, None] > 0, sigma_g**2 / (diag[None, :] * variance[:, None]), 0.0
        )
    contributions = np.clip(contributions, 0.0, 1.0)
    norm = np.sqrt(np.maximum(np.sum(Gz**2, axis=2, keepdims=True), 1e-300))
    Gn = Gz / norm
    Cz = np.einsum("pqi,pqj->ij", Gn, Gn) / len(points)
    a_lam, a_vec = np.linalg.eigh(Cz)
    order = np.argsort(a_lam)[::-1]
    a_lam, a_vec = a_lam[order], a_vec[:, order]
    dirs = D @ a_vec
    dirs /= np.maximum(np.linalg.norm(dirs, axis=0, keepdims=True), 1e-300)
    return SensitivityResult(
        qoi_names=names,
        qoi_values=V[:, -1],
        eigenvalues=lam,
        directions=U,
        gradient_z=grad_z,
        gradient=gradient,
        variance=variance,
        contributions=contributions,
        active_eigenvalues=np.clip(a_lam, 0.0, None),
        active_directions=dirs,
        parameter_names=parameter_names(model),
    )


def training_influence(
    model: LinearCommittee,
    frames: Sequence[Atoms],
    sensitivity: SensitivityResult,
    *,
    method: str = "loo",
) -> np.ndarray:
    """Change of each QoI caused by each training structure, ``(n_frames, Q)``.

    Parameters
    ----------
    model : LinearCommittee
        The fitted model; ``frames`` are (some of) its training structures, with labels.
    frames : sequence of ase.Atoms
    sensitivity : SensitivityResult
        From :func:`qoi_sensitivity` on the same model (its gradients are used).
    method : {"loo", "influence"}
        ``"loo"``: the QoI change when the structure is left out (exact for the posterior
        mean at fixed regularisation, first order in the QoI). ``"influence"``: the derivative
        of the QoI with respect to the structure's weight, ``dq/dw_i`` (upweighting it by a
        small ``eps`` changes the QoI by ``eps * dq/dw_i``).
    """
    if method not in ("loo", "influence"):
        raise ValueError(f"method must be 'loo' or 'influence', got {method!r}")
    post = _posterior(model)
    Hinv = post.cov / post.sigma2
    theta = post.mean
    out = np.zeros((len(frames), len(sensitivity.qoi_names)))
    for i, atoms in enumerate(frames):
        A, y, w = design_rows(model.descriptor, [atoms], model.config)
        r = y - A @ theta
        if method == "loo":
            B = A @ Hinv @ A.T
            # (H - A^T W A)^-1 A^T W r = Hinv A^T (I - W B)^-1 W r
            x = np.linalg.solve(np.eye(len(r)) - w[:, None] * B, w * r)
            dtheta = -Hinv @ (A.T @ x)
        else:
            dtheta = Hinv @ (A.T @ (w * r))
        out[i] = sensitivity.gradient @ dtheta
    return out


def sensitivity_table(
    result: SensitivityResult,
    *,
    influence: np.ndarray | None = None,
    top: int = 3,
) -> str:
    """Text table: each QoI's value, first-order sigma, leading parameters and structures."""
    lines = []
    frac_active = result.active_eigenvalues / max(float(result.active_eigenvalues.sum()), 1e-300)
    for q, name in enumerate(result.qoi_names):
        sd = float(np.sqrt(result.variance[q]))
        lines.append(
            f"{name}: {result.qoi_values[q]:.6g} +- {sd:.3g} (first order, raw posterior: "
            "times the calibration for the calibrated sigma)"
        )
        share = result.gradient_z[q] ** 2 / max(float(result.variance[q]), 1e-300)
        lead = np.argsort(-share)[:top]
        lines.append(
            "  principal directions: "
            + ", ".join(f"#{k + 1} {100 * share[k]:.1f}%" for k in lead)
        )
        lines.append(
            "  parameters: "
            + ", ".join(f"{p} {100 * f:.1f}%" for p, f in result.top_parameters(name, top))
        )
        if influence is not None:
            order = np.argsort(-np.abs(influence[:, q]))[:top]
            lines.append(
                "  structures: "
                + ", ".join(f"#{i} {influence[i, q]:+.3g}" for i in order)
            )
    lines.append(
        "active subspace: "
        + ", ".join(f"{100 * f:.1f}%" for f in frac_active[: max(top, 3)])
        + " of the normalised gradient variance in the leading directions"
    )
    return "\n".join(lines)


def sensitivity_plot(
    result: SensitivityResult,
    path: str | os.PathLike,
    *,
    influence: np.ndarray | None = None,
    top: int = 10,
) -> Path:
    """PNG: variance shares of the leading parameters, the active-subspace spectrum and the
    training-structure influence (in units of each QoI's first-order sigma)."""
    from potlearn_ase.analysis.plots import new_figure, save_figure

    Q = len(result.qoi_names)
    n_panels = 3 if influence is not None else 2
    fig = new_figure((4.2 * n_panels, 0.4 * Q + 3.0))
    ax = fig.add_subplot(1, n_panels, 1)
    score = np.max(result.contributions, axis=0)
    cols = np.argsort(-score)[:top]
    im = ax.imshow(result.contributions[:, cols] * 100, cmap="viridis", vmin=0, vmax=100,
                   aspect="auto")
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([result.parameter_names[j] for j in cols], rotation=70, fontsize=6)
    ax.set_yticks(range(Q))
    ax.set_yticklabels(result.qoi_names, fontsize=7)
    ax.set_title("variance share (%)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax2 = fig.add_subplot(1, n_panels, 2)
    ev = result.active_eigenvalues
    ax2.semilogy(np.arange(1, ev.size + 1), np.maximum(ev, 1e-16), "o-", ms=3)
    ax2.set_xlabel("active direction")
    ax2.set_ylabel("eigenvalue")
    ax2.set_title("active subspace", fontsize=9)
    if influence is not None:
        ax3 = fig.add_subplot(1, n_panels, 3)
        sd = np.sqrt(np.maximum(result.variance, 1e-300))
        rel = influence / sd[None, :]
        lim = float(np.max(np.abs(rel))) or 1.0
        im3 = ax3.imshow(rel.T, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax3.set_yticks(range(Q))
        ax3.set_yticklabels(result.qoi_names, fontsize=7)
        ax3.set_xlabel("training structure")
        ax3.set_title("influence / sigma", fontsize=9)
        fig.colorbar(im3, ax=ax3, shrink=0.8)
    return save_figure(fig, path)
