"""Run every benchmark script in this folder and collect their tables in RESULTS.md.

Each script prints a table and writes JSON under ``benchmarks/results/``. This runner records
each script's printed output, its exit status, its wall time and when it ran in
``benchmarks/RESULTS.md``. With ``--only``, the sections of the scripts run are replaced and
the others kept.

Usage: ``python benchmarks/run_all.py [--only NAME ...] [--quick]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK_FLAGS = {
    "calculator.py": ["--quick"],
    "sigkill.py": ["--quick"],
    "otf_peers.py": ["--quick"],
    "zuo.py": ["--quick"],
}


def _read_sections(path: Path) -> dict[str, str]:
    """``name -> text`` of the ``## name`` sections of an existing RESULTS.md."""
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for chunk in path.read_text().split("\n## ")[1:]:
        name = chunk.split("\n", 1)[0].strip()
        out[name] = "## " + chunk.rstrip("\n") + "\n"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="script names (without .py)")
    ap.add_argument("--quick", action="store_true", help="pass --quick where a script has it")
    args = ap.parse_args()
    scripts = sorted(
        p for p in HERE.glob("*.py") if p.name != "run_all.py" and not p.name.startswith("_")
    )
    if args.only:
        scripts = [p for p in scripts if p.stem in args.only]
    header = [
        "# Benchmark results",
        "",
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}. Ratios come from runs made "
        "side by side in one process, because these machines are noisy.",
        "",
    ]
    sections = _read_sections(HERE / "RESULTS.md") if args.only else {}
    failed = 0
    for script in scripts:
        cmd = [
            sys.executable,
            str(script),
            *(QUICK_FLAGS.get(script.name, []) if args.quick else []),
        ]
        print(f"== {script.name}", flush=True)
        own_before = _read_sections(HERE / "RESULTS.md").get(script.stem)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
        dt = time.perf_counter() - t0
        print(proc.stdout[-4000:], flush=True)
        status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        failed += proc.returncode != 0
        when = datetime.datetime.now().isoformat(timespec="seconds")
        lines = [f"## {script.stem}", "", f"{status}, {dt:.0f} s, run {when} on {platform.node()}"]
        lines += ["", "```", proc.stdout.strip()]
        if proc.returncode != 0:
            lines += ["--- stderr (last lines) ---", proc.stderr.strip()[-2000:]]
        lines += ["```", ""]
        sections[script.stem] = "\n".join(lines)
        own_after = _read_sections(HERE / "RESULTS.md").get(script.stem)
        if proc.returncode == 0 and own_after is not None and own_after != own_before:
            sections[script.stem] = own_after  # the script wrote its own section: keep it
    body = [sections[k] for k in sorted(sections)]
    (HERE / "RESULTS.md").write_text("\n".join(header + body))
    print(f"wrote {HERE / 'RESULTS.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
