"""Checkpoints of a learning run: the MD and learner state as atomic JSON, the history as JSON
lines, and the counters a resume rebuilds from the label store.

``state.json`` is small and rewritten atomically (temporary file, fsync, ``os.replace``) at
every checkpoint. The per-step history is not in it: :class:`HistoryLog` appends the steps
since the previous checkpoint to ``history.jsonl`` (one JSON object a line, fsynced), so a
checkpoint costs the same at step 10^6 as at step 10^3. A kill can tear the last line; it is
ignored on reading, and a resume cuts the file back to the checkpointed step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from potlearn_ase.errors import CheckpointError

__all__ = [
    "LearnerState",
    "StepRecord",
    "HistoryLog",
    "checkpoint_atoms",
    "counters_from_store",
    "json_default",
    "read_state",
    "write_json_atomic",
]


def checkpoint_atoms(state: dict[str, Any]) -> Atoms:
    """The MD state (positions, momenta, cell) saved in a checkpoint record."""
    a = state["atoms"]
    atoms = Atoms(numbers=a["numbers"], positions=a["positions"], cell=a["cell"], pbc=a["pbc"])
    atoms.set_momenta(np.asarray(a["momenta"]))
    return atoms


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (a reader sees the old or the new file)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, default=json_default)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_state(path: Path) -> dict[str, Any]:
    """The checkpoint record in ``path``.

    Raises
    ------
    FileNotFoundError
        No checkpoint at ``path``.
    CheckpointError
        The file is not a JSON object (truncated or damaged), naming it.
    """
    text = Path(path).read_text()
    try:
        state = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{path}: the checkpoint is damaged ({exc.msg} at line {exc.lineno}, column "
            f"{exc.colno}; {len(text)} bytes)"
        ) from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path}: not a checkpoint of a learning run")
    return state


def json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to a checkpoint")


class HistoryLog:
    """The per-step history of a run, appended to a JSON-lines file.

    Parameters
    ----------
    path : Path
        The file (``run_dir/history.jsonl``).
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append ``records`` (one line each) and fsync."""
        text = "".join(json.dumps(r, default=json_default) + "\n" for r in records)
        if not text:
            return
        with open(self.path, "a") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    def read(self, before_step: int | None = None) -> list[dict[str, Any]]:
        """The records, those of learner steps ``>= before_step`` dropped from the file too.

        A torn last line (a kill during the append) is dropped.

        Raises
        ------
        CheckpointError
            A line other than the last is not JSON, naming the file and the line.
        """
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        out: list[dict[str, Any]] = []
        keep = 0  # bytes of the records kept
        lines = data.split(b"\n")
        pos = 0
        for k, line in enumerate(lines):
            end = pos + len(line) + 1
            complete = end <= len(data)  # the last piece has no newline: torn or empty
            if not complete:
                break
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                if k >= len(lines) - 2:
                    break
                raise CheckpointError(f"{self.path}, line {k + 1}: not a JSON record") from None
            if before_step is not None and int(rec.get("step", 0)) >= before_step:
                break
            out.append(rec)
            keep = pos = end
        if keep < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)
                os.fsync(fh.fileno())
        return out

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace the file by ``records`` atomically."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as fh:
            fh.write("".join(json.dumps(r, default=json_default) + "\n" for r in records))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


def counters_from_store(store: Any) -> dict[str, Any]:
    """The learner's counters as the label store has them: every record a learner made.

    Records with a ``learner_step`` in their provenance are the learner's reference calls
    (starting labels have none). Returns ``n_reference_calls``, ``n_failures``,
    ``label_steps`` (the learner step of each label, in store order),
    ``reference_seconds``, ``ratios`` (the prequential calibration ratios stored with the
    labels), ``spreads`` (the raw spread of each ratio; empty when some label lacks them) and
    ``ratios_complete`` (whether every learner label holds its ratios).
    """
    label_steps: list[int] = []
    ratios: list[float] = []
    spreads: list[float] = []
    complete = True
    seconds = 0.0
    for atoms in store:
        prov = atoms.info.get("provenance", {})
        if prov.get("learner_step") is not None:
            label_steps.append(int(prov["learner_step"]))
            seconds += float(prov.get("wall_time") or 0.0)
            if "calibration_ratios" in prov:
                ratios.extend(float(r) for r in prov["calibration_ratios"])
                if "calibration_spreads" in prov:
                    spreads.extend(float(r) for r in prov["calibration_spreads"])
            else:
                complete = False
    n_failures = 0
    for failure in store.failures():
        if failure.provenance.get("learner_step") is not None:
            n_failures += 1
            seconds += float(failure.provenance.get("wall_time") or 0.0)
    return {
        "n_reference_calls": len(label_steps) + n_failures,
        "n_failures": n_failures,
        "label_steps": label_steps,
        "reference_seconds": seconds,
        "ratios": ratios,
        "spreads": spreads if len(spreads) == len(ratios) else [],
        "ratios_complete": complete,
    }


@dataclass
class StepRecord:
    """What the learner saw and decided at one step (an entry of ``learner.history``)."""

    step: int
    max_force_std: float
    energy_std: float
    threshold: float
    decision: str
    temperature: float | None = None
    max_extrapolation_grade: float | None = None
    predicted_force_error: float | None = None  # largest atom's, misfit included (eV/A)


@dataclass
class LearnerState:
    """The learner's counters and records: what a checkpoint saves and a resume restores."""

    step: int = 0  # learner steps evaluated (one per force call, rewound steps included)
    md_step: int = 0  # steps the dynamics has completed and kept
    n_reference_calls: int = 0
    n_reused_labels: int = 0
    n_failures: int = 0
    n_rejects: int = 0
    consecutive_rejects: int = 0
    consecutive_failures: int = 0  # reference calls failed in a row
    ratios: list[float] = field(default_factory=list)
    spreads: list[float] = field(default_factory=list)  # the raw spread of each ratio
    history: list[dict[str, Any]] = field(default_factory=list)
    label_steps: list[int] = field(default_factory=list)
    reference_seconds: float = 0.0
