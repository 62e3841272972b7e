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

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from potlearn_ase.data.batch import resolve_device
from potlearn_ase.descriptors.neighbours import SkinNeighbourList
from potlearn_ase.errors import ConfigError, ModelFormatError
from potlearn_ase.models.base import CommitteeModel, committee_results
from potlearn_ase.models.serialize import (
    file_sha256,
    load_model,
    model_fingerprint,
    model_from_state,
    model_state,
    save_model,
)

__all__ = ["CommitteeCalculator", "committee_results", "load"]


class CommitteeCalculator(Calculator):
    """ASE calculator of a committee potential with calibrated uncertainty.

    Every constructor keyword except ``model`` is kept in ASE's :attr:`parameters`, like
    ASE's own calculators: :meth:`set` changes them (discarding cached results) and
    :meth:`todict` returns them.

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
    skin : float
        Neighbour-list skin in Angstrom (default 0.5). The list is built for the cutoff plus
        the skin and reused until an atom has moved more than half the skin, or the cell,
        periodicity or elements change; 0 rebuilds it on every call. Results do not depend
        on it (to rounding), only the cost does. Descriptors that find their own neighbours
        (SNAP, inside LAMMPS) ignore it.
    dtype : torch dtype or name, optional
        Run the model in this precision (``"float32"`` is faster for large MD); default the
        model's own.
    device : str, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``; default where the model is.

    Notes
    -----
    :meth:`todict` (which ASE writes into every trajectory frame) names the model file and
    its SHA-256 when the calculator was loaded from or saved to one and its model has not
    changed since; otherwise it holds the whole model state. Either way it round-trips
    through the constructor.

    Examples
    --------
    >>> atoms.calc = potlearn_ase.load("model.pt")          # doctest: +SKIP
    >>> atoms.get_forces(); atoms.calc.results["forces_std"]  # doctest: +SKIP
    >>> atoms.calc.set(calibration=1.3, skin=1.0)            # doctest: +SKIP
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
    default_parameters: dict[str, Any] = {
        "model": None,  # the model file (resolved path) while the model is that file's
        "model_sha256": None,
        "calibration": 1.0,
        "energy_calibration": None,
        "metrics": {},
        "skin": 0.5,
        "dtype": None,
        "device": None,
    }
    discard_results_on_any_change = True

    def __init__(
        self,
        *,
        model: CommitteeModel | dict[str, Any] | str | os.PathLike,
        calibration: float = 1.0,
        energy_calibration: float | None = None,
        metrics: dict[str, Any] | None = None,
        model_sha256: str | None = None,
        skin: float = 0.5,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ):
        self.model: CommitteeModel | None = None  # type: ignore[assignment]
        self._file_fingerprint: str | None = None
        self._neighbours: SkinNeighbourList | None = None
        self._neighbours_of: Any = None  # the descriptor the list was made for
        super().__init__(**kwargs)
        self.set(
            model=model,
            model_sha256=model_sha256,
            calibration=calibration,
            energy_calibration=energy_calibration,
            metrics=metrics,
            skin=skin,
            dtype=dtype,
            device=device,
        )

    @property
    def calibration(self) -> float:
        """The factor ``alpha`` applied to every ``*_std``."""
        return float(self.parameters["calibration"])

    @calibration.setter
    def calibration(self, value: float) -> None:
        self.set(calibration=value)

    @property
    def energy_calibration(self) -> float:
        """The factor ``alpha_E`` applied to ``energy_std`` (``calibration`` unless set)."""
        value = self.parameters["energy_calibration"]
        return self.calibration if value is None else float(value)

    @energy_calibration.setter
    def energy_calibration(self, value: float | None) -> None:
        self.set(energy_calibration=value)

    @property
    def metrics(self) -> dict[str, Any]:
        """Training/validation metrics kept with the model."""
        return self.parameters["metrics"]

    def set(self, **kwargs: Any) -> dict[str, Any]:
        """Change parameters, as ASE's ``Calculator.set``; cached results are discarded.

        Takes the constructor's keywords. ``model=`` swaps in another model (a file, with an
        optional ``model_sha256``, a state or a model object); ``dtype=``/``device=`` move
        the current model.

        Raises
        ------
        ConfigError
            An unknown keyword, a negative skin, or ``model_sha256`` without ``model``.
        """
        unknown = set(kwargs) - set(self.default_parameters)
        if unknown:
            raise ConfigError(
                f"CommitteeCalculator has no parameter {', '.join(sorted(unknown))}; it takes "
                f"{', '.join(self.default_parameters)}"
            )
        model = kwargs.pop("model", _UNSET)
        digest = kwargs.pop("model_sha256", None)
        if digest is not None and model is _UNSET:
            raise ConfigError("model_sha256 names the file of a model: set it with model=")
        if "calibration" in kwargs:
            kwargs["calibration"] = float(kwargs["calibration"])
        if kwargs.get("energy_calibration") is not None:
            kwargs["energy_calibration"] = float(kwargs["energy_calibration"])
        if "metrics" in kwargs:
            kwargs["metrics"] = dict(kwargs["metrics"] or {})
        if "skin" in kwargs:
            kwargs["skin"] = float(kwargs["skin"])
            if not kwargs["skin"] >= 0.0:
                raise ConfigError(f"skin: must be a distance >= 0 (Angstrom), got {kwargs['skin']}")
        if "dtype" in kwargs:
            kwargs["dtype"] = _dtype_name(kwargs["dtype"])
        if "device" in kwargs and kwargs["device"] is not None:
            kwargs["device"] = str(kwargs["device"])
        changed = super().set(**kwargs)
        if model is not _UNSET:
            self._use_model(model, digest)  # type: ignore[arg-type]
            self.reset()
            changed["model"] = self.parameters["model"]
        elif self.model is not None and ({"dtype", "device"} & set(changed)):
            self._place_model()
        if "skin" in changed:
            self._neighbours = None
        return changed

    def _use_model(
        self, model: CommitteeModel | dict[str, Any] | str | os.PathLike, digest: str | None
    ) -> None:
        dtype, device = _torch_dtype(self.parameters["dtype"]), self.parameters["device"]
        self.parameters["model"] = self.parameters["model_sha256"] = None
        self._file_fingerprint = None
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            found = file_sha256(path)
            if digest is not None and found != digest:
                raise ModelFormatError(
                    f"{path}: the file changed since this calculator was described "
                    f"(sha256 {found[:12]}..., expected {digest[:12]}...)"
                )
            loaded, _ = load_model(path, device=resolve_device(device), dtype=dtype)
            self.model = loaded
            self._remember_file(path, found)
            return
        if isinstance(model, dict):
            tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in model["tensors"].items()}
            self.model = model_from_state(
                model["header"],
                tensors,
                where="CommitteeCalculator(model=...)",
                device=resolve_device(device),
                dtype=dtype,
            )
            return
        self.model = model
        self._place_model()

    def _place_model(self) -> None:
        """Move the model to the ``dtype`` and ``device`` parameters (when they are set)."""
        assert self.model is not None
        dtype, device = _torch_dtype(self.parameters["dtype"]), self.parameters["device"]
        desc = self.model.descriptor
        target = desc.device if device is None else resolve_device(device)
        if (dtype is None or dtype == desc.dtype) and target == desc.device:
            return
        was_files = self._model_is_files()
        header, tensors = model_state(self.model)
        moved = model_from_state(header, tensors, device=target, dtype=dtype or desc.dtype)
        self.model = moved
        if was_files:
            self._file_fingerprint = model_fingerprint(moved)
        self.reset()

    # ----------------------------------------------------------------- ASE protocol
    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | tuple[str, ...] = ("energy",),
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None and self.model is not None
        # forces and stress come almost free with the energy (one shared descriptor pass), and
        # dynamics ask for them next, so every property is computed at once and cached
        periodic = bool(self.atoms.pbc.all())
        nl = self.neighbour_list()
        pred = self.model.predict(
            self.atoms,
            forces=True,
            stress=periodic,
            neighbours=None if nl is None else nl.update(self.atoms),
        )
        self.results = committee_results(
            pred, self.calibration, energy_calibration=self.parameters["energy_calibration"]
        )

    def neighbour_list(self) -> SkinNeighbourList | None:
        """The neighbour list reused between calls (None when the descriptor finds its own).

        Its ``n_builds`` counts how often it was built.
        """
        assert self.model is not None
        desc = self.model.descriptor
        if self._neighbours is None or self._neighbours_of is not desc:
            self._neighbours = desc.neighbour_list(float(self.parameters["skin"]))
            self._neighbours_of = desc
        return self._neighbours

    def todict(self, skip_default: bool = True) -> dict[str, Any]:
        """Constructor keywords that rebuild this calculator (JSON-able).

        The parameters (those at their default left out, as in ASE), with ``model`` the
        model file and its SHA-256 when the model is still the one in that file, else the
        whole model state.
        """
        out = {
            k: v
            for k, v in super().todict(skip_default=skip_default).items()
            if k not in ("model", "model_sha256")
        }
        out.setdefault("calibration", self.calibration)  # always said, for readers of frames
        out.setdefault("metrics", self.metrics)
        if self._model_is_files():
            return {
                "model": self.parameters["model"],
                "model_sha256": self.parameters["model_sha256"],
                **out,
            }
        assert self.model is not None
        header, tensors = model_state(
            self.model,
            calibration=self.calibration,
            metrics=self.metrics,
            energy_calibration=self.parameters["energy_calibration"],
        )
        model = {"header": header, "tensors": {k: v.tolist() for k, v in tensors.items()}}
        return {"model": model, **out}

    def _model_is_files(self) -> bool:
        """Whether the model is (still) the one in the file of the ``model`` parameter."""
        return (
            self.parameters["model"] is not None
            and self.model is not None
            and self._file_fingerprint == model_fingerprint(self.model)
        )

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the model, calibration and metrics to ``path`` (see :func:`load`)."""
        assert self.model is not None
        out = save_model(
            self.model,
            path,
            calibration=self.calibration,
            metrics=self.metrics,
            energy_calibration=self.parameters["energy_calibration"],
        )
        self._remember_file(out)
        return out

    def _remember_file(self, path: str | os.PathLike, digest: str | None = None) -> None:
        """Note that this calculator's model is the one stored at ``path``."""
        assert self.model is not None
        self.parameters["model"] = str(Path(path).resolve())
        self.parameters["model_sha256"] = file_sha256(path) if digest is None else digest
        self._file_fingerprint = model_fingerprint(self.model)

    @property
    def n_members(self) -> int:
        return self.model.n_members  # type: ignore[union-attr]

    def set_model(self, model: CommitteeModel, *, calibration: float | None = None) -> None:
        """Swap in a retrained model without touching the dynamics using this calculator."""
        self.model = model
        self.parameters["model"] = self.parameters["model_sha256"] = None
        self._file_fingerprint = None
        if calibration is not None:
            self.parameters["calibration"] = float(calibration)
        self.reset()


_UNSET = object()


def _dtype_name(dtype: torch.dtype | str | None) -> str | None:
    """``"float32"`` for ``torch.float32`` or ``"float32"`` (a JSON-able parameter)."""
    name = None if dtype is None else str(dtype).removeprefix("torch.")
    t = getattr(torch, name, None) if name else None
    if name is not None and not (isinstance(t, torch.dtype) and t.is_floating_point):
        raise ConfigError(f"dtype: expected a floating-point torch dtype, got {dtype!r}")
    return name


def _torch_dtype(name: str | None) -> torch.dtype | None:
    return None if name is None else getattr(torch, name)


def load(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    skin: float = 0.5,
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
    skin : float
        Neighbour-list skin (Angstrom), see :class:`CommitteeCalculator`.
    """
    dtype_name = _dtype_name(dtype)
    # "auto", or a clear error for a missing CUDA device
    model, header = load_model(path, device=resolve_device(device), dtype=_torch_dtype(dtype_name))
    calc = CommitteeCalculator(
        model=model,
        calibration=header.get("calibration", 1.0),
        energy_calibration=header.get("energy_calibration"),
        metrics=header.get("metrics"),
        skin=skin,
        dtype=dtype_name,
        device=str(device),
    )
    calc._remember_file(path)  # todict names the file (with dtype and device): it rebuilds this
    return calc
