"""Training neural committees: Adam, a learning-rate schedule, early stopping, warm start.

Descriptor outputs (features and their shared derivatives) are computed once per batch of
structures and reused every epoch; only the small per-element networks are trained. Members
differ by their initial weights and by a bootstrap resampling of the training structures, both
drawn from generators seeded by ``(seed, member index)``, and each member stops early on its
own: a member's result does not depend on which other members train beside it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from ase import Atoms

from potlearn_ase.data.batch import resolve_device
from potlearn_ase.data.validate import require_labels
from potlearn_ase.descriptors.base import Descriptor
from potlearn_ase.errors import ConfigError
from potlearn_ase.models.neural import NeuralCommittee, member_seed
from potlearn_ase.training.batches import Shard, normalise, ordered_sum, shard_loss, split_shards

__all__ = ["NeuralTrainConfig", "TrainingHistory", "train_neural"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NeuralTrainConfig:
    """Settings of :func:`train_neural`.

    Attributes
    ----------
    n_members, hidden, activation
        Committee size and network shape (ignored when warm-starting a given model).
    epochs : int
        Maximum number of epochs.
    lr : float
        Initial Adam learning rate; it decays by ``lr_decay`` every ``lr_step`` epochs.
    batch_size : int
        Structures per batch.
    energy_weight, force_weight : float
        Weights of the per-atom energy (eV/atom) and force component (eV/A) squared errors.
    patience : int
        Epochs without improvement of the validation loss before stopping.
    bootstrap : bool
        Each member sees its own bootstrap resample of the training structures.
    device : str
        ``"auto"`` (cuda when present), ``"cpu"`` or ``"cuda"``.
    seed : int
        Seeds the batch order, and with the member index each member's weights and bootstrap.
    """

    n_members: int = 8
    hidden: tuple[int, ...] = (32, 32)
    activation: str = "silu"
    epochs: int = 300
    lr: float = 3e-3
    lr_decay: float = 0.5
    lr_step: int = 100
    batch_size: int = 8
    energy_weight: float = 1.0
    force_weight: float = 10.0
    patience: int = 50
    bootstrap: bool = True
    device: str = "auto"
    seed: int = 0


@dataclass
class TrainingHistory:
    """Losses per epoch and the epochs kept.

    Attributes
    ----------
    train_loss, val_loss : list of float
        Committee-mean training and validation loss per epoch.
    member_val_loss : list of list of float
        Validation loss of each member per epoch (``[epoch][member]``).
    best_epoch : int
        Epoch of the lowest committee-mean validation loss.
    best_epochs : list of int
        Epoch whose weights each member kept (its own early stopping); -1 for a warm-started
        member whose starting weights no epoch improved on.
    start_val_loss : list of float
        A warm start's validation loss of each member before the first epoch (else empty).
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    member_val_loss: list[list[float]] = field(default_factory=list)
    best_epoch: int = -1
    best_epochs: list[int] = field(default_factory=list)
    start_val_loss: list[float] = field(default_factory=list)


def train_neural(
    descriptor: Descriptor,
    train: Sequence[Atoms],
    val: Sequence[Atoms] | None = None,
    config: NeuralTrainConfig | None = None,
    *,
    init: NeuralCommittee | None = None,
    progress: bool = False,
    members: Sequence[int] | None = None,
    shards: int = 1,
    comm: Any | None = None,
) -> tuple[NeuralCommittee, TrainingHistory]:
    """Train a neural committee on labelled structures (energies and forces).

    Every member ``m`` has its own initial weights and bootstrap resample (both seeded by
    ``(config.seed, m)`` only) and its own early stopping (it keeps the weights of its best
    validation epoch and stops improving after ``patience`` stale epochs); only the order of
    the batches is shared. A member therefore ends with the same weights whether it is trained
    alone, in a committee of any size, or on another MPI rank
    (:func:`potlearn_ase.training.mpi.train_neural_mpi`).

    Parameters
    ----------
    descriptor : Descriptor
        A descriptor with ``compute_batch`` (ACE-like).
    train, val : sequences of ase.Atoms
        Labelled structures; the validation set drives early stopping (the training set when
        none is given).
    config : NeuralTrainConfig
        Optimiser and network settings.
    init : NeuralCommittee, optional
        Warm start: continue from these weights and normalisation (a short fine-tune).
    progress : bool
        Show a progress bar.
    members : sequence of int, optional
        Train only these members (global indices) of the ``config.n_members`` committee (or of
        ``init``); default all.
    shards : int
        Each batch is cut into this many contiguous shards whose loss gradients are computed
        apart and added in shard order (see :mod:`potlearn_ase.training.batches`). The result
        depends on ``shards`` (to rounding), never on the number of ranks sharing them.
    comm : mpi4py communicator, optional
        Data parallelism: shard ``s`` is computed on rank ``s % size`` (descriptor outputs
        included) and every rank ends with the same committee. Default: every shard here.

    Returns
    -------
    model : NeuralCommittee
        The trained members, each at its best validation epoch.
    history : TrainingHistory
        Committee-mean losses per epoch and each member's kept epoch.

    Raises
    ------
    ConfigError
        ``shards`` below 1.
    """
    cfg = config or NeuralTrainConfig()
    if shards < 1:
        raise ConfigError(f"shards must be at least 1, got {shards}")
    device = resolve_device(cfg.device)
    if descriptor.device != device:
        descriptor = descriptor.to(device)
    for k, a in enumerate(train):
        require_labels(a, energy=True, forces=True, where=f"training structure {k}")
    if val:
        for k, a in enumerate(val):
            require_labels(a, energy=True, forces=True, where=f"validation structure {k}")
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    owners = [s % size for s in range(shards)]

    def build(frames: Sequence[Atoms], index: list[np.ndarray]) -> list[list[Shard | None]]:
        return [
            [
                Shard(descriptor, [frames[i] for i in part], part)
                if owners[s] == rank and len(part)
                else None
                for s, part in enumerate(split_shards(idx, shards))
            ]
            for idx in index
        ]

    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(train))
    bs = cfg.batch_size
    batch_index = [order[s : s + bs] for s in range(0, len(train), bs)]
    batches = build(train, batch_index)
    if val:
        val_batches = build(
            val, [np.arange(s, min(len(val), s + bs)) for s in range(0, len(val), bs)]
        )
    else:
        val_batches = batches
    n_val = len(val) if val else len(train)
    total = cfg.n_members if init is None else init.n_members
    if init is not None:
        model = copy.deepcopy(init).to(device)
        model.descriptor = descriptor
        if members is not None:
            model = model.subset(members)
    else:
        model = NeuralCommittee(
            descriptor,
            n_members=cfg.n_members,
            hidden=cfg.hidden,
            activation=cfg.activation,
            seed=cfg.seed,
            members=members,
        ).to(device)
        normalise(model, [b for row in batches for b in row], comm)
    hist = TrainingHistory()
    M = model.n_members
    hist.best_epochs = [-1] * M
    if M == 0:
        model.eval()
        return model, hist
    params = list(model.parameters())
    like = params[0].detach()
    boot = None
    if cfg.bootstrap and total > 1:
        n = len(train)
        counts = np.stack(
            [
                np.bincount(
                    np.random.default_rng(member_seed(cfg.seed, m, 1)).integers(0, n, n),
                    minlength=n,
                )
                for m in model.members
            ]
        )
        boot = torch.as_tensor(counts, dtype=like.dtype, device=device)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_decay)
    sizes = [p.numel() for p in params]
    n_flat = sum(sizes)
    ew, fw = cfg.energy_weight, cfg.force_weight
    best_params = [p.detach().clone() for p in params]

    def val_loss() -> torch.Tensor:
        with torch.no_grad():
            vecs = [
                None if b is None else shard_loss(model, b, ew, fw, None, create_graph=False)
                for row in val_batches
                for b in row
            ]
            vl_t = ordered_sum(vecs, owners * len(val_batches), M, comm, like) / n_val
        return vl_t.to("cpu", torch.float64)

    # a warm start keeps its starting weights unless training beats them (best_epochs -1)
    best = val_loss() if init is not None else torch.full((M,), float("inf"), dtype=torch.float64)
    if init is not None:
        hist.start_val_loss = best.tolist()
    stale = torch.zeros(M, dtype=torch.int64)
    active = torch.ones(M, dtype=torch.bool)
    epochs = range(cfg.epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="training", unit="epoch")
    for epoch in epochs:
        model.train()
        train_loss = 0.0
        for bi in rng.permutation(len(batches)):
            idx = torch.as_tensor(batch_index[bi], device=device)
            # the weight of the whole batch normalises every shard's share of the loss
            W = boot[:, idx].sum(1).clamp(min=1.0) if boot is not None else float(len(idx))
            vecs: list[torch.Tensor | None] = []
            for b in batches[bi]:
                if b is None:
                    vecs.append(None)
                    continue
                w = boot[:, torch.as_tensor(b.index, device=device)] if boot is not None else None
                loss = (shard_loss(model, b, ew, fw, w) / W).sum()
                grads = torch.autograd.grad(loss, params)
                vecs.append(torch.cat([*(g.reshape(-1) for g in grads), loss.detach()[None]]))
            flat = ordered_sum(vecs, owners, n_flat + 1, comm, like)
            for p, g in zip(params, torch.split(flat[:-1], sizes)):
                p.grad = g.view_as(p)
            opt.step()
            train_loss += float(flat[-1]) / M
        sched.step()
        vl = val_loss()
        hist.train_loss.append(train_loss / len(batches))
        hist.val_loss.append(float(vl.mean()))
        hist.member_val_loss.append(vl.tolist())
        improved = active & (vl < best * (1 - 1e-4))
        stale = torch.where(improved, torch.zeros_like(stale), stale + active.to(torch.int64))
        if bool(improved.any()):
            best = torch.where(improved, vl, best)
            sel = improved.to(params[0].device)
            with torch.no_grad():
                for p, bp in zip(params, best_params):
                    bp[sel] = p.detach()[sel]
            for m in torch.nonzero(improved).reshape(-1).tolist():
                hist.best_epochs[m] = epoch
        active &= stale < cfg.patience
        if not bool(active.any()):
            log.info("early stop at epoch %d (members kept epochs %s)", epoch, hist.best_epochs)
            break
    with torch.no_grad():
        for p, bp in zip(params, best_params):
            p.copy_(bp)
    hist.best_epoch = int(np.argmin(hist.val_loss)) if hist.val_loss else -1
    model.eval()
    return model, hist
