"""Export of a linear SNAP model to LAMMPS's ``pair_style snap`` (``.snapcoeff``/``.snapparam``).

A linear model on :class:`~potlearn_ase.descriptors.snap.SNAPDescriptor` features has the
energy ``E = sum_i (beta_0[s_i] + beta[s_i] . B_i)``, which is exactly what ``pair_style snap``
evaluates when its parameter file repeats the descriptor's hyperparameters. In particular
``bzeroflag`` is written as the descriptor's: with ``bzeroflag 1`` both ``compute sna/atom`` and
``pair_style snap`` use ``B_i`` minus the bispectrum of an isolated atom, so the fitted constant
``beta_0`` carries over unchanged (and with ``bzeroflag 0`` neither subtracts it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from potlearn_ase.descriptors.snap import SNAPDescriptor
from potlearn_ase.errors import UnknownElementError

__all__ = ["write_snap_files", "snap_pair_commands"]

logger = logging.getLogger(__name__)


def _num(value: float) -> str:
    """The shortest text that reads back as exactly the same double."""
    return repr(float(value))


def _check_descriptor(descriptor: object) -> SNAPDescriptor:
    if not isinstance(descriptor, SNAPDescriptor):
        raise TypeError(
            f"pair_style snap needs a SNAPDescriptor, got {type(descriptor).__name__}"
        )
    return descriptor


def write_snap_files(
    coef: np.ndarray, descriptor: SNAPDescriptor, prefix: str | os.PathLike[str]
) -> tuple[Path, Path]:
    """Write the coefficient and parameter files of ``pair_style snap``.

    Parameters
    ----------
    coef : array, shape ``(n_species, 1 + K)``
        Per element (in ``descriptor.elements`` order): the constant energy ``beta_0`` (eV),
        then the ``K`` coefficients of the descriptor's features, in its feature order
        (linear bispectrum components, then the quadratic products when
        ``config.quadratic``). ``LinearCommittee.mean_coef()`` has this layout.
    descriptor : SNAPDescriptor
        The descriptor the coefficients were fitted on.
    prefix : str or path
        Files ``<prefix>.snapcoeff`` and ``<prefix>.snapparam`` are written (the folder is
        created when missing).

    Returns
    -------
    snapcoeff, snapparam : pathlib.Path

    Raises
    ------
    TypeError
        ``descriptor`` is not a SNAP descriptor.
    ValueError
        ``coef`` has the wrong shape or non-finite entries.
    """
    desc = _check_descriptor(descriptor)
    coef = np.asarray(coef, dtype=np.float64)
    S, K = desc.n_species, desc.n_features
    if coef.shape != (S, 1 + K):
        raise ValueError(
            f"coef must have shape (n_species, 1 + K) = ({S}, {1 + K}) for elements "
            f"{list(desc.elements)}, got {coef.shape}"
        )
    bad = np.argwhere(~np.isfinite(coef))
    if len(bad):
        s, k = bad[0]
        raise ValueError(f"coef[{s}, {k}] of element {desc.elements[s]} is {coef[s, k]}")
    c = desc.config
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    coeff_path = prefix.with_name(prefix.name + ".snapcoeff")
    param_path = prefix.with_name(prefix.name + ".snapparam")

    lines = [
        "# linear SNAP potential written by potlearn-ase; UNITS: metal",
        f"# elements {' '.join(desc.elements)}; twojmax {c.twojmax}; "
        f"quadratic {int(c.quadratic)}; column 0 is the per-atom constant energy (eV)",
        "",
        f"{S} {1 + K}",
    ]
    for s, el in enumerate(desc.elements):
        lines.append(f"{el} {_num(c.radius(el))} {_num(c.weight(el))}")
        lines.extend(_num(v) for v in coef[s])
    coeff_path.write_text("\n".join(lines) + "\n")

    params = [
        "# SNAP hyperparameters written by potlearn-ase (match compute sna/atom)",
        "",
        f"rcutfac {_num(c.rcutfac)}",
        f"twojmax {c.twojmax:d}",
        f"rfac0 {_num(c.rfac0)}",
        f"rmin0 {_num(c.rmin0)}",
        f"bzeroflag {c.bzeroflag:d}",
        f"switchflag {c.switchflag:d}",
        f"quadraticflag {int(c.quadratic):d}",
    ]
    param_path.write_text("\n".join(params) + "\n")
    logger.info("wrote %s and %s", coeff_path, param_path)
    return coeff_path, param_path


def _quote(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path)
    if '"' in text:
        raise ValueError(f"a LAMMPS file name cannot contain a double quote: {text!r}")
    return f'"{text}"' if any(ch.isspace() for ch in text) else text


def snap_pair_commands(
    descriptor: SNAPDescriptor,
    snapcoeff: str | os.PathLike[str],
    snapparam: str | os.PathLike[str],
    type_elements: Sequence[str] | None = None,
) -> list[str]:
    """LAMMPS commands that select the exported potential.

    Atom types follow ``type_elements`` (type 1 is the first symbol; each must be one of the
    descriptor's elements), by default ``descriptor.elements``, as made by
    :func:`potlearn_ase.engines.lammps.library.atoms_to_lammps`.

    Returns
    -------
    list of str
        ``["pair_style snap", "pair_coeff * * <snapcoeff> <snapparam> <elements...>"]``.
    """
    desc = _check_descriptor(descriptor)
    types = list(type_elements) if type_elements else list(desc.elements)
    unknown = [el for el in types if el not in desc.elements]
    if unknown:
        raise UnknownElementError(unknown[0], list(desc.elements), where="LAMMPS atom types")
    return [
        "pair_style snap",
        f"pair_coeff * * {_quote(snapcoeff)} {_quote(snapparam)} {' '.join(types)}",
    ]
