"""The i-PI socket protocol, driver side: the messages, their bytes and units, the extras.

i-PI (the server) drives the conversation; a driver answers. Every message starts with a
12-byte upper-case header (:data:`HDRLEN`). The server asks ``STATUS`` and the driver answers
``NEEDINIT`` (before an ``INIT``), ``READY`` or ``HAVEDATA`` (a result is waiting); ``INIT``
carries the request id and an init string (:func:`read_init`); ``POSDATA`` the cell, its
inverse, the atom count and the positions, in Bohr (:func:`read_posdata`); ``GETFORCE`` asks
for the ``FORCEREADY`` reply: energy (Hartree), atom count, forces (Hartree/Bohr), virial
(Hartree) and a JSON *extras* string (:func:`forces_message`); ``EXIT`` ends the run. All
numbers are native-endian float64 and int32, as i-PI sends them.

For a committee (:class:`~potlearn_ase.calculators.committee.CommitteeCalculator`) the extras
hold the committee members in the keys that i-PI's ``<ffcommittee>`` reads with
``<parse_json>true</parse_json>`` (:func:`committee_extras`):

==================== ====================== ==============================================
key                  shape                  meaning (i-PI atomic units)
==================== ====================== ==============================================
committee_pot        (M,)                   members' energies (Hartree)
committee_force      (M, 3N)                members' forces (Hartree/Bohr)
committee_virial     (M, 9)                 members' virials, -V * stress (Hartree);
                                            only for fully periodic structures
energy_std_eV        float                  calibrated energy spread (eV, ASE units)
max_force_std_eV_A   float                  max per-atom force spread (eV/Angstrom)
calibration          float                  the calibration factor alpha already applied
==================== ====================== ==============================================

The members are sent *calibrated* and centred on the reported energetics:
``member_k = sent + alpha * (raw_k - mean(raw))``. So i-PI's committee mean equals the energy
and forces sent (the reference's on a step the on-the-fly learner labelled) and its spread is
our calibrated spread: set i-PI's own ``<alpha>`` to 1. (i-PI's ``committee_uncertainty`` uses
``ddof=1``, ours ``ddof=0``: they differ by ``sqrt(M / (M - 1))``.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress
from ase.units import Bohr, Hartree

from potlearn_ase.errors import EngineError

__all__ = [
    "DEFAULT_SOCKETS_PREFIX",
    "EXIT",
    "FORCEREADY",
    "GETFORCE",
    "HAVEDATA",
    "HDRLEN",
    "INIT",
    "NEEDINIT",
    "POSDATA",
    "READY",
    "STATUS",
    "check_init",
    "committee_extras",
    "forces_message",
    "read_init",
    "read_posdata",
    "socket_path",
]

DEFAULT_SOCKETS_PREFIX = "/tmp/ipi_"
"""i-PI's default prefix of unix socket paths: ``<address>cu</address>`` is ``/tmp/ipi_cu``."""

HDRLEN = 12
"""Bytes of a message header."""

Recv = Callable[[int], bytes]
"""``recv(n)``: exactly ``n`` bytes from the socket."""


def _header(word: str) -> bytes:
    return word.upper().ljust(HDRLEN).encode()


STATUS, INIT, POSDATA, GETFORCE, EXIT = (
    _header(w) for w in ("STATUS", "INIT", "POSDATA", "GETFORCE", "EXIT")
)
READY, NEEDINIT, HAVEDATA, FORCEREADY = (
    _header(w) for w in ("READY", "NEEDINIT", "HAVEDATA", "FORCEREADY")
)


def socket_path(name: str, prefix: str = DEFAULT_SOCKETS_PREFIX) -> str:
    """The file of i-PI's unix socket ``<address>name</address>``.

    A ``name`` holding a ``/`` is taken as the full path already.
    """
    return name if "/" in name else prefix + name


# --------------------------------------------------------------------------- messages
def read_init(recv: Recv) -> tuple[int, str]:
    """The body of an ``INIT`` message: the request id and the init string."""
    request_id = int(np.frombuffer(recv(4), np.int32)[0])
    n = int(np.frombuffer(recv(4), np.int32)[0])
    return request_id, recv(n).decode("utf-8", errors="replace") if n else ""


def check_init(text: str) -> None:
    """Refuse an init string that asks for batched requests (one structure per request)."""
    for token in text.split(","):
        key, sep, value = token.partition(":")
        if sep and key.strip() == "batch_size" and value.strip() not in ("", "1"):
            raise EngineError(
                f"i-PI asks for batched requests ({token.strip()}); set batch_size to 1 in "
                "the <ffsocket> of this client"
            )


def read_posdata(recv: Recv, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """The body of a ``POSDATA`` message: the cell (rows are vectors) and the positions.

    Both in Angstrom. Raises :class:`~potlearn_ase.errors.EngineError` when i-PI sends
    another number of atoms than ``n_atoms``, that of the template structure.
    """
    h = np.frombuffer(recv(72), np.float64).reshape(3, 3)
    recv(72)  # inverse cell, not needed
    nat = int(np.frombuffer(recv(4), np.int32)[0])
    if nat != n_atoms:
        raise EngineError(
            f"i-PI sent {nat} atoms but the template structure has {n_atoms}: "
            "give the structure i-PI was started with"
        )
    pos = np.frombuffer(recv(24 * nat), np.float64).reshape(nat, 3)
    return h.T * Bohr, pos * Bohr


def forces_message(
    results: Mapping[str, Any],
    atoms: Atoms,
    *,
    periodic: bool,
    extras: bool = True,
    request_id: int = 0,
) -> bytes:
    """The ``FORCEREADY`` reply for ASE ``results`` on ``atoms``.

    Parameters
    ----------
    results : mapping
        ``energy`` (eV), ``forces`` (eV/A), ``stress`` (eV/A^3, Voigt; sent as the virial
        when ``periodic``) and, for committees, the keys :func:`committee_extras` reads.
    atoms : Atoms
        The structure of the request.
    periodic : bool
        Send the virial (else zeros).
    extras : bool
        Send the committee extras, with ``labelled`` and ``request_id``, as JSON.
    request_id : int
        i-PI's id of the request, echoed in the extras.
    """
    nat = len(atoms)
    try:
        energy = float(results["energy"])
        forces = np.asarray(results["forces"], np.float64)
    except KeyError as exc:
        raise EngineError(f"the calculator returned no {exc.args[0]!r} for i-PI") from None
    if forces.shape != (nat, 3):
        raise EngineError(f"forces of shape {forces.shape} for {nat} atoms")
    if periodic and results.get("stress") is not None:
        virial = _virial_hartree(np.asarray(results["stress"]), atoms.get_volume())
    else:
        virial = np.zeros((3, 3))
    extra = b""
    if extras:
        xtr = committee_extras(results, atoms, periodic=periodic)
        if xtr:
            xtr["labelled"] = int(bool(results.get("labelled", False)))
            xtr["request_id"] = request_id
            extra = json.dumps(xtr).encode()
    return b"".join(
        (
            FORCEREADY,
            np.float64(energy / Hartree).tobytes(),
            np.int32(nat).tobytes(),
            np.ascontiguousarray(forces * (Bohr / Hartree)).tobytes(),
            np.ascontiguousarray(virial).tobytes(),
            np.int32(len(extra)).tobytes(),
            extra,
        )
    )


# --------------------------------------------------------------------------- extras
def _virial_hartree(stress_voigt: np.ndarray, volume: float) -> np.ndarray:
    """i-PI's virial (3x3, Hartree, sent transposed like ASE's client) from ASE's stress."""
    return (-volume * voigt_6_to_full_3x3_stress(np.asarray(stress_voigt, float)) / Hartree).T


def committee_extras(
    results: Mapping[str, Any], atoms: Atoms, *, periodic: bool | None = None
) -> dict[str, Any]:
    """The JSON extras i-PI's ``ffcommittee`` (``parse_json``) reads, from ASE results.

    Parameters
    ----------
    results : mapping
        Results of a committee calculator: ``energy``, ``forces``, ``energy_committee`` (M),
        ``forces_committee`` (M, N, 3), ``calibration`` and, for periodic structures,
        ``stress`` and ``stress_committee`` (M, 6).
    atoms : Atoms
        The structure (its volume converts stresses to virials).
    periodic : bool, optional
        Send virials; default: ``atoms.pbc.all()`` and a stress in ``results``.

    Returns
    -------
    dict
        Empty for a calculator without a committee; otherwise the keys in the module docstring,
        members calibrated and centred on ``energy``/``forces``/``stress`` of ``results``.
    """
    if "energy_committee" not in results:
        return {}
    alpha = float(results.get("calibration", 1.0))
    e_members = np.asarray(results["energy_committee"], float)
    pot = (float(results["energy"]) + alpha * (e_members - e_members.mean())) / Hartree
    extras: dict[str, Any] = {"committee_pot": pot.tolist()}
    if "forces_committee" in results:
        f_members = np.asarray(results["forces_committee"], float)
        forces = np.asarray(results["forces"], float)
        f = (forces + alpha * (f_members - f_members.mean(0))) * (Bohr / Hartree)
        extras["committee_force"] = f.reshape(len(f), -1).tolist()
    if periodic is None:
        periodic = bool(atoms.pbc.all()) and "stress" in results
    if periodic and "stress_committee" in results:
        s_members = np.asarray(results["stress_committee"], float)
        s = np.asarray(results["stress"], float) + alpha * (s_members - s_members.mean(0))
        volume = atoms.get_volume()
        extras["committee_virial"] = [_virial_hartree(sk, volume).ravel().tolist() for sk in s]
    if "energy_std" in results:
        extras["energy_std_eV"] = float(results["energy_std"])
    if "max_force_std" in results:
        extras["max_force_std_eV_A"] = float(results["max_force_std"])
    extras["calibration"] = alpha
    return extras
