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

import numpy as np
import torch
from ase import Atoms

from potlearn_ase.data.batch import resolve_device
from potlearn_ase.data.validate import get_labels, require_labels
from potlearn_ase.descriptors.base import Descriptor
from potlearn_ase.models.neural import NeuralCommittee, member_seed

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
        Epoch whose weights each member kept (its own early stopping).
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    member_val_loss: list[list[float]] = field(default_factory=list)
    best_epoch: int = -1
    best_epochs: list[int] = field(default_factory=list)


class _Batch:
    """A fixed batch of structures with its descriptor output and labels on the device."""

    def __init__(self, descriptor: Descriptor, frames: Sequence[Atoms], idx: np.ndarray):
        self.index = idx
        self.out = descriptor.compute_batch(frames)  # type: ignore[attr-defined]
        dev, dt = self.out.features.device, self.out.features.dtype
        labels = [get_labels(a) for a in frames]
        self.energy = torch.tensor([lab["energy"] for lab in labels], dtype=dt, device=dev)
        self.forces = torch.as_tensor(
            np.concatenate([lab["forces"] for lab in labels]), dtype=dt, device=dev
        )
        self.n_atoms = torch.tensor([len(a) for a in frames], dtype=dt, device=dev)


def _loss(
    model: NeuralCommittee, b: _Batch, cfg: NeuralTrainConfig, weights: torch.Tensor | None
) -> torch.Tensor:
    """Per-member loss ``(M,)``; ``weights (M, n_structures)`` are bootstrap counts."""
    out = b.out
    e_atoms, G = model.feature_gradients(out.features, out.species, create_graph=True)
    M = e_atoms.shape[0]
    E = e_atoms.new_zeros(M, out.n_structures).index_add(1, out.batch, e_atoms)
    dx, _ = out.vjp(G)
    e_err = ((E - b.energy) / b.n_atoms) ** 2  # (M, B)
    f_err = ((-dx - b.forces) ** 2).sum(-1)  # (M, n)
    f_struct = f_err.new_zeros(M, out.n_structures).index_add(1, out.batch, f_err)
    f_struct = f_struct / (3.0 * b.n_atoms)
    per_struct = cfg.energy_weight * e_err + cfg.force_weight * f_struct
    if weights is None:
        return per_struct.mean(1)
    return (weights * per_struct).sum(1) / weights.sum(1).clamp(min=1.0)


def _normalise(model: NeuralCommittee, batches: Sequence[_Batch]) -> None:
    """Feature standardisation and per-element energy shift from the training data."""
    feats = torch.cat([b.out.features for b in batches])
    model.feature_mean.copy_(feats.mean(0))
    model.feature_std.copy_(feats.std(0).clamp(min=1e-6))
    S = len(model.elements)
    counts = torch.cat(
        [
            torch.stack(
                [
                    feats.new_zeros(b.out.n_structures).index_add(
                        0, b.out.batch, (b.out.species == s).to(feats.dtype)
                    )
                    for s in range(S)
                ],
                dim=1,
            )
            for b in batches
        ]
    )
    energies = torch.cat([b.energy for b in batches])
    sol = torch.linalg.lstsq(counts, energies[:, None]).solution[:, 0]
    model.energy_shift.copy_(sol)
    resid = (energies - counts @ sol) / counts.sum(1)
    forces = torch.cat([b.forces for b in batches])
    scale = max(float(resid.std()) if len(resid) > 1 else 0.0, float(forces.std()) * 0.1, 1e-3)
    model.energy_scale.fill_(scale)


def train_neural(
    descriptor: Descriptor,
    train: Sequence[Atoms],
    val: Sequence[Atoms] | None = None,
    config: NeuralTrainConfig | None = None,
    *,
    init: NeuralCommittee | None = None,
    progress: bool = False,
    members: Sequence[int] | None = None,
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

    Returns
    -------
    model : NeuralCommittee
        The trained members, each at its best validation epoch.
    history : TrainingHistory
        Committee-mean losses per epoch and each member's kept epoch.
    """
    cfg = config or NeuralTrainConfig()
    device = resolve_device(cfg.device)
    if getattr(descriptor, "device", device) != device and hasattr(descriptor, "to"):
        descriptor = descriptor.to(device)  # type: ignore[attr-defined]
    for k, a in enumerate(train):
        require_labels(a, energy=True, forces=True, where=f"training structure {k}")
    if val:
        for k, a in enumerate(val):
            require_labels(a, energy=True, forces=True, where=f"validation structure {k}")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(train))
    bs = cfg.batch_size
    batches = [
        _Batch(descriptor, [train[i] for i in order[s : s + bs]], order[s : s + bs])
        for s in range(0, len(train), bs)
    ]
    val_batches = (
        [
            _Batch(descriptor, list(val[s : s + bs]), np.arange(s, min(len(val), s + bs)))
            for s in range(0, len(val), bs)
        ]
        if val
        else batches
    )
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
        _normalise(model, batches)
    hist = TrainingHistory()
    M = model.n_members
    hist.best_epochs = [-1] * M
    if M == 0:
        model.eval()
        return model, hist
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
        boot = torch.as_tensor(counts, dtype=batches[0].energy.dtype, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_decay)
    params = list(model.parameters())
    best_params = [p.detach().clone() for p in params]
    best = torch.full((M,), float("inf"), dtype=torch.float64)
    stale = torch.zeros(M, dtype=torch.int64)
    active = torch.ones(M, dtype=torch.bool)
    epochs = range(cfg.epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="training", unit="epoch")
    for epoch in epochs:
        model.train()
        total = 0.0
        for bi in rng.permutation(len(batches)):
            b = batches[bi]
            w = boot[:, torch.as_tensor(b.index, device=device)] if boot is not None else None
            opt.zero_grad()
            loss = _loss(model, b, cfg, w).sum()
            loss.backward()
            opt.step()
            total += float(loss.detach()) / M
        sched.step()
        with torch.no_grad():
            vl_t = sum(_loss(model, b, cfg, None).detach() for b in val_batches)
            vl = (vl_t / len(val_batches)).to("cpu", torch.float64)
        hist.train_loss.append(total / len(batches))
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
