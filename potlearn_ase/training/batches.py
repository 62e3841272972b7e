"""Training data of neural committees: batches split into shards, losses, ordered sums.

Each optimiser step reads one batch of structures; a batch is cut into ``n_shards``
contiguous *shards*, and shard ``s`` belongs to rank ``s % n_ranks``. A rank computes the
descriptor outputs of its own shards only (once per training) and, every step, the loss
gradient of its own shards. The per-shard vectors are then added in shard order by
:func:`ordered_sum`, the same additions in the same order on every rank and in a serial run
with the same ``n_shards``: the result does not depend on how many ranks share the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms

from potlearn_ase.data.validate import get_labels
from potlearn_ase.descriptors.base import Descriptor
from potlearn_ase.models.neural import NeuralCommittee

__all__ = ["Shard", "normalise", "ordered_sum", "shard_loss", "split_shards"]


class Shard:
    """A fixed set of structures with its descriptor output and labels on the device.

    Parameters
    ----------
    descriptor : Descriptor
        A descriptor with ``compute_batch`` (ACE-like).
    frames : sequence of ase.Atoms
        At least one labelled structure.
    index : numpy.ndarray
        The structures' indices in the training (or validation) set.
    """

    def __init__(self, descriptor: Descriptor, frames: Sequence[Atoms], index: np.ndarray):
        self.index = np.asarray(index, dtype=np.int64)
        self.out = descriptor.compute_batch(frames)
        dev, dt = self.out.features.device, self.out.features.dtype
        labels = [get_labels(a) for a in frames]
        self.energy = torch.tensor([lab["energy"] for lab in labels], dtype=dt, device=dev)
        self.forces = torch.as_tensor(
            np.concatenate([lab["forces"] for lab in labels]), dtype=dt, device=dev
        )
        if getattr(self.out, "baseline_energies", None) is not None:  # e.g. a core repulsion:
            self.energy = self.energy - self.out.baseline_energy()  # the model learns the rest
            self.forces = self.forces + self.out.baseline_dx
        self.n_atoms = torch.tensor([len(a) for a in frames], dtype=dt, device=dev)
        S = len(descriptor.elements)
        onehot = torch.nn.functional.one_hot(self.out.species, S).to(dt)
        #: ``(n_structures, n_species)`` atoms of each element per structure
        self.counts = onehot.new_zeros(len(frames), S).index_add(0, self.out.batch, onehot)


def split_shards(index: np.ndarray, n_shards: int) -> list[np.ndarray]:
    """``n_shards`` contiguous, balanced parts of ``index`` (some empty when it is short)."""
    return np.array_split(np.asarray(index, dtype=np.int64), n_shards)


def shard_loss(
    model: NeuralCommittee,
    b: Shard,
    energy_weight: float,
    force_weight: float,
    weights: torch.Tensor | None,
    *,
    create_graph: bool = True,
) -> torch.Tensor:
    """Per-member sum over the shard's structures of the (weighted) loss, shape ``(M,)``.

    The loss of one structure is ``energy_weight * ((E - E_ref) / N)^2 + force_weight *
    |F - F_ref|^2 / (3 N)``; ``weights (M, n_structures)`` are bootstrap counts. Keep
    ``create_graph`` for a loss to differentiate by the weights (training).
    """
    out = b.out
    e_atoms, G = model.feature_gradients(out.features, out.species, create_graph=create_graph)
    M = e_atoms.shape[0]
    E = e_atoms.new_zeros(M, out.n_structures).index_add(1, out.batch, e_atoms)
    dx, _ = out.vjp(G)
    e_err = ((E - b.energy) / b.n_atoms) ** 2  # (M, B)
    f_err = ((-dx - b.forces) ** 2).sum(-1)  # (M, n)
    f_struct = f_err.new_zeros(M, out.n_structures).index_add(1, out.batch, f_err)
    f_struct = f_struct / (3.0 * b.n_atoms)
    per_struct = energy_weight * e_err + force_weight * f_struct
    if weights is None:
        return per_struct.sum(1)
    return (weights * per_struct).sum(1)


def ordered_sum(
    vectors: Sequence[torch.Tensor | None],
    owners: Sequence[int],
    length: int,
    comm: Any | None,
    like: torch.Tensor,
) -> torch.Tensor:
    """Sum of one vector per unit of work, added in unit order whichever rank made it.

    Parameters
    ----------
    vectors : sequence of tensor or None
        Per unit: this rank's vector of ``length`` entries, or None (another rank's unit, or
        a unit with nothing in it, which counts as zeros).
    owners : sequence of int
        The rank of each unit.
    length : int
        Entries per vector.
    comm : mpi4py communicator or None
        Without one (or with one rank) every unit is local.
    like : torch.Tensor
        Dtype and device of the result.

    Returns
    -------
    torch.Tensor
        ``0 + v_0 + v_1 + ...`` (unit order), identical on every rank.
    """
    total = like.new_zeros(length)
    if comm is None or comm.Get_size() == 1:
        for v in vectors:
            if v is not None:
                total = total + v
        return total
    rank, size = comm.Get_rank(), comm.Get_size()
    slots = [sum(1 for o in owners[:u] if o == owners[u]) for u in range(len(owners))]
    n_slots = max([s + 1 for s in slots] or [1])
    dtype = np.dtype(str(like.dtype).removeprefix("torch."))
    send = np.zeros((n_slots, length), dtype=dtype)
    for v, o, s in zip(vectors, owners, slots):
        if o == rank and v is not None:
            send[s] = v.detach().cpu().numpy()
    recv = np.empty((size, n_slots, length), dtype=dtype)
    comm.Allgather(send, recv)
    gathered = torch.from_numpy(recv).to(like.device)
    for o, s in zip(owners, slots):
        total = total + gathered[o, s]
    return total


def normalise(model: NeuralCommittee, parts: Sequence[Shard | None], comm: Any | None) -> None:
    """Feature standardisation and per-element energy shift from all training shards.

    ``parts`` lists every training shard in order (None for another rank's or an empty
    shard); under MPI the ranks' pieces are gathered so every rank (and a serial run with
    the same shards) computes the same statistics from the same tensors.
    """
    local = {
        u: (b.out.features, b.counts, b.energy, b.forces)
        for u, b in enumerate(parts)
        if b is not None
    }
    if comm is not None and comm.Get_size() > 1:
        cpu = {u: tuple(t.detach().cpu() for t in v) for u, v in local.items()}
        dev = model.feature_mean.device
        local = {}
        for piece in comm.allgather(cpu):
            local.update({u: tuple(t.to(dev) for t in v) for u, v in piece.items()})
    order = sorted(local)
    feats, counts, energies, forces = (torch.cat([local[u][k] for u in order]) for k in range(4))
    model.feature_mean.copy_(feats.mean(0))
    model.feature_std.copy_(feats.std(0).clamp(min=1e-6))
    sol = torch.linalg.lstsq(counts, energies[:, None]).solution[:, 0]
    model.energy_shift.copy_(sol)
    resid = (energies - counts @ sol) / counts.sum(1)
    scale = max(float(resid.std()) if len(resid) > 1 else 0.0, float(forces.std()) * 0.1, 1e-3)
    model.energy_scale.fill_(scale)
