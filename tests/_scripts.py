"""The installed `pocketsam` script, run as a user runs it (shared by the tests of the demos and the ssh target)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


def pocketsam_script() -> Path:
    """The installed `pocketsam` entry point of this interpreter (beside it in a venv, else on PATH)."""
    beside = Path(sys.executable).parent / "pocketsam"
    found = beside if beside.exists() else shutil.which("pocketsam")
    assert found is not None, "the pocketsam entry point is not installed (pip install -e .)"
    return Path(found)


def bench_merge(bench: Path, tmp_path: Path) -> tuple[list[dict], str]:
    """`pocketsam bench-merge BENCH` through the real script: asserts it is accepted (every row validated against the
    bench row schema) and joins the rows unchanged; returns (the rows, the markdown table)."""
    merged, table = tmp_path / "merged.json", tmp_path / "merged.md"
    run = subprocess.run([str(pocketsam_script()), "bench-merge", str(bench), "--json", str(merged), "--markdown",
                          str(table)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = json.loads(bench.read_text())["rows"]
    assert json.loads(merged.read_text())["rows"] == rows
    return rows, table.read_text()
