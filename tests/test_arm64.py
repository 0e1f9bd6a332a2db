"""ARM64 parity, in an emulated Debian 12 arm64 userland (debootstrap + qemu-user-static), from aarch64 wheels:
`tools/arm64_check.py` does every step; this test runs it and reads its reports.

Marked `arm64` and left out of the default run (emulation is ~200x slower: see docs/edge.md for its wall time):

    python3 -m pytest -q -m arm64 tests/test_arm64.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {("onnx", "fp32"), ("onnx", "int8-dynamic"), ("tflite", "fp32"), ("tflite", "int8-dynamic")}

pytestmark = [
    pytest.mark.arm64,
    pytest.mark.full,  # without bundles given, the check exports the full-size model
    pytest.mark.skipif(sys.platform != "linux", reason="debootstrap and binfmt_misc are Linux's"),
    pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() != 0, reason="the check needs root (chroot, mount)"),
]


@pytest.fixture(autouse=True)
def _only_when_selected(request):
    """`-m "not full"` or any other -m replaces the default one that leaves `arm64` out: run only when asked."""
    if "arm64" not in (request.config.getoption("markexpr") or "").replace("not arm64", ""):
        pytest.skip("the ARM64 check runs only when selected (-m arm64): tens of minutes under emulation")


def test_arm64_parity(tmp_path):
    work = Path(os.environ.get("POCKETSAM_ARM64_WORK", "/var/tmp/pocketsam-arm64"))
    report = tmp_path / "arm64.json"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "arm64_check.py"), "--work", str(work), "--json",
                        str(report)], capture_output=True, text=True, timeout=3 * 3600)
    assert report.exists(), r.stdout[-4000:] + r.stderr[-4000:]
    reports = json.loads(report.read_text())["reports"]
    assert {(x["format"], x["encoder_precision"]) for x in reports} == EXPECTED
    for x in reports:
        assert x["engine"].endswith(" on aarch64"), x["engine"]  # it really ran as an aarch64 process
        engine = "onnxruntime" if x["format"] == "onnx" else "ai-edge-litert 1.4"
        assert x["engine"].startswith(engine), x["engine"]
        if x["format"] == "tflite":  # XNNPACK started, as on a Raspberry Pi (not LiteRT's builtin kernels)
            assert ", XNNPACK on aarch64" in x["engine"], x["engine"]
        failed = [row for res in x["results"] for row in res["rows"] if row["passed"] is False]
        assert x["passed"] and not failed, (x["bundle"], failed)
    assert r.returncode == 0, r.stdout[-4000:]
