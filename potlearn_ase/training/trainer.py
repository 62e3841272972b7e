"""Training neural committees: Adam, a learning-rate schedule, early stopping, warm start.

Descriptor outputs (features and their shared derivatives) are computed once per batch of
structures and reused every epoch; only the small per-element networks are trained. Members
differ by their initial weights and by a bootstrap resampling of the training structures.
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
from potlearn_ase.models.neural import NeuralCommittee

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
        Seeds the weights, the bootstrap and the batch order.
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
    """Loss per epoch (training and validation) and the epoch kept."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1


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
                    torch.zeros(b.out.n_structures, dtype=feats.dtype, device=feats.device).index_add(
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
) -> tuple[NeuralCommittee, TrainingHistory]:
    """Train a neural committee on labelled structures (energies and forces).

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
    """
    cfg = config or NeuralTrainConfig()
    device = resolve_device(cfg.device)
    if getattr(descriptor, "device", device) != device and hasattr(descriptor, "to"):
        descriptor = descriptor.to(device)  # type: ignore[attr-defined]
    for k, a in enumerate(train):
        require_labels(a, energy=True, forces=True, where=f"training structure {k}")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(train))
    batches = [
        _Batch(descriptor, [train[i] for i in order[s : s + cfg.batch_size]], order[s : s + cfg.batch_size])
        for s in range(0, len(train), cfg.batch_size)
    ]
    val_batches = (
        [
            _Batch(descriptor, list(val[s : s + cfg.batch_size]), np.arange(s, min(len(val), s + cfg.batch_size)))
            for s in range(0, len(val), cfg.batch_size)
        ]
        if val
        else batches
    )
    if init is not None:
        model = copy.deepcopy(init).to(device)
        model.descriptor = descriptor
    else:
        model = NeuralCommittee(
            descriptor,
            n_members=cfg.n_members,
            hidden=cfg.hidden,
            activation=cfg.activation,
            seed=cfg.seed,
        ).to(device)
        _normalise(model, batches)
    M = model.n_members
    boot = None
    if cfg.bootstrap and M > 1:
        counts = np.stack([np.bincount(rng.integers(0, len(train), len(train)), minlength=len(train)) for _ in range(M)])
        boot = torch.as_tensor(counts, dtype=batches[0].energy.dtype, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_decay)
    hist = TrainingHistory()
    best = float("inf")
    best_state = copy.deepcopy(model.state_dict())
    epochs = range(cfg.epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="training", unit="epoch")
    stale = 0
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
        vl = sum(float(_loss(model, b, cfg, None).detach().mean()) for b in val_batches) / len(val_batches)
        hist.train_loss.append(total / len(batches))
        hist.val_loss.append(vl)
        if vl < best * (1 - 1e-4):
            best, stale = vl, 0
            best_state = copy.deepcopy(model.state_dict())
            hist.best_epoch = epoch
        else:
            stale += 1
            if stale >= cfg.patience:
                log.info("early stop at epoch %d (best %d)", epoch, hist.best_epoch)
                break
    model.load_state_dict(best_state)
    model.eval()
    return model, hist
