"""The ASE calculator of a committee potential.

ASE's names hold the committee mean: ``energy``, ``free_energy``, ``energies``, ``forces`` and
``stress``. The spread, scaled by the calibration factor ``alpha``, sits beside them:

================== =============== ==================================================
key                shape           meaning
================== =============== ==================================================
energy_std         float           alpha_E * std of the members' energies (eV)
forces_std         (N, 3)          alpha * std of each force component (eV/A)
max_force_std      float           max over atoms of the norm of a forces_std row (eV/A)
stress_std         (6,)            alpha * std of each stress component (eV/A^3)
energy_committee   (M,)            every member's energy (eV)
forces_committee   (M, N, 3)       every member's forces (eV/A)
stress_committee   (M, 6)          every member's stress (eV/A^3)
calibration        float           the factor alpha applied to forces_std and stress_std
energy_calibration float           the factor alpha_E applied to energy_std (alpha
                                   unless calibrated separately)
extrapolation_grade (N,)           per-atom gamma against the training atoms (models
                                   with an active set; > 1 means extrapolation)
max_extrapolation_grade float      max over atoms of extrapolation_grade
================== =============== ==================================================

Standard deviations use ``ddof=0``, so a one-member committee reports zeros.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from potlearn_ase.errors import ModelFormatError
from potlearn_ase.models.base import CommitteeModel
from potlearn_ase.models.serialize import load_model, model_from_state, model_state, save_model

__all__ = ["CommitteeCalculator", "load"]


class CommitteeCalculator(Calculator):
    """ASE calculator of a committee potential with calibrated uncertainty.

    Parameters
    ----------
    model : CommitteeModel, dict or path
        A fitted committee, the ``"model"`` entry of :meth:`todict`, or a model file (as
        written by :meth:`save`).
    calibration : float
        Factor ``alpha`` applied to ``forces_std``, ``max_force_std`` and ``stress_std`` (and
        to ``energy_std`` without ``energy_calibration``). Setting ``calc.calibration``
        (or ``calc.set(calibration=...)``) discards cached results.
    energy_calibration : float, optional
        Factor ``alpha_E`` applied to ``energy_std`` when energies were calibrated on their
        own (:func:`potlearn_ase.models.calibrate_by_type`); default ``calibration``.
    metrics : dict, optional
        Training/validation metrics kept with the model when saved.
    model_sha256 : str, optional
        With a file ``model``: the file's SHA-256, checked on loading (:meth:`todict` gives
        it, so a trajectory frame never silently points at a file that changed since).

    Notes
    -----
    :meth:`todict` (which ASE writes into every trajectory frame) names the model file when
    the calculator was loaded from or saved to one and its model has not changed since;
    otherwise it holds the whole model state. Either way it round-trips through the
    constructor.

    Examples
    --------
    >>> atoms.calc = potlearn_ase.load("model.pt")          # doctest: +SKIP
    >>> atoms.get_forces(); atoms.calc.results["forces_std"]  # doctest: +SKIP
    """

    implemented_properties = [
        "energy",
        "free_energy",
        "energies",
        "forces",
        "stress",
        "energy_std",
        "forces_std",
        "max_force_std",
        "stress_std",
        "energy_committee",
        "forces_committee",
        "stress_committee",
        "extrapolation_grade",
        "max_extrapolation_grade",
        "calibration",
        "energy_calibration",
    ]
    discard_results_on_any_change = True

    def __init__(
        self,
        *,
        model: CommitteeModel | dict[str, Any] | str | os.PathLike,
        calibration: float = 1.0,
        energy_calibration: float | None = None,
        metrics: dict[str, Any] | None = None,
        model_sha256: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self._file: tuple[str, str, str] | None = None  # (path, sha256, model fingerprint)
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            digest = file_sha256(path)
            if model_sha256 is not None and digest != model_sha256:
                raise ModelFormatError(
                    f"{path}: the file changed since this calculator was described "
                    f"(sha256 {digest[:12]}..., expected {model_sha256[:12]}...)"
                )
            model, _ = load_model(path)
            self._remember_file(path, digest, model)
        elif isinstance(model, dict):
            tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in model["tensors"].items()}
            model = model_from_state(
                model["header"], tensors, where="CommitteeCalculator(model=...)"
            )
        self.model = model
        self._calibration = float(calibration)
        self._energy_calibration = None if energy_calibration is None else float(
            energy_calibration
        )
        self.metrics = dict(metrics or {})

    @property
    def calibration(self) -> float:
        """The factor ``alpha`` applied to every ``*_std``."""
        return self._calibration

    @calibration.setter
    def calibration(self, value: float) -> None:
        self._calibration = float(value)
        self.reset()

    @property
    def energy_calibration(self) -> float:
        """The factor ``alpha_E`` applied to ``energy_std`` (``calibration`` unless set)."""
        return self._calibration if self._energy_calibration is None else self._energy_calibration

    @energy_calibration.setter
    def energy_calibration(self, value: float | None) -> None:
        self._energy_calibration = None if value is None else float(value)
        self.reset()

    def set(self, **kwargs: Any) -> dict[str, Any]:
        """ASE's ``set``; ``calibration=`` sets the calibration (and discards results)."""
        if "calibration" in kwargs:
            self.calibration = kwargs.pop("calibration")
        return super().set(**kwargs)

    # ----------------------------------------------------------------- ASE protocol
    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | tuple[str, ...] = ("energy",),
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        # forces and stress come almost free with the energy (one shared descriptor pass), and
        # dynamics ask for them next, so every property is computed at once and cached
        periodic = bool(self.atoms.pbc.all())
        pred = self.model.predict(self.atoms, forces=True, stress=periodic)
        self.results = committee_results(
            pred, self.calibration, energy_calibration=self._energy_calibration
        )

    def todict(self) -> dict[str, Any]:
        """Constructor keywords that rebuild this calculator (JSON-able).

        The model file and its SHA-256 when the model is still the one in that file, else
        the whole model state.
        """
        out: dict[str, Any] = {"calibration": self.calibration, "metrics": self.metrics}
        if self._energy_calibration is not None:
            out["energy_calibration"] = self._energy_calibration
        if self._file is not None and self._file[2] == _fingerprint(self.model):
            return {"model": self._file[0], "model_sha256": self._file[1], **out}
        header, tensors = model_state(
            self.model,
            calibration=self.calibration,
            metrics=self.metrics,
            energy_calibration=self._energy_calibration,
        )
        model = {"header": header, "tensors": {k: v.tolist() for k, v in tensors.items()}}
        return {"model": model, **out}

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the model, calibration and metrics to ``path`` (see :func:`load`)."""
        out = save_model(
            self.model,
            path,
            calibration=self.calibration,
            metrics=self.metrics,
            energy_calibration=self._energy_calibration,
        )
        self._remember_file(out)
        return out

    def _remember_file(
        self, path: str | os.PathLike, digest: str | None = None, model: Any = None
    ) -> None:
        """Note that ``model`` (default: this calculator's) is the one stored at ``path``."""
        model = self.model if model is None else model
        digest = file_sha256(path) if digest is None else digest
        self._file = (str(Path(path).resolve()), digest, _fingerprint(model))

    @property
    def n_members(self) -> int:
        return self.model.n_members

    def set_model(self, model: CommitteeModel, *, calibration: float | None = None) -> None:
        """Swap in a retrained model without touching the dynamics using this calculator."""
        self.model = model
        if calibration is not None:
            self._calibration = float(calibration)
        self.reset()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fingerprint(model: CommitteeModel) -> str:
    """A digest of the model's parameters: it changes when the model is updated in place."""
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    active = getattr(model, "active_set", None)
    h.update(str(id(active)).encode())
    return h.hexdigest()


def committee_results(
    pred: dict[str, np.ndarray], calibration: float, *, energy_calibration: float | None = None
) -> dict[str, Any]:
    """ASE results (mean and calibrated spread) from per-member predictions.

    ``calibration`` scales the force and stress spreads, ``energy_calibration`` (default
    ``calibration``) the energy spread.
    """
    alpha = float(calibration)
    alpha_e = alpha if energy_calibration is None else float(energy_calibration)
    E = pred["energy"]
    res: dict[str, Any] = {
        "energy": float(E.mean()),
        "free_energy": float(E.mean()),
        "energy_std": alpha_e * float(E.std()),
        "energy_committee": E.copy(),
        "energies": pred["energies"].mean(0),
        "calibration": alpha,
        "energy_calibration": alpha_e,
    }
    if "forces" in pred:
        F = pred["forces"]
        fstd = alpha * F.std(0)
        res["forces"] = F.mean(0)
        res["forces_std"] = fstd
        res["max_force_std"] = float(np.linalg.norm(fstd, axis=1).max()) if len(fstd) else 0.0
        res["forces_committee"] = F.copy()
    if "extrapolation_grade" in pred:
        g = np.asarray(pred["extrapolation_grade"], dtype=float)
        res["extrapolation_grade"] = g
        res["max_extrapolation_grade"] = float(g.max()) if g.size else 0.0
    if "stress" in pred:
        S = pred["stress"]
        res["stress"] = S.mean(0)
        res["stress_std"] = alpha * S.std(0)
        res["stress_committee"] = S.copy()
    return res


def load(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
) -> CommitteeCalculator:
    """Load a saved potential as a :class:`CommitteeCalculator`.

    Parameters
    ----------
    path : path-like
        A file written by :meth:`CommitteeCalculator.save`.
    device : str or torch.device
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (cuda when present).
    dtype : torch dtype or name, optional
        Run the model in another precision (``"float32"`` is faster for large MD).
    """
    from potlearn_ase.data.batch import resolve_device

    device = resolve_device(device)  # "auto", or a clear error for a missing CUDA device
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    model, header = load_model(path, device=device, dtype=dtype)
    calc = CommitteeCalculator(
        model=model,
        calibration=header.get("calibration", 1.0),
        energy_calibration=header.get("energy_calibration"),
        metrics=header.get("metrics"),
    )
    if dtype is None and str(device) == "cpu":  # todict can name the file: it rebuilds this
        calc._remember_file(path)
    return calc
