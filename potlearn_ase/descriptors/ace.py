"""An ACE-like atomic cluster expansion in torch.

For each atom ``i`` the atomic base ``A[i, p, lm] = sum_j R_n(r_ij) Y_lm(r_ij / |r_ij|)`` is
summed over the neighbours ``j`` of each element, ``p = (element of j, n)`` being a radial
channel. The invariant features of atom ``i`` are

* body order 2: ``A[i, p, 00]`` (one per channel);
* body order 3: ``sum_m A[i, p, lm] A[i, q, lm]`` for ``p <= q`` and every ``l <= l_max``
  (radial-angular pair correlations, invariant under rotation for each ``l``);
* body order 4 (``body_order=4``): ``A[i, p, 00] A[i, q, 00] A[i, r, 00]`` for ``p <= q <= r``:
  the ``l = 0`` part of the four-body basis only, i.e. products of radial densities. It adds
  radial many-body terms (a linear model on it is no longer linear in the densities) but no
  angular four-body coupling; the angular information stays that of body order 3.

Two paths give derivatives, and tests hold them against each other and against finite
differences:

* autograd: :meth:`ACEDescriptor.features` builds the features from positions and cell with
  plain torch operations (use it for any model and for checks);
* closed form: :meth:`ACEBatchOutput.vjp` takes ``dE_m/dB`` for ``M`` committee members at once
  and returns every member's position and strain derivatives with batched matrix products over
  the padded neighbour layout; the descriptor's own derivatives are computed once and shared by
  all members.

The hyperparameters, :class:`ACEConfig`, are in :mod:`~potlearn_ase.descriptors.ace_config`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from ase import Atoms

from potlearn_ase.descriptors.ace_config import ACEConfig
from potlearn_ase.descriptors.base import (
    Descriptor,
    DescriptorBatchOutput,
    DescriptorOutput,
    species_indices,
)
from potlearn_ase.descriptors.basis import (
    bessel_radial,
    harmonic_degrees,
    n_harmonics,
    real_harmonics,
)
from potlearn_ase.descriptors.neighbours import (
    PaddedNeighbours,
    SkinNeighbourList,
    padded_neighbours,
)

__all__ = ["ACEConfig", "ACEDescriptor", "ACEBatchOutput", "ACEOutput"]


class ACEDescriptor(Descriptor):
    """ACE-like invariant features of atoms of any number of elements.

    Parameters
    ----------
    elements : sequence of str
        Chemical symbols, in the order of species indices.
    config : ACEConfig
        Hyperparameters.
    dtype, device
        Torch dtype and device of every tensor it makes (``"cuda"`` works when present).
    """

    family = "ace"

    def __init__(
        self,
        elements: Sequence[str],
        config: ACEConfig | None = None,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ):
        self.elements = tuple(elements)
        if len(set(self.elements)) != len(self.elements) or not self.elements:
            raise ValueError(f"elements must be unique and non-empty, got {self.elements}")
        self.config = config or ACEConfig()
        self.dtype = dtype
        self.device = torch.device(device)
        c = self.config
        self.n_species = len(self.elements)
        self.n_channels = self.n_species * c.n_radial
        P = self.n_channels
        self.n_lm = n_harmonics(c.l_max)
        self._lvec = torch.tensor(harmonic_degrees(c.l_max), dtype=dtype, device=self.device)
        iu = torch.triu_indices(P, P)
        self._pair0, self._pair1 = iu[0].to(self.device), iu[1].to(self.device)
        n_pairs = int(iu.shape[1])
        triples = [(p, q, r) for p in range(P) for q in range(p, P) for r in range(q, P)]
        t = torch.tensor(triples, dtype=torch.int64).reshape(-1, 3)
        self._triples = t.to(self.device) if c.body_order == 4 else t[:0].to(self.device)
        n_triples = int(self._triples.shape[0])
        self.n_features = P + (c.l_max + 1) * n_pairs + n_triples
        self._n_pairs = n_pairs

    # ------------------------------------------------------------------ helpers
    def todict(self) -> dict[str, Any]:
        return {"family": self.family, "elements": list(self.elements), **asdict(self.config)}

    @classmethod
    def fromdict(cls, d: dict[str, Any], **kwargs: Any) -> ACEDescriptor:
        d = dict(d)
        d.pop("family", None)
        elements = d.pop("elements")
        return cls(elements, ACEConfig(**d), **kwargs)

    def to(self, device: torch.device | str) -> ACEDescriptor:
        """A copy of this descriptor on another device."""
        return ACEDescriptor(self.elements, self.config, dtype=self.dtype, device=device)

    def neighbours(self, frames: Sequence[Atoms]) -> PaddedNeighbours:
        return padded_neighbours(frames, self.config.cutoff, dtype=self.dtype, device=self.device)

    def neighbour_list(self, skin: float) -> SkinNeighbourList:
        """A neighbour list for :meth:`compute` that MD reuses while atoms move < skin/2.

        (Its layouts hold the pairs inside the cutoff only; a wider layout would give the
        same result, as every radial function and its derivative vanish from the cutoff on.)
        """
        return SkinNeighbourList(self.config.cutoff, skin, dtype=self.dtype, device=self.device)

    def _species(self, frames: Sequence[Atoms]) -> torch.Tensor:
        numbers = np.concatenate([a.numbers for a in frames]) if frames else np.zeros(0, int)
        return torch.as_tensor(species_indices(numbers, self.elements), device=self.device)

    def _channel_radial(
        self, R: torch.Tensor, nb: PaddedNeighbours, species: torch.Tensor
    ) -> torch.Tensor:
        """Place ``R (n, k, N)`` into the channel of each neighbour's element: ``(n, k, P)``."""
        n, k, N = R.shape
        S = self.n_species
        if S == 1:
            return R * nb.mask[..., None]
        onehot = torch.nn.functional.one_hot(species[nb.neighbour], S).to(R.dtype)
        onehot = onehot * nb.mask[..., None]
        return (onehot[..., :, None] * R[..., None, :]).reshape(n, k, S * N)

    def _invariants(self, A: torch.Tensor) -> torch.Tensor:
        """Features ``(n, K)`` from the atomic base ``A (n, P, n_lm)``."""
        parts = [A[:, :, 0]]
        p0, p1 = self._pair0, self._pair1
        for l in range(self.config.l_max + 1):
            Al = A[:, :, l * l : (l + 1) ** 2]
            gram = Al @ Al.transpose(1, 2)
            parts.append(gram[:, p0, p1])
        if self._triples.shape[0]:
            A0 = A[:, :, 0]
            t = self._triples
            parts.append(A0[:, t[:, 0]] * A0[:, t[:, 1]] * A0[:, t[:, 2]])
        return torch.cat(parts, dim=1)

    def _masked_vectors(self, r: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # empty slots get a harmless vector so norms and divisions stay finite
        safe = torch.zeros_like(r)
        safe[..., 0] = 0.5 * self.config.cutoff
        return torch.where(mask[..., None], r, safe)

    # ------------------------------------------------------------------ autograd path
    def features(
        self,
        frames: Sequence[Atoms],
        positions: torch.Tensor | None = None,
        cells: torch.Tensor | None = None,
        *,
        neighbours: PaddedNeighbours | None = None,
    ) -> torch.Tensor:
        """Per-atom features ``(n_atoms, K)`` built with differentiable torch operations.

        Pass ``positions (n_atoms, 3)`` and ``cells (n_structures, 3, 3)`` that require grad to
        get forces and stress by autograd; by default they come from ``frames``.
        """
        nb = neighbours if neighbours is not None else self.neighbours(frames)
        species = self._species(frames)
        r = self._masked_vectors(nb.vectors(positions, cells), nb.mask)
        d = torch.linalg.norm(r, dim=-1)
        u = r / d[..., None]
        R, _ = bessel_radial(d, self.config.cutoff, self.config.n_radial)
        Y, _ = real_harmonics(u, self.config.l_max)
        Rc = self._channel_radial(R, nb, species)
        A = Rc.transpose(1, 2) @ Y
        return self._invariants(A)

    # ------------------------------------------------------------------ closed-form path
    def compute_batch(
        self,
        frames: Sequence[Atoms],
        *,
        derivatives: bool = True,
        neighbours: PaddedNeighbours | None = None,
    ) -> ACEBatchOutput:
        """Features of several structures, with what :meth:`ACEBatchOutput.vjp` needs.

        ``neighbours``: the frames' layout when the caller keeps one (built for at least the
        cutoff, e.g. by :meth:`neighbour_list`); by default a new one for the cutoff.
        """
        nb = neighbours if neighbours is not None else self.neighbours(frames)
        species = self._species(frames)
        with torch.no_grad():
            r = self._masked_vectors(nb.vectors(), nb.mask)
            d = torch.linalg.norm(r, dim=-1)
            u = r / d[..., None]
            R, dR = bessel_radial(d, self.config.cutoff, self.config.n_radial, derivative=True)
            Y, dY = real_harmonics(u, self.config.l_max, derivative=derivatives)
            Rc = self._channel_radial(R, nb, species)
            A = Rc.transpose(1, 2) @ Y
            B = self._invariants(A)
            out = ACEBatchOutput(
                descriptor=self,
                features=B,
                species=species,
                neighbours=nb,
                A=A,
                volumes=[float(abs(a.cell.volume)) if a.pbc.all() else 0.0 for a in frames],
            )
            if derivatives:
                assert dR is not None and dY is not None
                dRc = self._channel_radial(dR, nb, species)
                # shared by every member: dphi/dr = dR u Y + (R/d)(dY - l u Y), split into a
                # radial factor (n, 2k, P) and an angular factor (n*k, 3, 2L); rows interleaved
                # as (slot, factor) so that each pair's block is contiguous
                n, k, L = nb.n_atoms, nb.max_nb, self.n_lm
                ang = torch.empty(n, k, 3, 2, L, dtype=self.dtype, device=self.device)
                uY = ang[:, :, :, 0, :]
                torch.mul(u[..., :, None], Y[..., None, :], out=uY)
                torch.sub(dY, self._lvec * uY, out=ang[:, :, :, 1, :])
                out.r = r
                out.radial_pair = torch.stack([dRc, Rc / d[..., None]], dim=2).reshape(n, 2 * k, -1)
                out.angular_pair = ang.view(n * k, 3, 2 * L)
        return out

    def compute(
        self,
        atoms: Atoms,
        *,
        derivatives: bool = True,
        neighbours: PaddedNeighbours | None = None,
    ) -> ACEOutput:
        return ACEOutput(
            self.compute_batch([atoms], derivatives=derivatives, neighbours=neighbours)
        )


class ACEBatchOutput(DescriptorBatchOutput):
    """Features of a batch of structures and the shared pieces of their derivatives."""

    def __init__(
        self,
        *,
        descriptor: ACEDescriptor,
        features: torch.Tensor,
        species: torch.Tensor,
        neighbours: PaddedNeighbours,
        A: torch.Tensor,
        volumes: list[float],
    ):
        self.descriptor = descriptor
        self.features = features
        self.species = species
        self.neighbours = neighbours
        self.A = A
        self.volumes = volumes
        self.r: torch.Tensor | None = None
        self.radial_pair: torch.Tensor | None = None
        self.angular_pair: torch.Tensor | None = None

    @property
    def n_structures(self) -> int:
        return len(self.volumes)

    @property
    def batch(self) -> torch.Tensor:
        return self.neighbours.batch

    def _dE_dA(self, G: torch.Tensor) -> torch.Tensor:
        """Chain ``dE/dB (M, n, K)`` to ``dE/dA (M, n, P, n_lm)``; differentiable in ``G``."""
        desc = self.descriptor
        A = self.A
        M, n, _ = G.shape
        P = desc.n_channels
        n_pairs = desc._n_pairs
        p0, p1 = desc._pair0, desc._pair1
        blocks = []
        offset = P
        for l in range(desc.config.l_max + 1):
            Gl = G[:, :, offset : offset + n_pairs]
            offset += n_pairs
            Gfull = G.new_zeros(M, n, P, P)
            Gfull[:, :, p0, p1] = Gl
            Gfull = Gfull + Gfull.transpose(2, 3)
            Al = A[:, :, l * l : (l + 1) ** 2]
            blocks.append(Gfull @ Al)
        dA = torch.cat(blocks, dim=3)
        g0 = G[:, :, :P]
        t = desc._triples
        if t.shape[0]:
            G3 = G[:, :, offset:]
            A0 = A[:, :, 0]
            a0, a1, a2 = A0[:, t[:, 0]], A0[:, t[:, 1]], A0[:, t[:, 2]]
            extra = G.new_zeros(M, n, P)
            extra = extra.index_add(2, t[:, 0], G3 * (a1 * a2))
            extra = extra.index_add(2, t[:, 1], G3 * (a0 * a2))
            extra = extra.index_add(2, t[:, 2], G3 * (a0 * a1))
            g0 = g0 + extra
        zero_l = torch.zeros_like(dA[..., :1])
        dA = dA + torch.cat([g0[..., None], zero_l.expand(-1, -1, -1, dA.shape[3] - 1)], dim=3)
        return dA

    def vjp(self, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Derivatives of ``M`` member energies by positions and strain.

        Parameters
        ----------
        G : torch.Tensor
            ``(M, n_atoms, K)``: ``dE_m/dB_ik``. The result is differentiable with respect to
            ``G`` (used when training on forces).

        Returns
        -------
        dE_dx : ``(M, n_atoms, 3)``
        dE_dstrain : ``(M, n_structures, 3, 3)``
        """
        return self._pair_vjp(self._dE_dA(G))

    def _pair_vjp(self, dA: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Contract ``dE/dA (M, n, P, L)`` with the shared pair derivatives."""
        if self.radial_pair is None or self.angular_pair is None or self.r is None:
            raise RuntimeError("computed without derivatives; call compute(..., derivatives=True)")
        desc = self.descriptor
        nb = self.neighbours
        M, n = dA.shape[0], dA.shape[1]
        P, L = desc.n_channels, desc.n_lm
        k = nb.max_nb
        H = dA.permute(1, 2, 3, 0).reshape(n, P, L * M)
        T = (self.radial_pair @ H).view(n * k, 2 * L, M)  # per pair: (factor, lm) x member
        dEdr = torch.bmm(self.angular_pair, T).view(n, k, 3, M)  # empty slots give zero
        dEdx = (-dEdr.sum(1)).index_add(0, nb.neighbour.reshape(-1), dEdr.view(n * k, 3, M))
        if self.n_structures == 1:
            dEde = torch.einsum("ikc,ikdm->mcd", self.r, dEdr)[:, None]
        else:
            per_atom = torch.einsum("ikc,ikdm->imcd", self.r, dEdr)
            dEde = per_atom.new_zeros(self.n_structures, M, 3, 3).index_add(0, nb.batch, per_atom)
            dEde = dEde.permute(1, 0, 2, 3)
        return dEdx.permute(2, 0, 1), dEde

    def linear_vjp(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`vjp` for element-wise linear weights ``W (M, n_species, K)``.

        The quadratic part of ``dE/dA`` is built once per element and member instead of once
        per atom, which keeps large committees cheap.
        """
        desc = self.descriptor
        if desc._triples.shape[0] or desc.n_species > 1:
            return self.vjp(W[:, self.species, :])
        M = W.shape[0]
        P, n_pairs = desc.n_channels, desc._n_pairs
        p0, p1 = desc._pair0, desc._pair1
        blocks = []
        offset = P
        for l in range(desc.config.l_max + 1):
            Gfull = W.new_zeros(M, P, P)
            Gfull[:, p0, p1] = W[:, 0, offset : offset + n_pairs]
            offset += n_pairs
            Gfull = Gfull + Gfull.transpose(1, 2)
            Al = self.A[:, :, l * l : (l + 1) ** 2]  # (n, P, 2l+1)
            n = Al.shape[0]
            prod = Gfull.reshape(M * P, P) @ Al.transpose(0, 1).reshape(P, -1)
            blocks.append(prod.view(M, P, n, 2 * l + 1).transpose(1, 2))
        dA = torch.cat(blocks, dim=3)
        dA[..., 0] += W[:, 0, None, :P]
        return self._pair_vjp(dA)

    def linear_terms(self, *, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Design-matrix rows of a linear model for every structure of the batch.

        Returns
        -------
        energy_rows : ``(n_structures, n_species, K)``
        dE_dx : ``(n_atoms, 3, n_species, K)``
        dE_dstrain : ``(n_structures, 3, 3, n_species, K)``
        """
        desc = self.descriptor
        S, K = desc.n_species, desc.n_features
        n = self.features.shape[0]
        onehot = torch.nn.functional.one_hot(self.species, S).to(self.features.dtype)
        per_atom = onehot[:, :, None] * self.features[:, None, :]  # (n, S, K)
        energy_rows = per_atom.new_zeros(self.n_structures, S, K).index_add(0, self.batch, per_atom)
        dx_cols, de_cols = [], []
        eye = torch.eye(K, dtype=self.features.dtype, device=self.features.device)
        for s in range(S):
            atom_mask = (self.species == s).to(self.features.dtype)
            for k0 in range(0, K, chunk):
                k1 = min(K, k0 + chunk)
                G = eye[k0:k1, None, :] * atom_mask[None, :, None]  # (m, n, K)
                dx, de = self.vjp(G)
                dx_cols.append(dx)
                de_cols.append(de)
        dEdx = torch.cat(dx_cols, 0).reshape(S, K, n, 3).permute(2, 3, 0, 1)
        dEde = torch.cat(de_cols, 0).reshape(S, K, self.n_structures, 3, 3)
        return energy_rows, dEdx, dEde.permute(2, 3, 4, 0, 1)


class ACEOutput(DescriptorOutput):
    """One structure's :class:`ACEBatchOutput` under the single-structure interface (any batch
    output with ``vjp``, ``linear_vjp`` and ``linear_terms`` over a batch of one)."""

    def __init__(self, batch_output: ACEBatchOutput):
        self.batch_output = batch_output
        self.features = batch_output.features
        self.species = batch_output.species
        self.n_species = batch_output.descriptor.n_species
        self.volume = batch_output.volumes[0]

    def vjp(self, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dx, de = self.batch_output.vjp(G)
        return dx, de[:, 0]

    def linear_vjp(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dx, de = self.batch_output.linear_vjp(W)
        return dx, de[:, 0]

    def linear_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e, dx, de = self.batch_output.linear_terms()
        return e[0], dx, de[0]
