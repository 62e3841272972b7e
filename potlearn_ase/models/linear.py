"""Linear potentials ``E = sum_i (b_{Z_i} + w_{Z_i} . B_i)`` with a Bayesian committee.

The weights are fitted by weighted ridge least squares on energies, forces and stress
(:mod:`potlearn_ase.training.least_squares`); committee members are draws from the Gaussian
posterior of the weights. All members share one descriptor pass and one set of descriptor
derivatives, so eight members cost little more than one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers

from potlearn_ase.data.validate import get_labels, require_labels
from potlearn_ase.descriptors.base import Descriptor
from potlearn_ase.models.base import CommitteeModel, threads_for
from potlearn_ase.training.least_squares import NormalEquations, Posterior, solve_posterior

__all__ = ["LinearFitConfig", "LinearCommittee", "fit_linear", "design_rows"]

_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


@dataclass(frozen=True)
class LinearFitConfig:
    """Weights and regularisation of a linear fit.

    Attributes
    ----------
    energy_weight : float
        Weight of a per-atom energy residual (1/(eV/atom)); squared in the loss.
    force_weight : float
        Weight of a force component residual (1/(eV/A)).
    stress_weight : float
        Weight of a virial-per-atom residual (1/(eV/atom)); 0 ignores stress.
    lam : float or "evidence"
        Ridge parameter relative to scaled features, or marginal-likelihood maximisation.
    sigma_floor : float
        Smallest noise standard deviation in force units (eV/A).
    n_members : int
        Committee size ``M``.
    batch_size : int
        Structures per descriptor batch while accumulating the normal equations.
    """

    energy_weight: float = 30.0
    force_weight: float = 1.0
    stress_weight: float = 1.0
    lam: float | str = "evidence"
    sigma_floor: float = 1e-3
    n_members: int = 8
    batch_size: int = 16


def design_rows(
    descriptor: Descriptor,
    frames: Sequence[Atoms],
    config: LinearFitConfig,
    *,
    first_index: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted-least-squares rows ``(A, y, w)`` of a few labelled structures.

    Parameter layout: for each element ``s``, ``[b_s, w_s (K)]`` (the ``pair_style snap``
    coefficient layout). Energy rows are per atom; force rows hold ``dE/dx`` against ``-F``;
    stress rows hold the virial per atom. ``first_index`` is the position of ``frames[0]``
    among the training structures, so that an error names the right one.
    """
    S, K = len(descriptor.elements), descriptor.n_features
    n_par = S * (K + 1)
    rows_A, rows_y, rows_w = [], [], []
    all_labels = [get_labels(atoms) for atoms in frames]
    for idx, (atoms, labels) in enumerate(zip(frames, all_labels)):
        where = f"training structure {first_index + idx}"
        stress = config.stress_weight > 0 and atoms.pbc.all() and "stress" in labels
        require_labels(
            atoms, energy=True, forces=config.force_weight > 0, stress=bool(stress), where=where
        )
    with threads_for(sum(len(a) for a in frames), getattr(descriptor, "device", "cpu")):
        outputs = _linear_terms(descriptor, frames)
    for atoms, labels, (e_row, dEdx, dEde, species, core) in zip(frames, all_labels, outputs):
        n = len(atoms)
        # a baseline outside the linear part (a core repulsion) is subtracted from the labels
        e_core, dx_core, de_core = core if core is not None else (0.0, 0.0, np.zeros((3, 3)))
        counts = np.bincount(species, minlength=S).astype(np.float64)
        A_e = np.zeros(n_par)
        for s in range(S):
            A_e[s * (K + 1)] = counts[s]
            A_e[s * (K + 1) + 1 : (s + 1) * (K + 1)] = e_row[s]
        rows_A.append(A_e[None] / n)
        rows_y.append(np.array([(labels["energy"] - e_core) / n]))
        rows_w.append(np.array([config.energy_weight**2]))
        if config.force_weight > 0:
            A_f = np.zeros((n * 3, n_par))
            for s in range(S):
                A_f[:, s * (K + 1) + 1 : (s + 1) * (K + 1)] = dEdx[:, :, s, :].reshape(n * 3, K)
            rows_A.append(A_f)
            rows_y.append(-(np.asarray(labels["forces"]) + dx_core).reshape(-1))
            rows_w.append(np.full(n * 3, config.force_weight**2))
        if config.stress_weight > 0 and "stress" in labels and atoms.pbc.all():
            V = abs(atoms.cell.volume)
            A_s = np.zeros((6, n_par))
            for v, (a, b) in enumerate(_VOIGT):
                sym = 0.5 * (dEde[a, b] + dEde[b, a])
                for s in range(S):
                    A_s[v, s * (K + 1) + 1 : (s + 1) * (K + 1)] = sym[s] / n
            rows_A.append(A_s)
            core_virial = np.array([0.5 * (de_core[a, b] + de_core[b, a]) for a, b in _VOIGT])
            rows_y.append((np.asarray(labels["stress"]).reshape(6) * V - core_virial) / n)
            rows_w.append(np.full(6, config.stress_weight**2))
    return np.concatenate(rows_A), np.concatenate(rows_y), np.concatenate(rows_w)


def _linear_terms(
    descriptor: Descriptor, frames: Sequence[Atoms]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any]]:
    """``linear_terms`` of each structure, batched when the descriptor can batch, and its
    baseline ``(energy, dE/dx, dE/dstrain)`` when the descriptor carries one (else None)."""
    compute_batch = getattr(descriptor, "compute_batch", None)
    result = []
    if compute_batch is not None and len(frames) > 1:
        out = compute_batch(frames)
        e_rows, dEdx, dEde = out.linear_terms()
        species = out.species.cpu().numpy()
        cores = _baseline_parts(out, [len(a) for a in frames])
        start = 0
        for b, atoms in enumerate(frames):
            n = len(atoms)
            result.append(
                (
                    e_rows[b].cpu().numpy(),
                    dEdx[start : start + n].cpu().numpy(),
                    dEde[b].cpu().numpy(),
                    species[start : start + n],
                    cores[b],
                )
            )
            start += n
        return result
    for atoms in frames:
        o = descriptor.compute(atoms)
        e_row, dx, de = o.linear_terms()
        core = _baseline_parts(getattr(o, "batch_output", o), [len(atoms)])[0]
        result.append(
            (e_row.cpu().numpy(), dx.cpu().numpy(), de.cpu().numpy(), o.species.cpu().numpy(),
             core)
        )
    return result


def _baseline_parts(out: Any, sizes: list[int]) -> list[Any]:
    """Per structure ``(energy, dE/dx, dE/dstrain)`` of a descriptor output's baseline."""
    e_atoms = getattr(out, "baseline_energies", None)
    if e_atoms is None:
        return [None] * len(sizes)
    e = e_atoms.cpu().numpy()
    dx = out.baseline_dx.cpu().numpy()
    de = out.baseline_dstrain.cpu().numpy().reshape(len(sizes), 3, 3)
    bounds = np.cumsum([0, *sizes])
    return [
        (float(e[a:b].sum()), dx[a:b], de[k]) for k, (a, b) in enumerate(zip(bounds, bounds[1:]))
    ]


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
        dtype = getattr(descriptor, "dtype", torch.float64)
        device = getattr(descriptor, "device", torch.device("cpu"))
        coef_t = torch.as_tensor(np.asarray(coef), dtype=dtype, device=device)
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
        """
        if self.normal_equations is None:
            raise RuntimeError("this model keeps no normal equations; refit it with fit_linear")
        ne = self.normal_equations
        for start in range(0, len(frames), self.config.batch_size):
            chunk = frames[start : start + self.config.batch_size]
            A, y, w = design_rows(self.descriptor, chunk, self.config)
            ne.add(A, y, w)
        self._solve(np.random.default_rng(rng))
        if self.active_set is not None:
            self.active_set = self.active_set.extended(self.descriptor, frames)
        return self

    def solve_posterior(self, ne: NormalEquations) -> Posterior:
        """The posterior this model's settings give for the normal equations ``ne``.

        The same regularisation rule (``config.lam``, the noise floor, unpenalised per-element
        constants) as the model's own fit; used to re-solve with data added or held out.
        """
        S, K = len(self.descriptor.elements), self.descriptor.n_features
        unreg = np.zeros(S * (K + 1), dtype=bool)
        unreg[:: K + 1] = True
        return solve_posterior(
            ne,
            lam=self.config.lam,
            sigma_floor=self.config.sigma_floor * _floor_weight(self.config),
            unregularised=unreg,
        )

    def _solve(self, rng: np.random.Generator) -> None:
        assert self.normal_equations is not None
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
    S, K = len(descriptor.elements), descriptor.n_features
    seen = {int(z) for a in frames for z in set(a.numbers.tolist())}
    absent = [el for el in descriptor.elements if atomic_numbers[el] not in seen]
    if absent and frames:
        logging.getLogger(__name__).warning(
            "no training structure holds %s: its parameters are unconstrained, so structures "
            "with it get an arbitrary energy and a huge sigma", ", ".join(absent),
        )
    ne = NormalEquations(S * (K + 1))
    starts = range(0, len(frames), config.batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="accumulating", unit="batch")
    for start in starts:
        chunk = list(frames[start : start + config.batch_size])
        A, y, w = design_rows(descriptor, chunk, config, first_index=start)
        ne.add(A, y, w)
    dtype = getattr(descriptor, "dtype", torch.float64)
    model = LinearCommittee(
        descriptor,
        torch.zeros(config.n_members, S, K + 1, dtype=dtype),
        normal_equations=ne,
        config=config,
    )
    model._solve(np.random.default_rng(rng))
    return model


def _floor_weight(config: LinearFitConfig) -> float:
    """The row weight that scales the noise floor: the forces', or the energies' in an
    energy-only fit (a zero floor would divide by zero on an exact fit)."""
    return config.force_weight if config.force_weight > 0 else config.energy_weight
