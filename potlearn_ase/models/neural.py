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

import torch

from potlearn_ase.descriptors.base import Descriptor
from potlearn_ase.models.base import CommitteeModel

__all__ = ["NeuralCommittee"]

_ACTIVATIONS = {"silu": torch.nn.functional.silu, "tanh": torch.tanh}


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
        Seed of the initial weights; member ``m`` differs from the others by its draw.
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
    ):
        super().__init__(descriptor)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.seed = int(seed)
        self._n_members = int(n_members)
        S, K = len(descriptor.elements), descriptor.n_features
        dtype = getattr(descriptor, "dtype", torch.float64)
        device = getattr(descriptor, "device", torch.device("cpu"))
        gen = torch.Generator().manual_seed(self.seed)
        sizes = [K, *self.hidden, 1]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            w = torch.randn(n_members, S, a, b, generator=gen, dtype=dtype) / math.sqrt(a)
            self.weights.append(torch.nn.Parameter(w.to(device)))
            self.biases.append(torch.nn.Parameter(torch.zeros(n_members, S, b, dtype=dtype, device=device)))
        self.register_buffer("feature_mean", torch.zeros(K, dtype=dtype, device=device))
        self.register_buffer("feature_std", torch.ones(K, dtype=dtype, device=device))
        self.register_buffer("energy_shift", torch.zeros(S, dtype=dtype, device=device))
        self.register_buffer("energy_scale", torch.ones((), dtype=dtype, device=device))

    @property
    def n_members(self) -> int:
        return self._n_members

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "n_members": self._n_members,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "seed": self.seed,
        }

    @classmethod
    def from_hyperparameters(cls, descriptor: Descriptor, hp: dict[str, Any]) -> NeuralCommittee:
        return cls(
            descriptor,
            n_members=int(hp["n_members"]),
            hidden=hp["hidden"],
            activation=hp.get("activation", "silu"),
            seed=int(hp.get("seed", 0)),
        )

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
            out = out.index_copy(1, idx, e)
        return out

    def atomic_energies(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        x = features.unsqueeze(0).expand(self.n_members, -1, -1)
        return self.atomic_energies_per_member(x, species)
