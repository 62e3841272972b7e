"""Saving and loading committee models.

A model file is a ``torch.save`` of ``{"header": <JSON text>, "tensors": {name: tensor}}`` and is
read back with ``torch.load(..., weights_only=True)``: no pickled code ever runs on load. The
header holds the format version, the model kind, the elements, the descriptor's
hyperparameters, the model's hyperparameters, the calibration factor and training metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from potlearn_ase.descriptors import descriptor_from_dict
from potlearn_ase.errors import ModelFormatError
from potlearn_ase.models.base import CommitteeModel

__all__ = [
    "file_sha256",
    "model_fingerprint",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "load_model",
    "model_from_state",
    "model_state",
    "save_model",
]

FORMAT_NAME = "potlearn-ase model"
FORMAT_VERSION = 1
_REQUIRED = ("format", "format_version", "kind", "elements", "descriptor", "hyperparameters")


def model_state(
    model: CommitteeModel,
    *,
    calibration: float = 1.0,
    metrics: dict[str, Any] | None = None,
    energy_calibration: float | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """JSON-able header and named tensors that rebuild ``model`` exactly."""
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": model.kind,
        "elements": list(model.elements),
        "descriptor": model.descriptor.todict(),
        "hyperparameters": model.hyperparameters(),
        "calibration": float(calibration),
        **({} if energy_calibration is None else {"energy_calibration": float(energy_calibration)}),
        "metrics": metrics or {},
    }
    tensors: dict[str, torch.Tensor] = {}
    if model.kind == "linear":
        from potlearn_ase.models.linear import LinearCommittee

        assert isinstance(model, LinearCommittee)
        tensors["coef"] = model.coef.detach().cpu()
        if model.posterior is not None:
            p = model.posterior
            tensors["posterior.mean"] = torch.as_tensor(p.mean)
            tensors["posterior.cov"] = torch.as_tensor(p.cov)
            tensors["posterior.scalars"] = torch.tensor([p.sigma2, p.lam, p.n_eff])
        if model.normal_equations is not None:
            for k, v in model.normal_equations.state_dict().items():
                tensors[f"normal_equations.{k}"] = torch.as_tensor(v)
    else:
        for k, v in model.state_dict().items():
            tensors[f"state.{k}"] = v.detach().cpu()
    if model.active_set is not None:
        for k, v in model.active_set.state().items():
            tensors[f"active_set.{k}"] = v
    return header, tensors


def _with_active_set(
    model: CommitteeModel, tensors: dict[str, torch.Tensor], where: str
) -> CommitteeModel:
    if "active_set.rows" in tensors:
        from potlearn_ase.models.active_set import ActiveSet

        state = {k: _need(tensors, f"active_set.{k}", where) for k in ("scale", "rows", "counts")}
        model.active_set = ActiveSet.from_state(model.elements, state)
    return model


def _need(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ModelFormatError(f"{where}: missing key {key!r}")
    return d[key]


def model_from_state(
    header: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    *,
    where: str = "model",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> CommitteeModel:
    """Rebuild a model from :func:`model_state` output (checks format and keys)."""
    for key in _REQUIRED:
        _need(header, key, where)
    if header["format"] != FORMAT_NAME:
        raise ModelFormatError(f"{where}: not a {FORMAT_NAME} file (format {header['format']!r})")
    if header["format_version"] != FORMAT_VERSION:
        raise ModelFormatError(
            f"{where}: unknown format_version {header['format_version']!r}; this version of "
            f"potlearn-ase reads version {FORMAT_VERSION}"
        )
    kwargs: dict[str, Any] = {"device": device}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        descriptor = descriptor_from_dict(header["descriptor"], **kwargs)
    except TypeError as exc:
        raise ModelFormatError(f"{where}: bad descriptor hyperparameters: {exc}") from None
    kind = header["kind"]
    hp = header["hyperparameters"]
    if kind == "linear":
        from potlearn_ase.models.linear import LinearCommittee, LinearFitConfig
        from potlearn_ase.models.posterior import NormalEquations, Posterior

        coef = _need(tensors, "coef", where)
        posterior = None
        if "posterior.mean" in tensors:
            s = tensors["posterior.scalars"].tolist()
            posterior = Posterior(
                mean=tensors["posterior.mean"].numpy(),
                cov=tensors["posterior.cov"].numpy(),
                sigma2=s[0],
                lam=s[1],
                n_eff=s[2],
            )
        ne = None
        if "normal_equations.AtA" in tensors:
            ne = NormalEquations.from_state_dict(
                {
                    k: tensors[f"normal_equations.{k}"].numpy()
                    for k in ("AtA", "Aty", "yty", "n_rows")
                }
            )
        fit = dict(_need(hp, "fit", f"{where}: hyperparameters"))
        linear = LinearCommittee(
            descriptor,
            coef.numpy(),
            posterior=posterior,
            normal_equations=ne,
            config=LinearFitConfig(**fit),
        )
        return _with_active_set(linear, tensors, where)
    if kind == "neural":
        from potlearn_ase.models.neural import NeuralCommittee

        model = NeuralCommittee.from_hyperparameters(descriptor, hp)
        state = {k[len("state.") :]: v for k, v in tensors.items() if k.startswith("state.")}
        missing = set(model.state_dict()) - set(state)
        if missing:
            raise ModelFormatError(f"{where}: missing tensors {sorted(missing)}")
        model.load_state_dict(state)
        model = model.to(descriptor.device)
        return _with_active_set(model, tensors, where)
    raise ModelFormatError(f"{where}: unknown model kind {kind!r} (key 'kind')")


def save_model(
    model: CommitteeModel,
    path: str | os.PathLike,
    *,
    calibration: float = 1.0,
    metrics: dict[str, Any] | None = None,
    energy_calibration: float | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically (a temporary file, then a rename)."""
    header, tensors = model_state(
        model, calibration=calibration, metrics=metrics, energy_calibration=energy_calibration
    )
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"header": json.dumps(header, default=_json_default), "tensors": tensors}, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_model(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> tuple[CommitteeModel, dict[str, Any]]:
    """Read a model file; returns the model and its header.

    Raises
    ------
    FileNotFoundError
        Naming the file.
    ModelFormatError
        For a file that is not a model, of an unknown version, or with missing keys.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign files
        raise ModelFormatError(f"{path}: not a readable model file ({exc})") from None
    if not isinstance(blob, dict) or "header" not in blob or "tensors" not in blob:
        raise ModelFormatError(f"{path}: missing key 'header' or 'tensors'")
    try:
        header = json.loads(blob["header"])
    except (TypeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: header is not JSON ({exc})") from None
    model = model_from_state(header, blob["tensors"], where=str(path), device=device, dtype=dtype)
    return model, header


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in a model header")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_fingerprint(model: CommitteeModel) -> str:
    """A digest of the model's parameters: it changes when the model is updated in place."""
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(str(id(model.active_set)).encode())
    return h.hexdigest()
