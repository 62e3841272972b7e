"""The run directory of ``potlearn otf``: who owns it, and putting it in order on resume.

* A new run only starts in an empty (or new) directory: a directory holding anything, labels
  of another configuration above all, is refused (:func:`check_new_run_dir`); ``--resume``
  continues it.
* ``potlearn demo`` replaces only a directory it made itself: it writes a marker file
  (:data:`DEMO_MARKER`) when it creates one, and :func:`prepare_demo_dir` refuses to delete a
  directory without it, or one whose configuration or labels are not the demo's.
* On resume, :func:`clean_stale_temporaries` removes the ``*.tmp`` files a kill can leave
  behind, and :func:`restore_learner` restores the learner (recovering from a damaged
  ``state.json``) and cuts ``md.traj`` back to the checkpointed step
  (:func:`truncate_trajectory`), so the steps the resumed MD repeats are not written twice.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from potlearn_ase.errors import ConfigError, StoreError

__all__ = [
    "DEMO_MARKER",
    "STALE_TEMPORARIES",
    "check_new_run_dir",
    "clean_stale_temporaries",
    "prepare_demo_dir",
    "restore_learner",
    "trajectory_frames_at",
    "truncate_trajectory",
]

log = logging.getLogger(__name__)

DEMO_MARKER = ".potlearn-demo"
"""The file ``potlearn demo`` writes into a run directory it creates."""

STALE_TEMPORARIES = (
    "state.json.tmp", "model.pt.tmp", "history.jsonl.tmp", "md.traj.tmp", "config.yaml.tmp"
)
"""Temporary files of atomic writes that a kill can leave behind (removed on resume)."""


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse to start a new run in a directory that holds anything (but the demo's marker).

    Raises
    ------
    ConfigError
        ``run_dir`` is not a directory, or is not empty; the message says to use
        ``--resume`` or another directory.
    """
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ConfigError(f"run_dir {run_dir} is a file, not a directory")
    held = sorted(p.name for p in run_dir.iterdir() if p.name != DEMO_MARKER)
    if held:
        shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
        raise ConfigError(
            f"run_dir {run_dir} is not empty (it holds {shown}); use --resume {run_dir} to "
            "continue that run, or give another run_dir"
        )


def clean_stale_temporaries(run_dir: Path) -> list[str]:
    """Remove the temporaries of atomic writes interrupted by a kill; returns their names."""
    removed = []
    for name in STALE_TEMPORARIES:
        path = run_dir / name
        if path.exists():
            path.unlink()
            removed.append(name)
    if removed:
        log.info("%s: removed stale temporaries %s", run_dir, ", ".join(removed))
    return removed


def trajectory_frames_at(md_step: int | None, interval: int) -> int:
    """Frames ``md.traj`` holds once MD step ``md_step`` is done (steps 0, interval, ...).

    None (no checkpoint: the MD starts again from step 0) gives 0.
    """
    if md_step is None:
        return 0
    return int(md_step) // int(interval) + 1


def truncate_trajectory(path: Path, n_frames: int) -> int:
    """Keep the first ``n_frames`` frames of the ASE trajectory ``path``; returns the frames
    kept. A trajectory that cannot be read is moved aside to ``<path>.corrupt``."""
    if not path.exists():
        return 0
    from ase.io.trajectory import Trajectory

    try:
        with Trajectory(str(path)) as traj:
            n = len(traj)
            if n <= n_frames:
                return n
            frames = [traj[i] for i in range(n_frames)]
    except Exception as exc:  # a file torn by a kill: ASE raises various errors
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        log.warning("%s cannot be read (%s); moved to %s, starting a new one", path, exc, aside)
        return 0
    tmp = path.with_name(path.name + ".tmp")
    with Trajectory(str(tmp), "w") as out:
        for atoms in frames:
            out.write(atoms)
    os.replace(tmp, path)
    log.info("%s: dropped %d frames after the checkpoint", path, n - n_frames)
    return n_frames


def _comparable(config: Mapping[str, Any]) -> str:
    """The configuration without what a demo run may vary (steps, run_dir, progress)."""
    from potlearn_ase.config import to_mapping
    from potlearn_ase.learners.run_settings import OTFRunConfig

    data = to_mapping(OTFRunConfig.from_dict(dict(config)))
    data.pop("run_dir", None)
    data.pop("progress", None)
    data["md"].pop("steps", None)
    return json.dumps(data, sort_keys=True, default=str)


def _demo_labels_only(run_dir: Path, reference: Any) -> bool:
    from potlearn_ase.data.store import LabelStore

    path = run_dir / "labels.h5"
    if not path.exists():
        return True
    try:
        with LabelStore(path, mode="r") as store:
            store.check_reference(reference.name, reference.params)
    except (StoreError, OSError) as exc:
        log.warning("%s: %s", path, exc)
        return False
    return True


def prepare_demo_dir(run_dir: Path, config: Mapping[str, Any]) -> None:
    """Make ``run_dir`` ready for a new demo run, replacing an earlier demo run only.

    An existing, non-empty directory is deleted only when it holds the marker the demo
    writes (:data:`DEMO_MARKER`), a configuration equal to ``config`` but for ``md.steps``,
    ``run_dir`` and ``progress``, and labels of the demo's reference only. Then (or for a new
    or empty directory) the directory is created with the marker.

    Raises
    ------
    ConfigError
        The directory was not made by the demo, or holds another configuration or labels
        from another reference; nothing is deleted.
    """
    from potlearn_ase.config import read_config_file
    from potlearn_ase.learners.reference import Reference

    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir {run_dir} is a file, not a directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        why = None
        cfg_path = run_dir / "config.yaml"
        if not (run_dir / DEMO_MARKER).is_file():
            why = "has no marker of potlearn demo"
        elif cfg_path.exists():
            try:
                same = _comparable(read_config_file(cfg_path)) == _comparable(config)
            except ConfigError:
                same = False
            if not same:
                why = "holds a run of another configuration"
        elif (run_dir / "labels.h5").exists():
            why = "holds labels without a configuration"
        if why is None and not _demo_labels_only(run_dir, Reference.from_spec(config["reference"])):
            why = "holds labels from another reference"
        if why is not None:
            raise ConfigError(
                f"{run_dir} is not a demo run (it {why}); the demo replaces only its own "
                "runs: give another --run-dir"
            )
        shutil.rmtree(run_dir)
        log.info("removed the earlier demo run in %s", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / DEMO_MARKER).write_text("made by potlearn demo; the demo may replace this run\n")


def restore_learner(learner: Any, trajectory_interval: int) -> dict[str, Any] | None:
    """Put a resumed run in order; returns its checkpoint record, or None to start the MD
    again from step 0 (no checkpoint yet, or a damaged one).

    The learner is restored from ``state.json`` and ``history.jsonl``
    (:meth:`~potlearn_ase.learners.otf.OnTheFlyLearner.load_checkpoint`), its counters are
    rebuilt from the label store, and ``md.traj`` is cut back to the checkpointed step. A
    damaged ``state.json`` (a kill cannot make one, but a full disk or an editor can) is moved
    to ``state.json.damaged`` with a warning: the MD starts again from the first structure,
    and every stored label is kept and reused.
    """
    from potlearn_ase.errors import CheckpointError

    rd = Path(learner.run_dir)
    state: dict[str, Any] | None
    try:
        state = learner.load_checkpoint()
    except FileNotFoundError:
        state = None
    except CheckpointError as exc:
        aside = rd / "state.json.damaged"
        os.replace(rd / "state.json", aside)
        log.warning(
            "%s; moved to %s: the MD starts again from step 0, reusing every label in %s",
            exc, aside.name, learner.store.path,
        )
        state = None
    if state is None:
        learner.restore_history(0)
        learner.sync_counters()
    truncate_trajectory(
        rd / "md.traj",
        trajectory_frames_at(None if state is None else state["md_step"], trajectory_interval),
    )
    return state
