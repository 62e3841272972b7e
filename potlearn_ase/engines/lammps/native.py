"""Run a learned linear SNAP model as LAMMPS's own ``pair_style snap`` (any MPI ranks).

:func:`native_snap_commands` rewrites a deck written for the Python bridge (``pair_style
zero`` + ``fix external``) into one that uses the exported SNAP files; :func:`run_native`
runs it; :func:`snap_reexport_hook` keeps the files current while a learner retrains.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ase import Atoms

from potlearn_ase.engines.lammps.driver import read_deck
from potlearn_ase.engines.lammps.library import new_lammps
from potlearn_ase.errors import ConfigError, EngineError

__all__ = ["native_snap_commands", "run_native", "snap_reexport_hook"]


def native_snap_commands(
    commands: Sequence[str],
    model: Any,
    prefix: str | os.PathLike,
    elements: Sequence[str] | None = None,
) -> list[str]:
    """The deck with ``pair_style zero`` and ``fix external`` replaced by ``pair_style snap``.

    ``elements`` names the element of each LAMMPS atom type (type 1 first), as the deck's
    ``# potlearn elements`` line does for the bridge; by default the descriptor's order.

    ``model`` is a linear committee on a SNAP descriptor; its mean coefficients are written
    to ``prefix.snapcoeff`` / ``prefix.snapparam`` and LAMMPS evaluates them natively (all
    MPI ranks, LAMMPS speed; no uncertainty at run time).
    """
    from potlearn_ase.engines.lammps.snap_export import snap_pair_commands, write_snap_files

    if getattr(model.descriptor, "family", None) != "snap" or not hasattr(model, "mean_coef"):
        raise ConfigError("--native needs a linear model on a SNAP descriptor")
    coeff, param = write_snap_files(model.mean_coef(), model.descriptor, Path(prefix))
    pair = snap_pair_commands(model.descriptor, coeff, param, elements)
    out: list[str] = []
    fix_ids: set[str] = set()
    replaced = False
    for cmd in commands:
        words = cmd.split()
        if words[:2] == ["pair_style", "zero"]:
            out += pair
            replaced = True
        elif (
            words[:1] == ["pair_coeff"]
            and replaced
            and words[1:3] == ["*", "*"]
            and len(words) == 3
        ):
            continue
        elif len(words) >= 4 and words[0] == "fix" and words[3] == "external":
            fix_ids.add(words[1])
        elif words[:1] == ["fix_modify"] and len(words) > 1 and words[1] in fix_ids:
            continue
        else:
            out.append(cmd)
    if not replaced:
        raise ConfigError("the deck has no 'pair_style zero' line to replace with pair_style snap")
    return out


def snap_reexport_hook(prefix: str | os.PathLike) -> Callable[[Any, Atoms], None]:
    """A learner hook (``learner.on_label.append(...)``) that re-exports the SNAP files.

    After every retrain the ``pair_style snap`` coefficient and parameter files at ``prefix``
    hold the new committee mean, so a native LAMMPS run can pick up the learned potential.
    """
    from potlearn_ase.engines.lammps.snap_export import write_snap_files

    def hook(learner: Any, _atoms: Atoms) -> None:
        model = learner.model
        write_snap_files(model.mean_coef(), model.descriptor, Path(prefix))

    return hook


def run_native(
    deck: str | os.PathLike,
    model: Any,
    *,
    prefix: str | os.PathLike | None = None,
    variables: dict[str, Any] | None = None,
    elements: Sequence[str] | None = None,
) -> Any:
    """Run ``deck`` with ``model`` (linear SNAP) as LAMMPS's own ``pair_style snap``.

    The SNAP files go to ``prefix`` (default: ``<deck name>_potlearn`` in the working
    directory). Atom types map to ``elements``, else to the deck's ``# potlearn elements``
    line, else to the descriptor's element order. Any number of MPI ranks. Returns the LAMMPS
    instance after the deck has run.
    """
    commands, deck_elements = read_deck(deck)
    elements = list(elements) if elements else deck_elements or None
    prefix = Path(prefix) if prefix is not None else Path(Path(deck).stem + "_potlearn")
    args: list[str] = []
    for k, v in (variables or {}).items():
        args += ["-var", str(k), str(v)]
    lmp = new_lammps(args=args)
    for k, cmd in enumerate(native_snap_commands(commands, model, prefix, elements)):
        try:
            lmp.command(cmd)
        except Exception as exc:
            raise EngineError(
                f"{deck} (native SNAP), command {k + 1}: {cmd!r} failed: {exc}"
            ) from None
    return lmp
