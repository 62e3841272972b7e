"""Linear potentials ``E = sum_i (b_{Z_i} + w_{Z_i} . B_i)`` with a Bayesian committee.

The weights are fitted by weighted ridge least squares on energies, forces and stress
(:mod:`potlearn_ase.models.posterior`); committee members are draws from the Gaussian
posterior of the weights. All members share one descriptor pass and one set of descriptor
derivatives, so eight members cost little more than one.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers

from potlearn_ase.descriptors.base import Descriptor
from potlearn_ase.models.base import CommitteeModel
from potlearn_ase.models.design import LABEL_BLOCKS, design_rows
from potlearn_ase.models.posterior import (
    NoiseLevels,
    NormalEquations,
    Posterior,
    solve_posterior,
)

__all__ = [
    "LABEL_BLOCKS",
    "LinearFitConfig",
    "LinearCommittee",
    "design_rows",
    "fit_linear",
]

#: the label types of the rows, in the order of :func:`accumulate_blocks`
#: weights of a fit with some but not all weights given (today's fixed weighting)
_FIXED_DEFAULTS = {"energy_weight": 30.0, "force_weight": 1.0, "stress_weight": 1.0}

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class LinearFitConfig:
    """Weights and regularisation of a linear fit.

    By default (``weights="fixed"``) the rows are weighted as given, the weights left at
    ``None`` taking ``energy_weight=30``, ``force_weight=1``, ``stress_weight=1``, with one
    common noise level for all rows. With ``weights="inferred"`` the noise level of each label
    type is inferred from the data by evidence maximisation (:func:`resolve_noise`) and the
    rows are weighted by ``1 / sigma`` of their type; the fitted model's ``config`` then holds
    those weights with ``noise_inferred=True``. Inferred weights are not the default: with
    ``temper="structures"`` they fit Zuo et al. DFT energies more closely, but on small data
    sets they leave forces almost unweighted (12 EMT Cu structures: 0.154 eV/A against 0.0041
    with fixed weights), and untempered they fit energies less closely than 30:1 does.
    With ``weights="cv"`` the energy and stress weights are chosen by 5-fold cross-validation
    over the structures (:mod:`~potlearn_ase.models.weight_search`, force weight 1); the
    fitted model's ``config`` holds the chosen weights as fixed ones (an update keeps them)
    and ``model.weight_search`` the scores of every weight tried. ``potlearn fit`` uses it.

    Attributes
    ----------
    energy_weight : float or None
        Weight of a per-atom energy residual (1/(eV/atom)); squared in the loss.
    force_weight : float or None
        Weight of a force component residual (1/(eV/A)); 0 ignores forces.
    stress_weight : float or None
        Weight of a virial-per-atom residual (1/(eV/atom)); 0 ignores stress.
    lam : float or "evidence"
        Ridge parameter relative to the weighted, scaled features, or marginal-likelihood
        maximisation.
    sigma_floor : float
        Smallest noise standard deviation in force units (eV/A); inferred energy and stress
        noise levels are floored at a tenth of it (eV/atom).
    n_members : int
        Committee size ``M``.
    batch_size : int
        Structures per descriptor batch while accumulating the normal equations.
    temper : {"structures", "none"}
        With inferred noise: ``"structures"`` raises each label type's likelihood to the
        power ``structures / rows`` (a tempered likelihood, as generalised Bayes uses for a
        model that cannot fit its data exactly), so every label type weighs as much as its
        structures and none is sacrificed to the more numerous force rows
        (:func:`~potlearn_ase.models.posterior.infer_noise`); ``"none"`` treats every
        row as an independent observation.
    weights : {"fixed", "inferred", "cv"}
        Fixed weights (as given, defaults 30, 1, 1), each label type's noise level
        inferred from the data, or the weights chosen by cross-validation (give no weight
        with either of the last two).
    noise_inferred : bool
        Set by :func:`fit_linear`: the weights are ``sqrt(kappa) / sigma`` inferred from the
        data, and the posterior uses them as known noise (no common noise level is fitted).
    covariance_scale : float
        The posterior covariance is multiplied by this. ``weights="cv"`` sets it from the
        same folds that chose the weights: the held-out mean squared force error over the
        mean posterior variance of those force components (each fold predicted by the
        posterior of the others). The noise level estimated from training residuals assumes
        independent rows; a potential that cannot fit DFT exactly leaves residuals that are
        correlated within a structure, and thousands of force rows then shrink the posterior
        far below the error they leave (on the Zuo et al. Mo data the committee needed a
        calibration factor of 12, about the square root of its 163 rows per structure).
    """

    energy_weight: float | None = None
    force_weight: float | None = None
    stress_weight: float | None = None
    lam: float | str = "evidence"
    sigma_floor: float = 1e-3
    n_members: int = 8
    batch_size: int = 16
    temper: str = "structures"
    weights: str = "fixed"
    noise_inferred: bool = False
    covariance_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.temper not in ("structures", "none"):
            raise ValueError(f"temper must be 'structures' or 'none', got {self.temper!r}")
        for key in _FIXED_DEFAULTS:
            value = getattr(self, key)
            if value is not None and not value >= 0:
                raise ValueError(f"{key}: must be at least 0, got {value}")
        if not self.covariance_scale > 0.0:
            raise ValueError(f"covariance_scale must be positive, got {self.covariance_scale}")
        if self.weights not in ("fixed", "inferred", "cv"):
            raise ValueError(
                f"weights must be 'fixed', 'inferred' or 'cv', got {self.weights!r}"
            )
        given = [k for k in _FIXED_DEFAULTS if getattr(self, k) is not None]
        if self.weights != "fixed" and given and not self.noise_inferred:
            raise ValueError(
                f"weights={self.weights!r} chooses {', '.join(given)}: give no weight"
            )

    @property
    def infers_noise(self) -> bool:
        """True when the fit is to infer each label type's noise level (``weights=
        "inferred"``, before the fit has done so)."""
        return self.weights == "inferred" and not self.noise_inferred

    def fixed(self) -> LinearFitConfig:
        """These settings with every unset weight at its fixed default (30, 1, 1)."""
        return replace(
            self,
            **{k: v for k, v in _FIXED_DEFAULTS.items() if getattr(self, k) is None},
        )


class LinearCommittee(CommitteeModel):
    """Committee of linear potentials drawn from a Bayesian posterior.

    Parameters
    ----------
    descriptor : Descriptor
        Any descriptor family (ACE-like or SNAP).
    coef : array or tensor
        ``(M, n_species, 1 + K)`` member coefficients (column 0 the per-element constant).
    posterior : Posterior, optional
        The posterior the members were drawn from.
    normal_equations : NormalEquations, optional
        The accumulated system, kept for closed-form updates with new labels.
    config : LinearFitConfig, optional
        The fit settings (reused by :meth:`update`).
    """

    kind = "linear"

    def __init__(
        self,
        descriptor: Descriptor,
        coef: np.ndarray | torch.Tensor,
        *,
        posterior: Posterior | None = None,
        normal_equations: NormalEquations | None = None,
        config: LinearFitConfig | None = None,
    ):
        super().__init__(descriptor)
        coef_t = torch.as_tensor(
            np.asarray(coef), dtype=descriptor.dtype, device=descriptor.device
        )
        if coef_t.ndim != 3 or coef_t.shape[1:] != (
            len(descriptor.elements),
            descriptor.n_features + 1,
        ):
            raise ValueError(
                f"coef must have shape (M, {len(descriptor.elements)}, "
                f"{descriptor.n_features + 1}), got {tuple(coef_t.shape)}"
            )
        self.register_buffer("coef", coef_t)
        self.posterior = posterior
        self.normal_equations = normal_equations
        self.config = config or LinearFitConfig()
        #: the noise levels inferred by the last fit (None for fixed weights or a loaded model)
        self.noise: NoiseLevels | None = None
        #: the unit-weight rows of each label type, kept to re-infer the noise on update
        self.label_blocks: Any = None
        #: the cross-validated choice of weights of the last fit (``weights="cv"``), or None
        self.weight_search: Any = None

    @property
    def n_members(self) -> int:
        return int(self.coef.shape[0])

    def linear_weights(self) -> torch.Tensor:
        return self.coef[:, :, 1:]

    def atomic_energies(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        W = self.coef[:, :, 1:]
        b = self.coef[:, :, 0]
        if W.shape[1] == 1:
            return (features @ W[:, 0].T).T + b[:, 0:1]
        return torch.einsum("ik,mik->mi", features, W[:, species]) + b[:, species]

    def atomic_energies_per_member(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        W = self.coef[:, :, 1:]
        return (x * W[:, species]).sum(-1) + self.coef[:, species, 0]

    def mean_coef(self) -> np.ndarray:
        """``(n_species, 1 + K)`` posterior-mean coefficients (the committee mean)."""
        return self.coef.mean(0).cpu().numpy()

    def hyperparameters(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        return {"fit": cfg, "n_members": self.n_members}

    # ----------------------------------------------------------------- training
    def update(
        self, frames: Sequence[Atoms], *, rng: np.random.Generator | int | None = None
    ) -> LinearCommittee:
        """Add labelled structures to the normal equations and re-solve (closed form).

        The cost is that of the new structures' rows plus one solve of the
        ``n_params x n_params`` system: it does not grow with the number of stored labels.
        A model whose noise levels were inferred in this process re-infers them with the new
        rows (the result equals a refit); a loaded one keeps its weights.
        """
        if self.normal_equations is None:
            raise RuntimeError("this model keeps no normal equations; refit it with fit_linear")
        if self.label_blocks is not None and self.config.noise_inferred:
            from potlearn_ase.models.noise import accumulate_blocks, resolve_noise

            for start in range(0, len(frames), self.config.batch_size):
                chunk = frames[start : start + self.config.batch_size]
                accumulate_blocks(self.descriptor, chunk, self.config, blocks=self.label_blocks)
            unset = replace(self.config, energy_weight=None, force_weight=None, stress_weight=None)
            n_species = len(self.descriptor.elements)
            self.config, self.normal_equations, self.noise = resolve_noise(
                self.label_blocks, n_species, unset
            )
        else:
            ne = self.normal_equations
            for start in range(0, len(frames), self.config.batch_size):
                chunk = frames[start : start + self.config.batch_size]
                ne.add(*design_rows(self.descriptor, chunk, self.config))
        self.draw_members(np.random.default_rng(rng))
        if self.active_set is not None:
            self.active_set = self.active_set.extended(self.descriptor, frames)
        return self

    def solve_posterior(self, ne: NormalEquations, *, lam: float | None = None) -> Posterior:
        """The posterior this model's settings give for the normal equations ``ne``.

        The same regularisation rule (``config.lam``, the noise floor, unpenalised per-element
        constants) as the model's own fit; used to re-solve with data added or held out.
        ``lam`` fixes the ridge parameter instead (e.g. the full data's, for its folds).
        """
        S, K = len(self.descriptor.elements), self.descriptor.n_features
        unreg = np.zeros(S * (K + 1), dtype=bool)
        unreg[:: K + 1] = True
        post = solve_posterior(
            ne,
            lam=self.config.lam if lam is None else lam,
            sigma_floor=self.config.sigma_floor * _floor_weight(self.config.fixed()),
            unregularised=unreg,
            sigma2=1.0 if self.config.noise_inferred else None,
        )
        if self.config.covariance_scale != 1.0:
            post = replace(post, cov=post.cov * self.config.covariance_scale)
        return post

    def draw_members(self, rng: np.random.Generator) -> None:
        """Solve the posterior of the kept normal equations and draw the members from it."""
        if self.normal_equations is None:
            raise RuntimeError("this model keeps no normal equations; refit it with fit_linear")
        S, K = len(self.descriptor.elements), self.descriptor.n_features
        post = self.solve_posterior(self.normal_equations)
        draws = post.sample(self.config.n_members, rng=rng)
        self.posterior = post
        self.coef = torch.as_tensor(
            draws.reshape(self.config.n_members, S, K + 1),
            dtype=self.coef.dtype,
            device=self.coef.device,
        )


def fit_linear(
    descriptor: Descriptor,
    frames: Sequence[Atoms],
    config: LinearFitConfig | None = None,
    *,
    rng: np.random.Generator | int | None = None,
    progress: bool = False,
) -> LinearCommittee:
    """Fit a linear committee to labelled structures.

    Parameters
    ----------
    descriptor : Descriptor
        ACE-like or SNAP descriptor.
    frames : sequence of ase.Atoms
        Structures with energy and forces (and optionally stress) as calculator results.
    config : LinearFitConfig
        Weights, regularisation and committee size.
    rng : numpy Generator or seed
        Draws the committee members.
    progress : bool
        Show a progress bar while accumulating.

    Raises
    ------
    MissingLabelError
        A structure lacks energy or forces (naming its index).
    UnknownElementError
        A structure holds an element the descriptor was not built for.
    """
    config = config or LinearFitConfig()
    if config.weights == "cv":
        return _fit_cross_validated(descriptor, frames, config, rng=rng, progress=progress)
    infer = config.infers_noise
    if not infer:
        config = config.fixed()
    S, K = len(descriptor.elements), descriptor.n_features
    seen = {int(z) for a in frames for z in set(a.numbers.tolist())}
    absent = [el for el in descriptor.elements if atomic_numbers[el] not in seen]
    if absent and frames:
        log.warning(
            "no training structure holds %s: its parameters are unconstrained, so structures "
            "with it get an arbitrary energy and a huge sigma", ", ".join(absent),
        )
    ne = NormalEquations(S * (K + 1))
    from potlearn_ase.models.noise import LabelBlocks, accumulate_blocks, resolve_noise

    blocks = LabelBlocks.empty(S * (K + 1))
    starts = range(0, len(frames), config.batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="accumulating", unit="batch")
    for start in starts:
        chunk = list(frames[start : start + config.batch_size])
        if infer:
            accumulate_blocks(descriptor, chunk, config, first_index=start, blocks=blocks)
        else:
            ne.add(*design_rows(descriptor, chunk, config, first_index=start))
    noise = None
    if infer:
        config, ne, noise = resolve_noise(blocks, S, config)
    model = LinearCommittee(
        descriptor,
        torch.zeros(config.n_members, S, K + 1, dtype=descriptor.dtype),
        normal_equations=ne,
        config=config,
    )
    model.noise = noise
    model.label_blocks = blocks if infer else None
    model.draw_members(np.random.default_rng(rng))
    return model


def _floor_weight(config: LinearFitConfig) -> float:
    """The row weight that scales the noise floor: the forces', or the energies' in an
    energy-only fit (a zero floor would divide by zero on an exact fit)."""
    assert config.force_weight is not None and config.energy_weight is not None
    return config.force_weight if config.force_weight > 0 else config.energy_weight


#: fewest structures for choosing the weights by cross-validation (two per fold)
MIN_CV_STRUCTURES = 10


def _fit_cross_validated(
    descriptor: Descriptor,
    frames: Sequence[Atoms],
    config: LinearFitConfig,
    *,
    rng: np.random.Generator | int | None,
    progress: bool,
) -> LinearCommittee:
    """:func:`fit_linear` with the energy and stress weights chosen by cross-validation."""
    from potlearn_ase.models.posterior import NormalEquations
    from potlearn_ase.models.weight_search import accumulate_folds, search_weights

    fixed = replace(config, weights="fixed")
    if len(frames) < MIN_CV_STRUCTURES:
        log.warning(
            "%d structures are too few to choose the weights by cross-validation (at least "
            "%d): the fixed weights 30, 1, 1 are used", len(frames), MIN_CV_STRUCTURES,
        )
        return fit_linear(descriptor, frames, fixed, rng=rng, progress=progress)
    unit = fixed.fixed()
    starts: Any = range(0, len(frames), config.batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="accumulating (5 folds)", unit="batch")
    folds = accumulate_folds(descriptor, frames, unit, 5, starts=starts)
    if progress:
        print("potlearn: choosing the energy and stress weights by 5-fold cross-validation",
              file=sys.stderr, flush=True)
    search = search_weights(folds, len(descriptor.elements), unit)
    chosen = replace(unit, energy_weight=search.energy_weight, force_weight=1.0,
                     stress_weight=search.stress_weight)
    w2 = np.array([search.energy_weight, 1.0, search.stress_weight]) ** 2
    per_fold = [NormalEquations.weighted_sum(b.parts, w2) for b in folds]
    ne = NormalEquations.weighted_sum(per_fold, [1.0] * len(folds))
    S, K = len(descriptor.elements), descriptor.n_features
    model = LinearCommittee(
        descriptor, torch.zeros(chosen.n_members, S, K + 1, dtype=descriptor.dtype),
        normal_equations=ne, config=chosen,
    )
    # the posterior's scale from the same folds: held-out squared force errors against the
    # posterior variance of those components, each fold predicted by the others' posterior
    sse = var = 0.0
    alpha = model.solve_posterior(ne).lam  # the full data's ridge parameter, for every fold
    for k in range(len(per_fold)):
        post = model.solve_posterior(ne.without(per_fold[k]), lam=alpha)
        forces = folds[k].parts[1]
        sse += forces.sse(post.mean)
        var += float(np.sum(post.cov * forces.AtA))
    if var > 0 and sse > 0:
        model.config = replace(chosen, covariance_scale=sse / var)
    model.weight_search = search
    model.draw_members(np.random.default_rng(rng))
    return model
