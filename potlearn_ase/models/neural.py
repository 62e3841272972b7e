"""Neural committees: a per-element MLP on descriptor features, ``M`` members batched.

The weights of all members are stacked along a leading axis, so one descriptor pass and one
batched forward pass serve the whole committee. Forces come from the per-member feature
gradients ``dE_m/dB`` (one backward pass through the small MLPs) chained through the
descriptor's shared derivatives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from potlearn_ase.descriptors.base import Descriptor
from potlearn_ase.models.base import CommitteeModel

__all__ = ["NeuralCommittee", "member_seed"]

_ACTIVATIONS = {"silu": torch.nn.functional.silu, "tanh": torch.tanh}


def member_seed(seed: int, member: int, stream: int = 0) -> int:
    """A 63-bit seed that depends only on ``(seed, member, stream)``.

    Member ``m`` of a committee draws its initial weights (stream 0) and its bootstrap
    resample (stream 1) from generators seeded here, so it is the same network whether it is
    trained alone, beside other members, or on another MPI rank.
    """
    state = np.random.SeedSequence([int(seed), int(member), int(stream)]).generate_state(
        2, dtype=np.uint32
    )
    return (int(state[0]) << 31) ^ int(state[1])


class NeuralCommittee(CommitteeModel):
    """``M`` per-element MLPs ``E_i = shift_Z + scale * MLP_{m,Z}((B_i - mu) / sd)``.

    Parameters
    ----------
    descriptor : Descriptor
        Features of each atom (must support per-atom cotangents, e.g. ACE-like).
    n_members : int
        Committee size ``M``.
    hidden : sequence of int
        Hidden layer widths.
    activation : {"silu", "tanh"}
        Smooth activation (forces need a differentiable network).
    seed : int
        Seed of the initial weights; member ``m`` draws them from its own generator seeded by
        :func:`member_seed` ``(seed, m)``, so its weights do not depend on ``n_members``.
    members : sequence of int, optional
        Global indices of the members held here (default ``range(n_members)``); a part of a
        larger committee (e.g. the members one MPI rank trains) holds exactly the weights those
        members have in the whole committee. :meth:`join` puts the parts back together.
    residual : bool
        Each member adds its MLP to a fixed linear potential of its own, the buffer
        ``linear_coef (M, n_species, 1 + K)`` (per-element constant, then weights of the raw
        features), e.g. the members of a linear committee: the nonlinear ACE of
        :func:`potlearn_ase.training.residual.train_residual`.
    """

    kind = "neural"

    def __init__(
        self,
        descriptor: Descriptor,
        *,
        n_members: int = 8,
        hidden: Sequence[int] = (32, 32),
        activation: str = "silu",
        seed: int = 0,
        members: Sequence[int] | None = None,
        residual: bool = False,
    ):
        super().__init__(descriptor)
        self.residual = bool(residual)
        if members is None:
            members = range(int(n_members))
        self.members = tuple(int(m) for m in members)
        if len(set(self.members)) != len(self.members) or any(m < 0 for m in self.members):
            raise ValueError(f"members must be distinct non-negative indices, got {self.members}")
        n_members = len(self.members)
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.seed = int(seed)
        self._n_members = int(n_members)
        S, K = len(descriptor.elements), descriptor.n_features
        dtype, device = descriptor.dtype, descriptor.device
        sizes = [K, *self.hidden, 1]
        per_member: list[list[torch.Tensor]] = []
        for m in self.members:
            gen = torch.Generator().manual_seed(member_seed(self.seed, m, 0))
            per_member.append(
                [
                    # drawn in float64 and cast: the same seed gives the same network in
                    # any precision
                    (torch.randn(S, a, b, generator=gen, dtype=torch.float64) / math.sqrt(a)).to(
                        dtype
                    )
                    for a, b in zip(sizes[:-1], sizes[1:])
                ]
            )
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            if per_member:
                w = torch.stack([layers[k] for layers in per_member])
            else:
                w = torch.zeros(0, S, a, b, dtype=dtype)
            self.weights.append(torch.nn.Parameter(w.to(device)))
            bias = torch.zeros(n_members, S, b, dtype=dtype, device=device)
            self.biases.append(torch.nn.Parameter(bias))
        self.register_buffer("feature_mean", torch.zeros(K, dtype=dtype, device=device))
        self.register_buffer("feature_std", torch.ones(K, dtype=dtype, device=device))
        self.register_buffer("energy_shift", torch.zeros(S, dtype=dtype, device=device))
        self.register_buffer("energy_scale", torch.ones((), dtype=dtype, device=device))
        if self.residual:
            self.register_buffer(
                "linear_coef", torch.zeros(n_members, S, K + 1, dtype=dtype, device=device)
            )

    @property
    def n_members(self) -> int:
        return self._n_members

    def hyperparameters(self) -> dict[str, Any]:
        hp: dict[str, Any] = {
            "n_members": self._n_members,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "seed": self.seed,
        }
        if self.members != tuple(range(self._n_members)):
            hp["members"] = list(self.members)
        if self.residual:
            hp["residual"] = True
        return hp

    @classmethod
    def from_hyperparameters(cls, descriptor: Descriptor, hp: dict[str, Any]) -> NeuralCommittee:
        return cls(
            descriptor,
            n_members=int(hp["n_members"]),
            hidden=hp["hidden"],
            activation=hp.get("activation", "silu"),
            seed=int(hp.get("seed", 0)),
            members=hp.get("members"),
            residual=bool(hp.get("residual", False)),
        )

    def subset(self, members: Sequence[int]) -> NeuralCommittee:
        """A committee of some of these members (global indices), weights and scaling copied."""
        pos = {m: k for k, m in enumerate(self.members)}
        missing = [m for m in members if m not in pos]
        if missing:
            raise ValueError(f"members {missing} are not in this committee {self.members}")
        new = NeuralCommittee(
            self.descriptor,
            hidden=self.hidden,
            activation=self.activation,
            seed=self.seed,
            members=members,
            residual=self.residual,
        ).to(self.feature_mean.device)
        idx = torch.tensor([pos[m] for m in members], dtype=torch.int64)
        with torch.no_grad():
            for dst, src in zip([*new.weights, *new.biases, *new._per_member_buffers()],
                                [*self.weights, *self.biases, *self._per_member_buffers()]):
                dst.copy_(src[idx.to(src.device)])
            for name in ("feature_mean", "feature_std", "energy_shift", "energy_scale"):
                getattr(new, name).copy_(getattr(self, name))
        return new

    @classmethod
    def join(cls, parts: Sequence[NeuralCommittee]) -> NeuralCommittee:
        """One committee from parts holding disjoint members (sorted by member index).

        The parts must share the descriptor, the network shape and the normalisation (as
        parts trained on the same data do).

        Raises
        ------
        ValueError
            Parts that overlap or differ in shape or normalisation.
        """
        parts = [p for p in parts if p.n_members > 0]
        if not parts:
            raise ValueError("no committee members to join")
        first = parts[0]
        for p in parts[1:]:
            if (p.hidden, p.activation, p.seed, p.residual) != (
                first.hidden, first.activation, first.seed, first.residual
            ):
                raise ValueError("parts differ in hidden layers, activation, seed or residual")
            for name in ("feature_mean", "feature_std", "energy_shift", "energy_scale"):
                a, b = getattr(first, name), getattr(p, name).to(getattr(first, name).device)
                if not torch.allclose(a, b, rtol=1e-12, atol=0.0):
                    raise ValueError(f"parts differ in normalisation buffer {name!r}")
        src = [(m, p, k) for p in parts for k, m in enumerate(p.members)]
        src.sort(key=lambda t: t[0])
        members = [m for m, _, _ in src]
        if len(set(members)) != len(members):
            raise ValueError(f"parts overlap in members {members}")
        new = cls(
            first.descriptor,
            hidden=first.hidden,
            activation=first.activation,
            seed=first.seed,
            members=members,
            residual=first.residual,
        ).to(first.feature_mean.device)
        with torch.no_grad():
            for li in range(len(new.weights)):
                for attr in ("weights", "biases"):
                    dst = getattr(new, attr)[li]
                    dst.copy_(
                        torch.stack([getattr(p, attr)[li][k].to(dst.device) for _, p, k in src])
                    )
            for bi, dst in enumerate(new._per_member_buffers()):
                dst.copy_(torch.stack(
                    [p._per_member_buffers()[bi][k].to(dst.device) for _, p, k in src]
                ))
            for name in ("feature_mean", "feature_std", "energy_shift", "energy_scale"):
                getattr(new, name).copy_(getattr(first, name))
        return new

    def _per_member_buffers(self) -> list[torch.Tensor]:
        return [self.linear_coef] if self.residual else []

    def _mlp(self, x: torch.Tensor, s: int) -> torch.Tensor:
        """``x (M, n_s, K)`` normalised features of element ``s`` -> ``(M, n_s)``."""
        act = _ACTIVATIONS[self.activation]
        h = x
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b[:, s, None, :], h, w[:, s])
            if k < last:
                h = act(h)
        return h[..., 0]

    def atomic_energies_per_member(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        M, n, _ = x.shape
        xn = (x - self.feature_mean) / self.feature_std
        out = x.new_zeros(M, n)
        for s in range(len(self.descriptor.elements)):
            idx = torch.nonzero(species == s).reshape(-1)
            if idx.numel() == 0:
                continue
            e = self._mlp(xn[:, idx], s) * self.energy_scale + self.energy_shift[s]
            if self.residual:
                c = self.linear_coef[:, s]
                e = e + (x[:, idx] * c[:, None, 1:]).sum(-1) + c[:, None, 0]
            out = out.index_copy(1, idx, e)
        return out

    def atomic_energies(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        x = features.unsqueeze(0).expand(self.n_members, -1, -1)
        return self.atomic_energies_per_member(x, species)
