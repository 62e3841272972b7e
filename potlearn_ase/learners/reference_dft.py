"""DFT references: GPAW and Quantum ESPRESSO settings, fallbacks and checks before a run.

Both are named in a configuration's ``reference`` mapping (see
:meth:`Reference.from_spec <potlearn_ase.learners.reference.Reference.from_spec>`). Keys not
given take the documented defaults below; mappings are merged key by key, so
``{"input_data": {"system": {"ecutwfc": 40}}}`` changes only the cutoff.

GPAW (``calculator: gpaw``; any keyword of ``gpaw.GPAW``), defaults :data:`GPAW_DEFAULTS`:
plane waves of 400 eV, PBE, a Monkhorst-Pack mesh of density 3 k-points per inverse Angstrom
including Gamma, Fermi-Dirac occupations of width 0.1 eV, no text output. Spin: give
``spinpol: true`` (initial moments come from the structure's initial magnetic moments).
Parallel: GPAW runs inside the Python process; run the whole script under ``mpiexec -n N``
when GPAW is built with MPI.

Quantum ESPRESSO (``calculator: espresso``; keywords of ``ase.calculators.espresso.Espresso``)
defaults :data:`ESPRESSO_DEFAULTS`: ``input_data`` with ``ecutwfc`` 30 Ry, Marzari-Vanderbilt
smearing of 0.01 Ry, ``conv_thr`` 1e-8 Ry, forces and stress printed; the same k-point
density as GPAW. ``command`` is the launch command, ``pw.x`` or for example ``mpiexec -n 4
pw.x`` (through ASE's ``EspressoProfile``; Debian's ``pw.x`` needs Open MPI's
``mpiexec``, with ``--allow-run-as-root`` as root); ``pseudo_dir`` defaults to
``$ESPRESSO_PSEUDO`` or Debian's ``/usr/share/espresso/pseudo``; ``pseudopotentials`` maps
each element to a file there (default :data:`ESPRESSO_PSEUDOPOTENTIALS`). Spin:
``input_data: {system: {nspin: 2, starting_magnetization: {Ni: 0.5}}}``.

Fallbacks: a failed calculation (SCF not converged, a crash, a timeout) is retried with
the overrides of ``fallback``, one list entry per retry, each merged into the settings of
the first attempt; after the last one the failure is recorded and the structure is not
used. Defaults: :data:`GPAW_FALLBACK` (more SCF iterations, then also wider smearing) and
:data:`ESPRESSO_FALLBACK` (more iterations with gentler mixing, then also wider smearing).

:func:`check_structure` runs before any MD: it reports a missing executable, pseudopotential
or PAW setup for an element of the structure as a :class:`~potlearn_ase.errors.ConfigError`.
"""

from __future__ import annotations

import copy
import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ase import Atoms

from potlearn_ase.errors import ConfigError

__all__ = [
    "ESPRESSO_DEFAULTS",
    "ESPRESSO_FALLBACK",
    "ESPRESSO_PSEUDOPOTENTIALS",
    "GPAW_DEFAULTS",
    "GPAW_FALLBACK",
    "check_structure",
    "espresso_settings",
    "gpaw_settings",
    "merge",
]

GPAW_DEFAULTS: dict[str, Any] = {
    "mode": {"name": "pw", "ecut": 400.0},
    "xc": "PBE",
    "kpts": {"density": 3.0, "gamma": True},
    "occupations": {"name": "fermi-dirac", "width": 0.1},
    "txt": None,
}
GPAW_FALLBACK: list[dict[str, Any]] = [
    {"maxiter": 1000},
    {"maxiter": 1000, "occupations": {"name": "fermi-dirac", "width": 0.3}},
]

ESPRESSO_DEFAULTS: dict[str, Any] = {
    "input_data": {
        "control": {"calculation": "scf", "tprnfor": True, "tstress": True, "disk_io": "none"},
        "system": {
            "ecutwfc": 30.0,
            "occupations": "smearing",
            "smearing": "mv",
            "degauss": 0.01,
        },
        "electrons": {"conv_thr": 1e-8, "mixing_beta": 0.7, "electron_maxstep": 100},
    },
    "kpts": {"density": 3.0, "gamma": True},
}
ESPRESSO_FALLBACK: list[dict[str, Any]] = [
    {"input_data": {"electrons": {"electron_maxstep": 400, "mixing_beta": 0.3}}},
    {
        "input_data": {
            "electrons": {"electron_maxstep": 400, "mixing_beta": 0.3},
            "system": {"degauss": 0.03},
        }
    },
]
#: Default pseudopotential files (names in Debian's quantum-espresso-data), PBE throughout.
ESPRESSO_PSEUDOPOTENTIALS: dict[str, str] = {
    "C": "C.pbe-rrkjus.UPF",
    "Cu": "Cu.pbe-kjpaw.UPF",
    "Fe": "Fe.pbe-nd-rrkjus.UPF",
    "Ge": "Ge.pbe-kjpaw.UPF",
    "H": "H.pbe-kjpaw.UPF",
    "N": "N.pbe-kjpaw.UPF",
    "Ni": "Ni.pbe-nd-rrkjus.UPF",
    "O": "O.pbe-rrkjus.UPF",
    "Si": "Si.pbe-rrkj.UPF",
}
DEBIAN_PSEUDO_DIR = "/usr/share/espresso/pseudo"


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``, mappings merged key by key (inputs untouched)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _fallback(spec: Mapping[str, Any], default: list[dict[str, Any]]) -> list[dict[str, Any]]:
    fb = spec.get("fallback", default)
    if not isinstance(fb, Sequence) or isinstance(fb, (str, bytes)):
        raise ConfigError("reference.fallback: expected a list of mappings of settings")
    for k, entry in enumerate(fb):
        if not isinstance(entry, Mapping):
            raise ConfigError(f"reference.fallback[{k}]: expected a mapping, got {entry!r}")
    return [dict(e) for e in fb]


def gpaw_settings(spec: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """GPAW keyword arguments of the first attempt and of each fallback.

    Raises
    ------
    ConfigError
        GPAW is not installed, or ``fallback`` is malformed.
    """
    try:
        import gpaw  # noqa: F401
    except ImportError:
        raise ConfigError(
            "reference calculator 'gpaw' needs GPAW: apt-get install libxc-dev "
            "libopenblas-dev, then CC=g++ pip install gpaw gpaw-data (make install does both)"
        ) from None
    spec = dict(spec)
    fallback = _fallback(spec, GPAW_FALLBACK)
    spec.pop("fallback", None)
    first = merge(GPAW_DEFAULTS, spec)
    return first, [merge(first, fb) for fb in fallback]


def espresso_settings(spec: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Espresso keyword arguments (plus ``command``, ``pseudo_dir``) of each attempt.

    Raises
    ------
    ConfigError
        The launch command's programs are not on the PATH, ``pseudo_dir`` does not exist, a
        named pseudopotential file is missing, or a key has the wrong type.
    """
    spec = dict(spec)
    fallback = _fallback(spec, ESPRESSO_FALLBACK)
    spec.pop("fallback", None)
    command = spec.get("command", "pw.x")
    if not isinstance(command, str) or not command.strip():
        raise ConfigError(f"reference.command: expected a command line, got {command!r}")
    words = shlex.split(command)
    programs = [words[0]] + [w for w in words[1:] if w.endswith("pw.x")]
    if not any(w.endswith("pw.x") for w in words):
        raise ConfigError(f"reference.command: {command!r} does not run pw.x")
    for prog in programs:
        if shutil.which(prog) is None:
            raise ConfigError(
                f"reference.command: {prog!r} (from {command!r}) is not an executable on the "
                "PATH; install Quantum ESPRESSO: apt-get install quantum-espresso "
                "quantum-espresso-data"
            )
    pseudo_dir = spec.get("pseudo_dir") or os.environ.get("ESPRESSO_PSEUDO") or DEBIAN_PSEUDO_DIR
    if not isinstance(pseudo_dir, str) or not Path(pseudo_dir).is_dir():
        raise ConfigError(
            f"reference.pseudo_dir: {pseudo_dir!r} is not a directory (Debian's "
            "quantum-espresso-data installs pseudopotentials in /usr/share/espresso/pseudo)"
        )
    pseudos = spec.get("pseudopotentials", ESPRESSO_PSEUDOPOTENTIALS)
    if not isinstance(pseudos, Mapping):
        raise ConfigError("reference.pseudopotentials: expected a mapping element -> file name")
    if "pseudopotentials" in spec:
        for element, name in pseudos.items():
            if not (Path(pseudo_dir) / str(name)).is_file():
                raise ConfigError(
                    f"reference.pseudopotentials.{element}: no file {name!r} in {pseudo_dir}"
                )
    if "input_data" in spec and not isinstance(spec["input_data"], Mapping):
        raise ConfigError("reference.input_data: expected a mapping of namelists")
    spec.update(command=command, pseudo_dir=str(pseudo_dir), pseudopotentials=dict(pseudos))
    first = merge(ESPRESSO_DEFAULTS, spec)
    return first, [merge(first, fb) for fb in fallback]


def check_structure(kind: str, settings: Mapping[str, Any], atoms: Atoms) -> None:
    """Check that the reference ``kind`` can label ``atoms`` (before any MD starts).

    Raises
    ------
    ConfigError
        Quantum ESPRESSO has no pseudopotential file for an element of ``atoms``, or GPAW
        no PAW setup for it.
    """
    elements = sorted(set(atoms.get_chemical_symbols()))
    if kind == "espresso":
        pseudo_dir = Path(settings["pseudo_dir"])
        pseudos = settings["pseudopotentials"]
        for el in elements:
            if el not in pseudos:
                raise ConfigError(
                    f"reference.pseudopotentials: no pseudopotential for element {el}; add "
                    f"{el}: <file> naming a file in {pseudo_dir}"
                )
            if not (pseudo_dir / pseudos[el]).is_file():
                raise ConfigError(
                    f"reference.pseudopotentials.{el}: no file {pseudos[el]!r} in {pseudo_dir}"
                )
    elif kind == "gpaw":
        setups = settings.get("setups", "paw")
        if setups != "paw":
            return  # custom setups: GPAW reports them itself
        xc = str(settings.get("xc", "PBE"))
        for el in elements:
            if not _gpaw_setup_found(el, xc):
                raise ConfigError(
                    f"reference calculator 'gpaw': no PAW setup for element {el} with xc {xc} "
                    "in GPAW's setup paths (pip install gpaw-data, or set GPAW_SETUP_PATH)"
                )


def _gpaw_setup_found(element: str, xc: str) -> bool:
    """Whether GPAW finds a PAW setup file for ``element`` and ``xc``."""
    from gpaw.setup_data import search_for_file

    for name in (f"{element}.{xc}", f"{element}.LDA", f"{element}.PBE"):
        try:
            search_for_file(name)
        except (RuntimeError, OSError):
            continue
        return True
    return False
