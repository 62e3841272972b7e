"""Outputs of the many-body ACE descriptor: features and their shared derivatives.

:meth:`FullACEBatchOutput.vjp` turns ``dE/dB`` of ``M`` members into position and strain
derivatives: the product tree's reverse pass gives ``dE/dA`` (all members at once), and one
batched matrix product per angular degree contracts it with the radial factors of every pair,
``d(R Y)/dr = R' u Y + (R/d) grad_T Y``; the pair (``nu = 1``) features add ``g' u`` terms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from potlearn_ase.descriptors.ace import ACEOutput
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
    def _scatter(
        self, dEdr: torch.Tensor, start: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``dE/dr_ij (n_c, k, 3, M)`` of the centres ``start .. start + n_c`` ->
        ``dE/dx (M, n, 3)``, ``dE/dstrain (M, B, 3, 3)``."""
        nb = self.neighbours
        n_c, k, _, M = dEdr.shape
        stop = start + n_c
        dEdx = dEdr.new_zeros(nb.n_atoms, 3, M)
        dEdx = dEdx.index_add(0, torch.arange(start, stop, device=dEdr.device), -dEdr.sum(1))
        dEdx = dEdx.index_add(0, nb.neighbour[start:stop].reshape(-1), dEdr.reshape(-1, 3, M))
        per_atom = torch.einsum("ikc,ikdm->imcd", self.base["r"][start:stop], dEdr)
        if self.n_structures == 1:
            dEde = per_atom.sum(0)[:, None]
        else:
            dEde = per_atom.new_zeros(self.n_structures, M, 3, 3)
            dEde = dEde.index_add(0, nb.batch[start:stop], per_atom).permute(1, 0, 2, 3)
        return dEdx.permute(2, 0, 1), dEde

    def _base_jacobian(self, start: int, stop: int) -> torch.Tensor:
        """``(n_c, 4 k, n_base)``: per pair, ``d(R_nl Y_lm)/dr`` as ``(R' Y, (R/d) grad_T Y)``
        (the first row multiplies ``u``), for the centres ``start .. stop``."""
        desc, b = self.descriptor, self.base
        rp = b["radial_pair"][start:stop]  # (n_c, k, 2, N_R)
        Y = b["Y"][start:stop]
        gY = b["gradY"][start:stop]
        blocks = []
        col = 0
        for l, nl in enumerate(desc.n_of_l):
            sl = slice(l * l, (l + 1) ** 2)
            q0 = rp[:, :, 0, col : col + nl, None] * Y[:, :, None, sl]  # (n_c, k, nl, w)
            q1 = rp[:, :, 1, None, col : col + nl, None] * gY[:, :, :, None, sl]  # (.., 3, nl, w)
            blocks.append(torch.cat([q0[:, :, None], q1], 2).flatten(3))
            col += nl
        Q = torch.cat(blocks, 3)  # (n_c, k, 4, N_A)
        return Q.reshape(Q.shape[0], -1, Q.shape[3])

    def _members_dEdr(self, H: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """``(n_c, k, 4, M)`` from ``dE/dA`` of the centres ``H (n_c, n_base, M)``: first the
        radial sums (one batched product per degree), then the angular factors."""
        desc, b = self.descriptor, self.base
        n_c, _, M = H.shape
        k = self.neighbours.max_nb
        out = H.new_zeros(n_c, k, 4, M)
        col = 0
        for l, nl in enumerate(desc.n_of_l):
            w, o = 2 * l + 1, int(desc.base_offsets[l])
            rp = b["radial_pair"][start:stop, :, :, col : col + nl].reshape(n_c, 2 * k, nl)
            T = torch.bmm(rp, H[:, o : o + nl * w].reshape(n_c, nl, w * M)).view(n_c, k, 2, w, M)
            sl = slice(l * l, (l + 1) ** 2)
            out[:, :, 0] += (T[:, :, 0] * b["Y"][start:stop, :, sl, None]).sum(2)
            out[:, :, 1:] += (T[:, :, 1, None] * b["gradY"][start:stop, :, :, sl, None]).sum(3)
            col += nl
        return out.view(n_c, 4 * k, M)

    def _jacobian_dEdr(self, start: int, stop: int) -> torch.Tensor:
        """``(n_c, 4 k, K)``: pair derivatives of every product feature of the centres.

        One sparse (CSR) product: the block-diagonal ``dB/dA`` of the centres, whose pattern
        is the same for every atom, times the stacked pair Jacobians of the base.
        """
        tree = self.descriptor.tree
        n_c, k = stop - start, self.neighbours.max_nb
        K, N_A = tree.n_features, tree.n_base
        J = tree.block_jacobian(tree.jacobian(self.products[1][:, start:stop]))
        Q = self._base_jacobian(start, stop).transpose(1, 2).reshape(n_c * N_A, 4 * k)
        return (J @ Q).view(n_c, K, 4 * k).transpose(1, 2)

    def _chunk(self, M: int) -> int:
        k = self.neighbours.max_nb
        n_base = self.descriptor.tree.n_base
        return max(1, _PAIR_ELEMENTS // max(1, 4 * k * (2 * n_base + 3 * M) + n_base * M))

    def _derivatives(
        self,
        dA: torch.Tensor | None,
        G1: torch.Tensor | None,
        *,
        jacobian: bool = False,
        masks: list[torch.Tensor] | None = None,
        H: torch.Tensor | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Position and strain derivatives, in chunks of centre atoms.

        From ``dE/dA (n_base, n, M)`` (or, with ``jacobian``, the Jacobian ``dB/dA`` of the
        product features: ``M = K``) and pair-feature cotangents ``G1 (M, n, S * n_pair)``.
        One ``(dE/dx (M, n, 3), dE/dstrain (M, B, 3, 3))`` per centre mask in ``masks``
        (default: one, all atoms).
        """
        if "dg" not in self.base:
            raise RuntimeError("computed without derivatives; call compute(..., derivatives=True)")
        desc, b = self.descriptor, self.base
        nb = self.neighbours
        n, k = nb.n_atoms, nb.max_nb
        if jacobian:
            M = desc.tree.n_features
        elif H is not None:
            M = H.shape[2]
        else:
            M = dA.shape[2] if dA is not None else G1.shape[0]  # type: ignore[union-attr]
        if H is None and dA is not None and desc.l_top >= 0:
            H = dA.permute(1, 0, 2).contiguous()  # (n, n_base, M)
        Gs = None
        if G1 is not None:
            S, P = desc.n_species, desc.n_pair
            Gs = G1.reshape(M, n, S, P).permute(1, 2, 3, 0)  # (n, S, P, M)
        masks = masks if masks is not None else [None]  # type: ignore[list-item]
        results = [
            (b["u"].new_zeros(M, n, 3), b["u"].new_zeros(M, self.n_structures, 3, 3))
            for _ in masks
        ]
        step = self._chunk(M)
        for a in range(0, n, step):
            c = min(n, a + step)
            u = b["u"][a:c]
            radial = u.new_zeros(c - a, k, M)
            vec = None
            T = None
            if jacobian:  # dB/dA is sparse: gather its pattern, add into the features
                T = self._jacobian_dEdr(a, c)
            elif H is not None:
                T = self._members_dEdr(H[a:c], a, c)
            if T is not None:
                T = T.view(c - a, k, 4, M)
                radial = radial + T[:, :, 0]
                vec = T[:, :, 1:]
            if Gs is not None:
                Gn = Gs[torch.arange(a, c, device=u.device)[:, None], b["sj"][a:c]]
                radial = radial + torch.einsum("ikp,ikpm->ikm", b["dg"][a:c], Gn)
            dEdr = u[..., None] * radial[:, :, None, :]
            dEdr = dEdr if vec is None else dEdr + vec
            for j, mask in enumerate(masks):
                part = dEdr if mask is None else dEdr * mask[a:c, None, None, None]
                dxc, dec = self._scatter(part, a)
                results[j] = (results[j][0] + dxc, results[j][1] + dec)
        return results

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
        dA = None
        if desc.tree.n_features:
            dA = desc.tree.backward(self.products, G[..., K1:].permute(2, 1, 0))
        return self._derivatives(dA, G[..., :K1])[0]

    def linear_vjp(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`vjp` for element-wise linear weights ``W (M, n_species, K)``.

        ``dE_m/dA_i = (dB_i/dA_i)^T W_m[s_i]``: the sparse Jacobian of every atom is built
        once and multiplies all members' weights in one sparse product.
        """
        desc = self.descriptor
        tree = desc.tree
        K1 = desc.n_species * desc.n_pair
        if not tree.n_features or desc.l_top < 0:
            return self.vjp(W[:, self.species, :])
        n, M = self.features.shape[0], W.shape[0]
        Jt = tree.block_jacobian(tree.jacobian(self.products[1]), transpose=True)
        Wn = W[:, :, K1:].permute(1, 2, 0)[self.species].reshape(-1, M)  # (n K2, M)
        H = (Jt @ Wn).view(n, tree.n_base, M)
        return self._derivatives(None, W[:, self.species, :K1], H=H)[0]

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
        dx, de = self._scatter(dEdr.reshape(n, -1, 3, S * K1))
        dEdx[..., :K1] = dx.reshape(S, K1, n, 3).permute(2, 3, 0, 1)
        dEde[..., :K1] = de.reshape(S, K1, self.n_structures, 3, 3).permute(2, 3, 4, 0, 1)
        K2 = K - K1
        if K2:  # every product feature of every element in one pass over the pairs
            masks = [onehot[:, s] for s in range(S)]
            for s, (dx, de) in enumerate(self._derivatives(None, None, jacobian=True,
                                                           masks=masks)):
                dEdx[:, :, s, K1:] = dx.permute(1, 2, 0)
                dEde[:, :, :, s, K1:] = de.permute(1, 2, 3, 0)
        return energy_rows, dEdx, dEde


class FullACEOutput(ACEOutput):
    """One structure's :class:`FullACEBatchOutput` under the single-structure interface (as
    :class:`~potlearn_ase.descriptors.ace.ACEOutput`, with the baseline of the structure)."""

    def __init__(self, batch_output: FullACEBatchOutput):
        super().__init__(batch_output)  # type: ignore[arg-type]
        self.baseline_energies = batch_output.baseline_energies
        self.baseline_dx = batch_output.baseline_dx
        de = batch_output.baseline_dstrain
        self.baseline_dstrain = None if de is None else de[0]
