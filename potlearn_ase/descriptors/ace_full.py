"""The atomic cluster expansion (ACE): a complete many-body basis, in torch.

For atom ``i`` of element ``a`` the atomic base is
``A[i, n, l, m] = sum_j R_nl^{a z_j}(r_ij) Y_lm(r_ij / |r_ij|)`` (radial functions per element
pair, :mod:`~potlearn_ase.descriptors.ace_radial`; real harmonics of
:func:`~potlearn_ase.descriptors.basis.real_harmonics`). The invariant features are

* correlation order 1: ``sum_j g_n(r_ij)`` kept per neighbour element (exact pair terms);
* orders ``2 .. nu_max``: rotation-invariant couplings of products of ``nu`` base functions,
  selected by the total-degree rule (:mod:`~potlearn_ase.descriptors.ace_coupling`) and
  evaluated by a recursive product tree (:mod:`~potlearn_ase.descriptors.ace_products`).

A shifted ZBL core repulsion (:class:`~potlearn_ase.descriptors.ace_radial.CoreRepulsion`)
is carried next to the features as a baseline that models add to their energy.

The atomic base is computed once per batch; :meth:`FullACEBatchOutput.vjp` walks the product
tree back to ``dE/dA`` for all members at once and contracts it with the pair derivatives of
the base (``dE/dA -> dE/dr_ij -> dE/dx, dE/dstrain``) over the padded neighbour layout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms

from potlearn_ase.descriptors.ace_coupling import select_basis, sparse_coupling
from potlearn_ase.descriptors.ace_full_config import FullACEConfig
from potlearn_ase.descriptors.ace_output import FullACEBatchOutput, FullACEOutput
from potlearn_ase.descriptors.ace_products import ProductTree
from potlearn_ase.descriptors.ace_radial import CoreRepulsion, default_core_radius, random_mixing
from potlearn_ase.descriptors.base import Descriptor, species_indices
from potlearn_ase.descriptors.basis import bessel_radial, real_harmonics
from potlearn_ase.descriptors.neighbours import (
    PaddedNeighbours,
    SkinNeighbourList,
    padded_neighbours,
)
from potlearn_ase.errors import ConfigError

__all__ = ["FullACEConfig", "FullACEDescriptor"]


class FullACEDescriptor(Descriptor):
    """Many-body ACE features of atoms of any number of elements.

    Parameters
    ----------
    elements : sequence of str
        Chemical symbols, in the order of species indices.
    config : FullACEConfig
        Hyperparameters.
    radial_mixing : mapping, optional
        ``{"A-B": array (l_max + 1, n_basis, n_basis)}`` radial mixing matrices of unlike
        pairs (as :meth:`todict` writes them); drawn from ``config.mixing_seed`` when absent.
    dtype, device
        Torch dtype and device of every tensor it makes.
    """

    family = "ace"

    def __init__(
        self,
        elements: Sequence[str],
        config: FullACEConfig | None = None,
        *,
        radial_mixing: Mapping[str, Any] | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ):
        self.elements = tuple(elements)
        if len(set(self.elements)) != len(self.elements) or not self.elements:
            raise ValueError(f"elements must be unique and non-empty, got {self.elements}")
        self.config = c = config or FullACEConfig()
        self.dtype, self.device = dtype, torch.device(device)
        self.n_species = S = len(self.elements)
        degrees = c.degrees()
        basis = select_basis(degrees, c.w_l, c.l_max)
        self.n_pair = int(math.floor(degrees[0] + 1e-9))
        ones = {x for nu, tuples in basis.items() if nu >= 2 for t in tuples for x in t}
        self.l_top = max((l for _, l in ones), default=-1)
        self.n_of_l = [
            max((n for n, l2 in ones if l2 == l), default=0) for l in range(self.l_top + 1)
        ]
        self.n_basis = max([self.n_pair, *self.n_of_l])
        self.base_offsets = np.cumsum([0] + [n * (2 * l + 1) for l, n in enumerate(self.n_of_l)])
        index = {
            (n, l, m): int(self.base_offsets[l]) + (n - 1) * (2 * l + 1) + m
            for l, nl in enumerate(self.n_of_l)
            for n in range(1, nl + 1)
            for m in range(2 * l + 1)
        }
        couplings = [sparse_coupling(basis[nu], index) for nu in sorted(basis) if nu >= 2]
        self.counts = {1: S * self.n_pair}
        for nu, (_, _, k) in zip(sorted(b for b in basis if b >= 2), couplings):
            if k == 0:
                raise ConfigError(
                    f"key 'max_degree': D_{nu} = {degrees[nu - 1]} with l_max = {c.l_max} "
                    f"leaves no invariant of correlation order {nu}"
                )
            self.counts[nu] = k
        self.tree = ProductTree(couplings, int(self.base_offsets[-1]), dtype=dtype, device=device)
        self.n_features = S * self.n_pair + self.tree.n_features
        self.radial_mixing = self._mixing(radial_mixing)
        self._mix = self._mixing_tensor()
        self.core = None
        if c.core == "zbl":
            self.core = CoreRepulsion(self.elements, self._core_radii(), dtype=dtype, device=device)

    # ------------------------------------------------------------------ set-up helpers
    def _pairs(self) -> list[tuple[str, str]]:
        return [(a, b) for a in self.elements for b in self.elements if a != b]

    def _mixing(self, given: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
        from ase.data import atomic_numbers

        shape = (self.l_top + 1, self.n_basis, self.n_basis)
        known = {f"{a}-{b}" for a, b in self._pairs()}
        out = {}
        for key in given or {}:
            if key not in known:
                raise ConfigError(f"key 'radial_mixing': unknown element pair {key!r}")
        for a, b in self._pairs():
            key = f"{a}-{b}"
            if given and key in given:
                M = np.asarray(given[key], dtype=np.float64)
                if M.shape != shape:
                    raise ConfigError(
                        f"key 'radial_mixing.{key}': shape {M.shape}, expected {shape}"
                    )
            else:
                z = atomic_numbers
                M = random_mixing(z[a], z[b], shape[0], self.n_basis, self.config.mixing_seed)
            out[key] = M
        return out

    def _mixing_tensor(self) -> torch.Tensor:
        """``(S, S, n_basis, N_R)``: radial channel ``(n, l)`` from the shared basis."""
        S = self.n_species
        cols = [(n, l) for l, nl in enumerate(self.n_of_l) for n in range(1, nl + 1)]
        mix = np.zeros((S, S, self.n_basis, len(cols)))
        for a, ea in enumerate(self.elements):
            for b, eb in enumerate(self.elements):
                for col, (n, l) in enumerate(cols):
                    if a == b:
                        mix[a, b, n - 1, col] = 1.0
                    else:
                        mix[a, b, :, col] = self.radial_mixing[f"{ea}-{eb}"][l, n - 1]
        return torch.as_tensor(mix, dtype=self.dtype, device=self.device)

    def _core_radii(self) -> np.ndarray:
        r = self.config.core_radius
        radii = np.array(
            [[default_core_radius(a, b) for b in self.elements] for a in self.elements]
        )
        if isinstance(r, (int, float)):
            radii[:] = float(r)
        elif isinstance(r, Mapping):
            pos = {e: k for k, e in enumerate(self.elements)}
            for key, v in r.items():
                a, _, b = str(key).partition("-")
                if a not in pos or b not in pos:
                    raise ConfigError(
                        f"key 'core_radius.{key}': unknown element pair (elements: "
                        f"{', '.join(self.elements)})"
                    )
                radii[pos[a], pos[b]] = radii[pos[b], pos[a]] = float(v)
        return radii

    # ------------------------------------------------------------------ persistence
    def todict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "elements": list(self.elements),
            **self.config.todict(),
            "radial_mixing": {k: v.tolist() for k, v in self.radial_mixing.items()},
        }

    @classmethod
    def fromdict(cls, d: dict[str, Any], **kwargs: Any) -> FullACEDescriptor:
        d = dict(d)
        d.pop("family", None)
        elements = d.pop("elements")
        mixing = d.pop("radial_mixing", None)
        unknown = set(d) - set(FullACEConfig.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown ACE descriptor key(s): {', '.join(sorted(unknown))}")
        return cls(elements, FullACEConfig(**d), radial_mixing=mixing, **kwargs)

    def to(self, device: torch.device | str) -> FullACEDescriptor:
        """A copy of this descriptor on another device."""
        return FullACEDescriptor(
            self.elements, self.config, radial_mixing=self.radial_mixing, dtype=self.dtype,
            device=device,
        )

    def neighbours(self, frames: Sequence[Atoms]) -> PaddedNeighbours:
        return padded_neighbours(frames, self.config.cutoff, dtype=self.dtype, device=self.device)

    def neighbour_list(self, skin: float) -> SkinNeighbourList:
        """A neighbour list for :meth:`compute` that MD reuses while atoms move < skin/2 (its
        layouts hold the pairs inside the cutoff only)."""
        return SkinNeighbourList(self.config.cutoff, skin, dtype=self.dtype, device=self.device)

    def _species(self, frames: Sequence[Atoms]) -> torch.Tensor:
        numbers = np.concatenate([a.numbers for a in frames]) if frames else np.zeros(0, int)
        return torch.as_tensor(species_indices(numbers, self.elements), device=self.device)

    # ------------------------------------------------------------------ the atomic base
    def _base(
        self, r: torch.Tensor, nb: PaddedNeighbours, species: torch.Tensor, derivative: bool
    ) -> dict[str, Any]:
        """Pair functions, the atomic base ``A^T`` and the pair (nu = 1) features."""
        mask = nb.mask
        safe = torch.zeros_like(r)
        safe[..., 0] = 0.5 * self.config.cutoff
        r = torch.where(mask[..., None], r, safe)
        d = torch.linalg.norm(r, dim=-1)
        u = r / d[..., None]
        fmask = mask.to(r.dtype)[..., None]
        g, dg = bessel_radial(d, self.config.cutoff, self.n_basis, derivative=derivative)
        g = g * fmask
        sj = species[nb.neighbour]
        S, n = self.n_species, nb.n_atoms
        onehot_j = torch.nn.functional.one_hot(sj, S).to(r.dtype) * fmask  # (n, k, S)
        pair = torch.einsum("iks,ikp->isp", onehot_j, g[..., : self.n_pair]).reshape(n, -1)
        out: dict[str, Any] = {"r": r, "d": d, "u": u, "pair": pair, "onehot_j": onehot_j,
                               "sj": sj}
        if derivative:
            assert dg is not None
            out["dg"] = dg[..., : self.n_pair] * fmask
        if self.l_top < 0:
            out["AT"] = r.new_zeros(0, n)
            return out
        Y, dY = real_harmonics(u, self.l_top, derivative=derivative)
        R = self._radial(g, species, sj, mask)
        blocks = []
        col = 0
        for l, nl in enumerate(self.n_of_l):
            Rl = R[..., col : col + nl]
            Yl = Y[..., l * l : (l + 1) ** 2]
            blocks.append((Rl.transpose(1, 2) @ Yl).reshape(n, -1))
            col += nl
        out["AT"] = torch.cat(blocks, 1).T.contiguous()
        if derivative:
            assert dY is not None and dg is not None
            dR = self._radial(dg * fmask, species, sj, mask)
            degrees = torch.tensor(
                [l for l in range(self.l_top + 1) for _ in range(2 * l + 1)], dtype=r.dtype,
                device=r.device,
            )
            out["Y"] = Y
            out["gradY"] = dY - degrees * u[..., :, None] * Y[..., None, :]  # tangential
            out["radial_pair"] = torch.stack([dR, R / d[..., None]], dim=2)  # (n, k, 2, N_R)
        return out

    def _radial(
        self, g: torch.Tensor, species: torch.Tensor, sj: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """``R (n, k, N_R)`` of each pair from the shared basis ``g (n, k, n_basis)``."""
        if self.n_species == 1:
            return g @ self._mix[0, 0]
        R = None
        for a in range(self.n_species):
            for b in range(self.n_species):
                sel = ((species[:, None] == a) & (sj == b) & mask).to(g.dtype)[..., None]
                part = (g * sel) @ self._mix[a, b]
                R = part if R is None else R + part
        assert R is not None
        return R

    # ------------------------------------------------------------------ autograd path
    def features(
        self,
        frames: Sequence[Atoms],
        positions: torch.Tensor | None = None,
        cells: torch.Tensor | None = None,
        *,
        neighbours: PaddedNeighbours | None = None,
    ) -> torch.Tensor:
        """Per-atom features ``(n_atoms, K)`` built with differentiable torch operations."""
        nb = neighbours if neighbours is not None else self.neighbours(frames)
        species = self._species(frames)
        base = self._base(nb.vectors(positions, cells), nb, species, derivative=False)
        BT, _ = self.tree.forward(base["AT"])
        return torch.cat([base["pair"], BT.T], 1)

    def core_energy(
        self,
        frames: Sequence[Atoms],
        positions: torch.Tensor | None = None,
        cells: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Core repulsion energy of each structure ``(n_structures,)``, differentiable."""
        nb = self.neighbours(frames)
        species = self._species(frames)
        r = nb.vectors(positions, cells)
        safe = torch.zeros_like(r)
        safe[..., 0] = 0.5 * self.config.cutoff
        d = torch.linalg.norm(torch.where(nb.mask[..., None], r, safe), dim=-1)
        e = r.new_zeros(len(frames))
        if self.core is None:
            return e
        phi, _ = self.core.pair(d, species[:, None].expand_as(nb.neighbour),
                                species[nb.neighbour], nb.mask)
        return e.index_add(0, nb.batch, 0.5 * phi.sum(1))

    # ------------------------------------------------------------------ closed-form path
    def compute_batch(
        self,
        frames: Sequence[Atoms],
        *,
        derivatives: bool = True,
        neighbours: PaddedNeighbours | None = None,
    ) -> FullACEBatchOutput:
        """Features of several structures, with what :meth:`FullACEBatchOutput.vjp` needs
        (``neighbours``: a layout of these frames made already, e.g. by a reused list)."""
        nb = neighbours if neighbours is not None else self.neighbours(frames)
        species = self._species(frames)
        with torch.no_grad():
            base = self._base(nb.vectors(), nb, species, derivative=derivatives)
            BT, AA = self.tree.forward(base["AT"])
            features = torch.cat([base["pair"], BT.T], 1)
            out = FullACEBatchOutput(
                descriptor=self,
                features=features,
                species=species,
                neighbours=nb,
                base=base,
                products=AA,
                volumes=[float(abs(a.cell.volume)) if a.pbc.all() else 0.0 for a in frames],
            )
            if self.core is not None:
                si = species[:, None].expand_as(nb.neighbour)
                phi, dphi = self.core.pair(base["d"], si, base["sj"], nb.mask)
                out.set_baseline(0.5 * phi.sum(1), 0.5 * dphi[..., None] * base["u"])
        return out

    def compute(
        self,
        atoms: Atoms,
        *,
        derivatives: bool = True,
        neighbours: PaddedNeighbours | None = None,
    ) -> FullACEOutput:
        return FullACEOutput(
            self.compute_batch([atoms], derivatives=derivatives, neighbours=neighbours)
        )
