"""Outputs of the many-body ACE descriptor: features and their shared derivatives.

:meth:`FullACEBatchOutput.vjp` turns ``dE/dB`` of ``M`` members into position and strain
derivatives: the product tree's reverse pass gives ``dE/dA`` (all members at once), and one
batched matrix product per angular degree contracts it with the radial factors of every pair,
``d(R Y)/dr = R' u Y + (R/d) grad_T Y``; the pair (``nu = 1``) features add ``g' u`` terms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from potlearn_ase.descriptors.base import DescriptorOutput
from potlearn_ase.descriptors.neighbours import PaddedNeighbours

if TYPE_CHECKING:  # pragma: no cover
    from potlearn_ase.descriptors.ace_full import FullACEDescriptor

__all__ = ["FullACEBatchOutput", "FullACEOutput"]

#: bound on the elements of the per-pair intermediates of one reverse pass
_PAIR_ELEMENTS = 1 << 24


class FullACEBatchOutput:
    """Features of a batch of structures, the shared pieces of their derivatives, and the
    core-repulsion baseline (``baseline_energies (n,)``, ``baseline_dx (n, 3)``,
    ``baseline_dstrain (n_structures, 3, 3)``, or None without a core)."""

    def __init__(
        self,
        *,
        descriptor: FullACEDescriptor,
        features: torch.Tensor,
        species: torch.Tensor,
        neighbours: PaddedNeighbours,
        base: dict[str, Any],
        products: dict[int, torch.Tensor],
        volumes: list[float],
    ):
        self.descriptor = descriptor
        self.features = features
        self.species = species
        self.neighbours = neighbours
        self.base = base
        self.products = products
        self.volumes = volumes
        self.baseline_energies: torch.Tensor | None = None
        self.baseline_dx: torch.Tensor | None = None
        self.baseline_dstrain: torch.Tensor | None = None

    @property
    def n_structures(self) -> int:
        return len(self.volumes)

    @property
    def batch(self) -> torch.Tensor:
        return self.neighbours.batch

    def set_baseline(self, energies: torch.Tensor, dEdr: torch.Tensor) -> None:
        """Store a pair baseline from per-atom energies and ``dE/dr_ij (n, k, 3)``."""
        dx, de = self._scatter(dEdr[..., None])
        self.baseline_energies = energies
        self.baseline_dx, self.baseline_dstrain = dx[0], de[0]

    def baseline_energy(self) -> torch.Tensor:
        """Baseline energy of each structure ``(n_structures,)`` (zeros without a core)."""
        e = self.features.new_zeros(self.n_structures)
        if self.baseline_energies is None:
            return e
        return e.index_add(0, self.batch, self.baseline_energies)

    # ------------------------------------------------------------------ derivatives
    def _scatter(self, dEdr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``dE/dr_ij (n, k, 3, M)`` -> ``dE/dx (M, n, 3)``, ``dE/dstrain (M, B, 3, 3)``."""
        nb = self.neighbours
        n, k, _, M = dEdr.shape
        dEdx = (-dEdr.sum(1)).index_add(0, nb.neighbour.reshape(-1), dEdr.reshape(n * k, 3, M))
        r = self.base["r"]
        per_atom = torch.einsum("ikc,ikdm->imcd", r, dEdr)
        if self.n_structures == 1:
            dEde = per_atom.sum(0)[:, None]
        else:
            dEde = per_atom.new_zeros(self.n_structures, M, 3, 3).index_add(0, nb.batch, per_atom)
            dEde = dEde.permute(1, 0, 2, 3)
        return dEdx.permute(2, 0, 1), dEde

    def _pair_dEdr(self, dA: torch.Tensor | None, G1: torch.Tensor | None) -> torch.Tensor:
        """``dE/dr_ij (n, k, 3, M)`` from ``dE/dA (n_base, n, M)`` and pair-feature
        cotangents ``G1 (M, n, S * n_pair)``."""
        if "dg" not in self.base:
            raise RuntimeError("computed without derivatives; call compute(..., derivatives=True)")
        desc, b = self.descriptor, self.base
        nb = self.neighbours
        n, k = nb.n_atoms, nb.max_nb
        M = (dA.shape[2] if dA is not None else G1.shape[0])  # type: ignore[union-attr]
        u = b["u"]
        radial = u.new_zeros(n, k, M)
        vec = u.new_zeros(n, k, 3, M)
        if dA is not None and desc.l_top >= 0:
            col = 0
            for l, nl in enumerate(desc.n_of_l):
                w = 2 * l + 1
                o = int(desc.base_offsets[l])
                H = dA[o : o + nl * w].view(nl, w, n, M).permute(2, 0, 1, 3).reshape(n, nl, w * M)
                rp = b["radial_pair"][..., col : col + nl].reshape(n, 2 * k, nl)
                T = torch.bmm(rp, H).view(n, k, 2, w, M)
                Yl = b["Y"][..., l * l : (l + 1) ** 2]
                radial = radial + torch.einsum("ikq,ikqm->ikm", Yl, T[:, :, 0])
                gl = b["gradY"][..., l * l : (l + 1) ** 2]
                vec = vec + torch.einsum("ikcq,ikqm->ikcm", gl, T[:, :, 1])
                col += nl
        if G1 is not None:
            S, P = desc.n_species, desc.n_pair
            Gs = G1.reshape(M, n, S, P).permute(1, 2, 3, 0)  # (n, S, P, M)
            Gn = Gs[torch.arange(n, device=u.device)[:, None], b["sj"]]  # (n, k, P, M)
            radial = radial + torch.einsum("ikp,ikpm->ikm", b["dg"], Gn)
        return u[..., None] * radial[:, :, None, :] + vec

    def vjp(self, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Derivatives of ``M`` member energies by positions and strain.

        Parameters
        ----------
        G : torch.Tensor
            ``(M, n_atoms, K)``: ``dE_m/dB_ik``; the result is differentiable in ``G``.

        Returns
        -------
        dE_dx : ``(M, n_atoms, 3)``
        dE_dstrain : ``(M, n_structures, 3, 3)``
        """
        desc = self.descriptor
        K1 = desc.n_species * desc.n_pair
        n, k = self.neighbours.n_atoms, self.neighbours.max_nb
        step = max(1, _PAIR_ELEMENTS // max(1, n * k * 2 * (2 * max(desc.l_top, 0) + 1)))
        dx_parts, de_parts = [], []
        for m0 in range(0, G.shape[0], step):
            Gm = G[m0 : m0 + step]
            dA = None
            if desc.tree.n_features:
                dA = desc.tree.backward(self.products, Gm[..., K1:].permute(2, 1, 0))
            dx, de = self._scatter(self._pair_dEdr(dA, Gm[..., :K1]))
            dx_parts.append(dx)
            de_parts.append(de)
        return torch.cat(dx_parts), torch.cat(de_parts)

    def linear_vjp(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`vjp` for element-wise linear weights ``W (M, n_species, K)``."""
        return self.vjp(W[:, self.species, :])

    def linear_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Design-matrix rows of a linear model for every structure of the batch.

        Returns
        -------
        energy_rows : ``(n_structures, n_species, K)``
        dE_dx : ``(n_atoms, 3, n_species, K)``
        dE_dstrain : ``(n_structures, 3, 3, n_species, K)``
        """
        desc = self.descriptor
        S, K = desc.n_species, desc.n_features
        K1 = S * desc.n_pair
        n = self.features.shape[0]
        dt = self.features.dtype
        onehot = torch.nn.functional.one_hot(self.species, S).to(dt)  # (n, S)
        per_atom = onehot[:, :, None] * self.features[:, None, :]
        energy_rows = per_atom.new_zeros(self.n_structures, S, K).index_add(0, self.batch, per_atom)
        dEdx = self.features.new_zeros(n, 3, S, K)
        dEde = self.features.new_zeros(self.n_structures, 3, 3, S, K)
        b = self.base
        # pair features: dB[i, (t, p)]/dr_ij = [s_j = t] g'_p(r_ij) u_ij, seeds (s, t, p)
        radial = torch.einsum("is,ikt,ikp->ikstp", onehot, b["onehot_j"], b["dg"])
        dEdr = b["u"][..., :, None] * radial.reshape(n, -1, S * K1)[:, :, None, :]
        dx, de = self._scatter(dEdr)
        dEdx[..., :K1] = dx.reshape(S, K1, n, 3).permute(2, 3, 0, 1)
        dEde[..., :K1] = de.reshape(S, K1, self.n_structures, 3, 3).permute(2, 3, 4, 0, 1)
        K2 = K - K1
        if K2:
            eye = torch.eye(K2, dtype=dt, device=self.features.device)
            step = 64
            for s in range(S):
                mask = onehot[:, s]
                for k0 in range(0, K2, step):
                    k1 = min(K2, k0 + step)
                    G = (eye[k0:k1, None, :] * mask[None, :, None]).permute(2, 1, 0)
                    dA = desc.tree.backward(self.products, G)
                    dx, de = self._scatter(self._pair_dEdr(dA, None))
                    dEdx[:, :, s, K1 + k0 : K1 + k1] = dx.permute(1, 2, 0)
                    dEde[:, :, :, s, K1 + k0 : K1 + k1] = de.permute(1, 2, 3, 0)
        return energy_rows, dEdx, dEde


class FullACEOutput(DescriptorOutput):
    """One structure's :class:`FullACEBatchOutput` under the single-structure interface."""

    def __init__(self, batch_output: FullACEBatchOutput):
        self.batch_output = batch_output
        self.features = batch_output.features
        self.species = batch_output.species
        self.n_species = batch_output.descriptor.n_species
        self.volume = batch_output.volumes[0]
        self.baseline_energies = batch_output.baseline_energies
        self.baseline_dx = batch_output.baseline_dx
        de = batch_output.baseline_dstrain
        self.baseline_dstrain = None if de is None else de[0]

    def vjp(self, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dx, de = self.batch_output.vjp(G)
        return dx, de[:, 0]

    def linear_vjp(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dx, de = self.batch_output.linear_vjp(W)
        return dx, de[:, 0]

    def linear_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e, dx, de = self.batch_output.linear_terms()
        return e[0], dx, de[0]
