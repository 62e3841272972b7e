"""A small SIGKILL campaign (benchmarks/sigkill.py): kills at random moments, each resumed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_five_sigkills_lose_and_repeat_nothing(tmp_path):
    out = tmp_path / "sigkill.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sigkill.py"), "--kills", "5",
         "--steps", "2000", "--max-delay", "2", "--seed", "1", "--out", str(out),
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600,
    )
    report = json.loads(out.read_text())
    assert report["kills"] == 5, proc.stdout
    assert report["completed"] and report["failed_resumes"] == 0, report.get("stderr_tail")
    assert report["lost_labels"] == 0 and report["repeated_calls"] == 0
    assert report["duplicate_store_records"] == 0
    assert report["counters_equal"], report["counters"]
    assert report["labels"] >= 5  # the kills landed in a run that labels, not an idle one
    assert proc.returncode == 0
