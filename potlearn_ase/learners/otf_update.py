"""How the on-the-fly learner learns from new labels: calibration, model update, batch pick.

* **Prequential calibration**: before the model is updated, each new label is compared with
  the committee's prediction of it, so every label is also an honest validation point;
  :func:`prequential_ratios` gives ``|error| / spread`` of its force components and
  :func:`calibration_factor` the 68.3 % quantile of all of them (``alpha``).
* **Model update** (:func:`update_model`): a linear committee is updated in closed form; a
  neural one is fine-tuned for a few epochs on the stored labels, at most
  ``neural_max_frames`` of them (the newest half, then a random sample of the older ones),
  so its cost stays bounded as labels grow.
* **Batch pick** (:func:`pick_diverse`): in batch mode, the frames to label are chosen by
  farthest-point sampling of their mean descriptor, starting from the most uncertain one, so
  a batch is diverse rather than redundant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms

from potlearn_ase.data.store import LabelStore
from potlearn_ase.data.validate import get_labels
from potlearn_ase.descriptors.base import Descriptor
from potlearn_ase.models.base import CommitteeModel
from potlearn_ase.models.calibration import ONE_SIGMA
from potlearn_ase.models.linear import LinearCommittee

if TYPE_CHECKING:
    from potlearn_ase.learners.otf import OTFConfig

__all__ = [
    "calibration_factor",
    "MIN_PREQUENTIAL_COMPONENTS",
    "error_model",
    "fits_error_model",
    "force_noise",
    "initial_calibration",
    "initial_error_model",
    "pick_diverse",
    "prequential_ratios",
    "prequential_spreads",
    "update_model",
]


def prequential_ratios(pred: dict[str, np.ndarray], labelled: Atoms) -> list[float]:
    """``|mean - reference| / spread`` of every force component with a nonzero spread.

    ``pred`` is the raw committee prediction (``forces`` of shape (M, N, 3)) made before the
    model learned from ``labelled``, which carries the reference forces.
    """
    f_ref = np.asarray(get_labels(labelled)["forces"])
    spread = pred["forces"].std(0)
    err = np.abs(pred["forces"].mean(0) - f_ref)
    ok = spread > 0
    return (err[ok] / spread[ok]).ravel().tolist()


def prequential_spreads(pred: dict[str, np.ndarray]) -> list[float]:
    """The raw committee spread of the force components :func:`prequential_ratios` keeps, in
    the same order (with the ratios they give the errors, for :func:`error_model`)."""
    spread = pred["forces"].std(0)
    return spread[spread > 0].ravel().tolist()


def force_noise(model: CommitteeModel) -> float:
    """The model's misfit of a force component (eV/A): the noise level its posterior infers
    from the residuals of its fit, which labels cannot remove. 0 for models without one."""
    if not isinstance(model, LinearCommittee) or model.posterior is None:
        return 0.0
    if model.config.noise_inferred:
        sigma = getattr(model.noise, "sigma", None)
        return float(sigma[1]) if sigma is not None else 0.0
    weight = model.config.force_weight or 0.0
    return float(np.sqrt(model.posterior.sigma2)) / weight if weight > 0 else 0.0


#: prequential force errors needed before the error model is fitted to them
MIN_PREQUENTIAL_COMPONENTS = 200


def fits_error_model(ratios: Sequence[float], spreads: Sequence[float]) -> bool:
    """Whether :func:`error_model` fits these prequential errors: at least
    :data:`MIN_PREQUENTIAL_COMPONENTS` of them, each with its spread (labels of earlier
    versions have none)."""
    return len(ratios) >= MIN_PREQUENTIAL_COMPONENTS and len(spreads) == len(ratios)


def error_model(
    ratios: Sequence[float], spreads: Sequence[float], current: tuple[float, float]
) -> tuple[float, float]:
    """``(alpha, noise)`` of the committee's error model from the prequential errors
    (:func:`~potlearn_ase.models.calibration.fit_error_model`); ``current`` until
    :func:`fits_error_model`."""
    from potlearn_ase.models.calibration import fit_error_model

    if not fits_error_model(ratios, spreads):
        return current
    s = np.asarray(spreads, float)
    return fit_error_model(np.asarray(ratios, float) * s, s)


def calibration_factor(
    ratios: Sequence[float], n_labels: int, min_labels: int, current: float
) -> float:
    """The 68.3 % quantile of ``ratios``; ``current`` until ``min_labels`` labels were seen."""
    if n_labels < min_labels or not ratios:
        return current
    return float(np.quantile(np.asarray(ratios), ONE_SIGMA))


def initial_calibration(model: CommitteeModel, frames: Sequence[Atoms]) -> float:
    """``alpha`` before the first on-the-fly label (see :func:`initial_error_model`)."""
    return initial_error_model(model, frames)[0]


def initial_error_model(
    model: CommitteeModel, frames: Sequence[Atoms]
) -> tuple[float, float, float]:
    """The calibration before the first on-the-fly label, cross-validated on the starting
    labels: ``(alpha, alpha_epistemic, misfit)``, the factor of the spread, and the error
    model's factor and misfit (eV/A; :func:`error_model`).

    Folds of structures when there are at least 5, else folds of atoms (the force rows of an
    eighth of each structure's atoms held out at a time), so that sigma is honest from the
    first structure. Neural committees have no closed-form folds: ``(1, 1, 0)`` until the
    first label.
    """
    from potlearn_ase.models.calibration import cross_validated_factors

    if not isinstance(model, LinearCommittee) or model.n_members < 2 or not frames:
        return 1.0, 1.0, 0.0
    unit = "structures" if len(frames) >= 5 else "atoms"
    if unit == "atoms" and min(len(a) for a in frames) < 2:
        return 1.0, 1.0, 0.0
    f = cross_validated_factors(model, frames, folds=8, unit=unit)
    return f["forces"], f["forces_epistemic"], f["forces_misfit"]


def update_model(
    model: CommitteeModel,
    labelled: list[Atoms],
    store: LabelStore,
    settings: OTFConfig,
    rng: np.random.Generator,
) -> CommitteeModel:
    """The model after learning from ``labelled`` (already in ``store``).

    A :class:`~potlearn_ase.models.linear.LinearCommittee` is updated in place and returned;
    a neural committee is fine-tuned from its current weights on the stored labels and the
    new model returned. ``rng`` seeds the committee draws (and picks the frames).
    """
    seed = int(rng.integers(2**31))
    if isinstance(model, LinearCommittee):
        model.update(labelled, rng=seed)
        return model
    from potlearn_ase.training.trainer import NeuralTrainConfig, train_neural

    frames = store.frames()
    cap = settings.neural_max_frames
    if len(frames) > cap:
        newest = frames[-cap // 2 :]
        older = frames[: -cap // 2]
        pick = rng.choice(len(older), size=cap - len(newest), replace=False)
        frames = [older[i] for i in sorted(pick)] + newest
    cfg = NeuralTrainConfig(
        n_members=model.n_members,
        epochs=settings.neural_finetune_epochs,
        lr=1e-3,
        seed=seed,
        patience=settings.neural_finetune_epochs,
        device=str(model.descriptor.device),
    )
    active = model.active_set
    model, _ = train_neural(model.descriptor, frames, None, cfg, init=model)
    if active is not None:
        model.active_set = active.extended(model.descriptor, labelled)
    return model


def pick_diverse(
    descriptor: Descriptor, frames: Sequence[Atoms], uncertainties: Sequence[float], k: int
) -> list[int]:
    """Indices of ``k`` diverse frames: farthest-point sampling of their mean descriptor
    (standardised), starting from the most uncertain frame."""
    from potlearn_ase.selection.fps import farthest_point_sampling

    feats = np.stack(
        [descriptor.compute(a, derivatives=False).features.mean(0).cpu().numpy() for a in frames]
    )
    scale = feats.std(0)
    feats = feats / np.where(scale > 0, scale, 1.0)
    # start from the most uncertain candidate, then add the most different ones
    start = int(np.argmax(uncertainties))
    return [int(i) for i in farthest_point_sampling(feats, k, start=start)]
