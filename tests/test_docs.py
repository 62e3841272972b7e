"""Every Python code block of the tutorials runs, and the documentation site builds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ["quickstart.md", "otf.md", "toolbox.md"]


def _blocks(name: str) -> list[str]:
    text = (ROOT / "docs" / name).read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (block,) = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "cu.pt").exists()


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_code_blocks_run_in_order(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if name == "quickstart.md":
        # the first block loads the file the second writes: run the writer first
        blocks = _blocks(name)
        order = [blocks[1], blocks[0], *blocks[2:]]
    else:
        order = _blocks(name)
    assert order, f"no python blocks in {name}"
    for k, block in enumerate(order):
        exec(compile(block, f"{name} block {k}", "exec"), {})


def test_docs_site_builds(tmp_path):
    if shutil.which("mkdocs", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("mkdocs is installed by the docs extra")
    out = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "mkdocs"),
            "build",
            "--strict",
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").exists()
