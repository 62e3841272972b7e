"""The ASE-dynamics side of an on-the-fly learner: attach, keep the accepted state, rewind.

``learner.attach(dyn)`` makes the learner ``dyn``'s calculator and registers an observer that
counts the MD steps, keeps the last accepted state (positions, momenta, cell), rewinds to it
after a rejection (labelling it if it was not yet), writes the trajectory and checkpoints.
:class:`DynamicsMixin` holds these methods of
:class:`~potlearn_ase.learners.otf.OnTheFlyLearner`, which provides the state they use.
"""

from __future__ import annotations

import os
from typing import Any

from ase import Atoms

__all__ = ["DynamicsMixin"]


class DynamicsMixin:
    """How an :class:`~potlearn_ase.learners.otf.OnTheFlyLearner` drives ASE dynamics.

    A base of ``OnTheFlyLearner`` only: it uses the learner's ``calculator``, ``store``,
    ``state``, ``settings``, ``run_dir``, ``label`` and ``checkpoint``, the ``_accepted``
    state and ``_rewind`` flag the learner sets, and the look-ahead window's rewind
    (:class:`~potlearn_ase.learners.otf_window.WindowMixin`).
    """

    def attach(
        self, dyn: Any, *, trajectory: str | os.PathLike | None = None, interval: int = 1
    ) -> None:
        """Use the learner as ``dyn``'s calculator and observe every step.

        The observer counts steps, keeps the last accepted state, rewinds after a rejection
        (the rejected step does not count: ``dyn.run(n)`` makes ``n`` kept steps), appends
        accepted frames to ``trajectory`` every ``interval`` steps and checkpoints.
        """
        atoms = dyn.atoms
        atoms.calc = self.calculator
        self._traj = None
        if trajectory is not None:
            from ase.io.trajectory import Trajectory

            self._traj = Trajectory(str(trajectory), "a")
        self._held_frames = []
        self.can_rewind = True
        self._save_accepted(atoms)
        self.geometry_step = int(dyn.nsteps)  # the first evaluation is of this state

        def observe() -> None:
            if self._rewind_to is not None:  # a look-ahead window labelled an earlier step
                (k, state), self._rewind_to = self._rewind_to, None
                self._accepted = state
                self._restore_accepted(atoms)
                dyn.nsteps = k
                self.state.md_step = k
                self.geometry_step = k + 1
                self._write_held_frames(upto=k)
                return
            if self._rewind:
                self._restore_accepted(atoms)
                self._rewind = False
                dyn.nsteps -= 1  # the step was undone: dyn.run(n) still makes n kept steps
                self.geometry_step = self.state.md_step  # the restored, accepted state
                if self._accepted is not None and not self.store.contains(atoms):
                    self.label(atoms)
                self.geometry_step = self.state.md_step + 1
                return
            self.state.md_step = int(dyn.nsteps)
            self.geometry_step = self.state.md_step + 1  # what the next dyn.step() evaluates
            self._save_accepted(atoms)
            self._keep_window_state(self.state.md_step, self._accepted)
            if self._traj is not None and self.state.md_step % interval == 0:
                self._held_frames.append((self.state.md_step, atoms.copy()))
            if not self.window_open:
                self._write_held_frames()
            if (
                not self.window_open
                and self.run_dir is not None
                and self.state.md_step % self.settings.checkpoint_every == 0
            ):
                self.checkpoint(atoms)

        dyn.attach(observe, interval=1)

    def _write_held_frames(self, upto: int | None = None) -> None:
        """Write the held trajectory frames (those after step ``upto`` are dropped)."""
        held, self._held_frames = self._held_frames, []
        for step, frame in held:
            if self._traj is not None and (upto is None or step <= upto):
                self._traj.write(frame)

    def _save_accepted(self, atoms: Atoms) -> None:
        self._accepted = {
            "positions": atoms.positions.copy(),
            "momenta": atoms.get_momenta().copy(),
            "cell": atoms.cell.array.copy(),
        }

    def _restore_accepted(self, atoms: Atoms) -> None:
        assert self._accepted is not None
        atoms.set_cell(self._accepted["cell"])
        atoms.set_positions(self._accepted["positions"])
        atoms.set_momenta(self._accepted["momenta"])
