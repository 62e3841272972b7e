"""The append-only record of a hyperparameter search: one JSON line per finished trial.

``trials.jsonl`` starts with a header line (``{"kind": "search", "config": ...}``) holding the
search settings; each trial that ends appends ``{"kind": "trial", ...}`` and is flushed to
disk at once, so a killed search keeps every finished trial. :class:`TrialLog` reads such a
file back to resume the search: the settings that decide which trials are run (data, space,
searcher, seed, fit settings) must be those of the header; the number of trials, the time
budget and the output folder may change.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from potlearn_ase.errors import ConfigError

if TYPE_CHECKING:
    from potlearn_ase.analysis.hyperopt import Trial
    from potlearn_ase.analysis.hyperopt_settings import HyperoptConfig

__all__ = ["TrialLog"]

log = logging.getLogger(__name__)

#: settings that may change between a search and its resumption
FREE_KEYS = ("n_trials", "time_budget_s", "output_dir")


def _settings(config: HyperoptConfig) -> dict[str, Any]:
    """The settings that decide the trials, as plain JSON values."""
    out = json.loads(json.dumps(asdict(config), default=str))
    for key in FREE_KEYS:
        out.pop(key, None)
    return out


class TrialLog:
    """``trials.jsonl`` of a search: the finished trials read back, new ones appended.

    Parameters
    ----------
    path : path-like
        The JSON-lines file.
    config : HyperoptConfig
        The settings of this search (written in the header of a new file, checked against
        the header of an existing one).
    resume : bool
        Continue the trials in ``path``. Without it an existing file that holds trials is an
        error (the search would mix two runs).

    Raises
    ------
    ConfigError
        ``path`` holds trials and ``resume`` is False; or its settings differ from ``config``
        (the message names the first differing key); or a line other than a last, cut-off
        one is not JSON.
    """

    def __init__(self, path: str | os.PathLike, config: HyperoptConfig, *, resume: bool):
        from potlearn_ase.analysis.hyperopt import Trial

        self.path = Path(path)
        self.trials: list[Trial] = []
        settings = _settings(config)
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        records = []
        for k, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if k == len(lines) - 1:  # a trial cut off while being written: not finished
                    log.warning("%s: ignoring the unfinished last line", self.path)
                    continue
                raise ConfigError(f"{self.path}, line {k + 1}: not a JSON record") from None
        trials = [r for r in records if r.get("kind") == "trial"]
        if trials and not resume:
            raise ConfigError(
                f"{self.path} holds {len(trials)} finished trials: resume the search "
                "(--resume) or give another output folder"
            )
        header = next((r for r in records if r.get("kind") == "search"), None)
        if resume and header is not None:
            old = header.get("config", {})
            for key in sorted(set(old) | set(settings)):
                if old.get(key) != settings.get(key):
                    raise ConfigError(
                        f"{self.path}: cannot resume, the setting {key!r} was "
                        f"{old.get(key)!r} and is now {settings.get(key)!r}"
                    )
        if resume and header is None and trials:
            raise ConfigError(f"{self.path}: trials without the header line of their search")
        fields = Trial.__dataclass_fields__
        self.trials = [Trial(**{k: v for k, v in r.items() if k in fields}) for r in trials]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if header is None or not resume:
            self.path.write_text(json.dumps({"kind": "search", "config": settings}) + "\n")
        elif not _is_json(lines[-1]):
            # drop the cut-off line so that the next record starts on a line of its own
            self.path.write_text("\n".join(lines[:-1]) + "\n")

    def append(self, trial: Trial) -> None:
        """Write one finished trial and flush it to disk."""
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"kind": "trial", **asdict(trial)}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.trials.append(trial)


def _is_json(line: str) -> bool:
    if not line.strip():
        return True
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True
