"""Nonlinear ACE: a neural correction on top of a linear ACE committee.

Member ``m`` of the result is ``E_i = linear_m(B_i) + MLP_m(B_i)``: the linear part is member
``m`` of a fitted :class:`~potlearn_ase.models.linear.LinearCommittee` (a draw from its
posterior, kept fixed), the MLP starts at zero (its last layer is zeroed) and learns what the
linear basis leaves, on forces and energies, with each member's own bootstrap resample and
early stopping on validation structures. Training therefore starts at the linear fit's
accuracy, and a member keeps its starting (linear) weights unless an epoch beats them on the
validation structures, so the result is never worse there than the linear committee.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from ase import Atoms

from potlearn_ase.models.linear import LinearCommittee
from potlearn_ase.models.neural import NeuralCommittee
from potlearn_ase.training.trainer import NeuralTrainConfig, TrainingHistory, train_neural

__all__ = ["RESIDUAL_DEFAULTS", "train_residual"]

#: training settings of the correction where the caller gives none: a short schedule, since
#: it starts from the linear fit
RESIDUAL_DEFAULTS = NeuralTrainConfig(hidden=(32,), epochs=30, lr=1e-3, lr_step=15,
                                      patience=8, force_weight=10.0)


def train_residual(
    linear: LinearCommittee,
    train: Sequence[Atoms],
    val: Sequence[Atoms],
    config: NeuralTrainConfig | None = None,
    *,
    progress: bool = False,
) -> tuple[NeuralCommittee, TrainingHistory]:
    """Train a neural correction to each member of ``linear`` (same descriptor and size).

    ``val`` drives early stopping (give structures the fit does not see). ``config.n_members``
    is taken from ``linear``; ``hidden``, ``activation`` and ``seed`` shape the correction.
    The energy term of the loss weighs against the force term as in the linear fit (whose
    weights were chosen by cross-validation with ``weights="cv"``): ``energy_weight =
    force_weight * (w_E / w_F)^2 / (3 N)`` with ``N`` the mean number of atoms, since the
    linear fit has one energy row and ``3 N`` force rows per structure.
    """
    cfg = replace(config or RESIDUAL_DEFAULTS, n_members=linear.n_members)
    lc = linear.config.fixed()
    if lc.force_weight and lc.energy_weight:
        atoms = sum(len(a) for a in train) / max(len(train), 1)
        ratio = (lc.energy_weight / lc.force_weight) ** 2 / (3.0 * atoms)
        cfg = replace(cfg, energy_weight=cfg.force_weight * ratio)
    desc = linear.descriptor
    model = NeuralCommittee(desc, n_members=linear.n_members, hidden=cfg.hidden,
                            activation=cfg.activation, seed=cfg.seed, residual=True)
    with torch.no_grad():
        model.linear_coef.copy_(linear.coef.to(model.linear_coef.dtype))
        feats, resid = [], []
        for start in range(0, len(train), 16):
            chunk = list(train[start : start + 16])
            out = desc.compute_batch(chunk)
            feats.append(out.features)
            pred = [linear.predict(a, forces=False, stress=False)["energy"].mean() for a in chunk]
            resid += [(a.get_potential_energy() - e) / len(a) for a, e in zip(chunk, pred)]
        x = torch.cat(feats)
        model.feature_mean.copy_(x.mean(0))
        model.feature_std.copy_(x.std(0).clamp(min=1e-6))
        spread = float(torch.tensor(resid, dtype=torch.float64).std()) if len(resid) > 1 else 0.0
        model.energy_scale.fill_(max(spread, 1e-3))
        model.weights[-1].zero_()  # the correction starts at zero: the linear members
    return train_neural(desc, train, val, cfg, init=model, progress=progress)
