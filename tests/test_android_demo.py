"""The Android demo's pure-Kotlin core (android_demo/core) against the golden files, on the JVM.

Runs android_demo/run-jvm-tests.sh (kotlinc + JUnit 4 from Debian's kotlin and junit4 packages, which .ci/run
installs): PIL-exact resizing (the goldens' sha256s, and one downscale made here with PIL, since every golden photo
is upscaled), float32 coordinates bit-equal to upstream, the decoder's prompt tokens, and masks from upstream's
low-res logits at the parity table's e2e fp32 mask IoU bound.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pocketsam.runtime import transforms
from pocketsam.runtime.parity import checks_for

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "android_demo" / "run-jvm-tests.sh"
TEST_SOURCES = ROOT / "android_demo" / "core" / "src" / "test" / "kotlin"
JUNIT = Path(os.environ.get("JUNIT_JAR", "/usr/share/java/junit4.jar"))


def declared_tests() -> int:
    """How many @Test methods the Kotlin test sources declare (an annotation line, not a mention in a comment)."""
    return sum(len(re.findall(r"^\s*@Test\b", f.read_text(), flags=re.M)) for f in TEST_SOURCES.rglob("*.kt"))


def junit_count(output: str) -> int:
    """The number of tests JUnitCore ran, from its summary: "OK (N tests)" or "Tests run: N,  Failures: M"."""
    ok = re.findall(r"^OK \((\d+) tests?\)$", output, flags=re.M)
    failed = re.findall(r"^Tests run: (\d+),\s+Failures: \d+$", output, flags=re.M)
    counts = [int(n) for n in ok + failed]
    assert len(counts) == 1, f"expected one JUnit summary line, found {counts}:\n{output[-3000:]}"
    return counts[0]


def test_junit_summary_is_parsed():
    assert junit_count("....\nTime: 1.2\n\nOK (12 tests)\n") == 12
    assert junit_count("Time: 1\nThere was 1 failure:\n...\nFAILURES!!!\nTests run: 9,  Failures: 1\n") == 9
    assert junit_count("OK (1 test)\n") == 1


def test_kotlin_core_matches_the_goldens(tmp_path):
    if shutil.which("kotlinc") is None or not JUNIT.exists():
        pytest.skip("the Kotlin core's tests need kotlinc and JUnit 4 (apt-get install kotlin junit4; .ci/run does)")
    # a downscale case (PIL antialiases when it shrinks): a seeded photo-sized image and PIL's resize of it
    rng = np.random.default_rng(7)
    big = (np.linspace(0, 255, 1803)[None, :, None] * 0.5 + rng.integers(0, 128, (1201, 1803, 3))).astype(np.uint8)
    png = tmp_path / "big.png"
    Image.fromarray(big).save(png)
    sha = hashlib.sha256(np.ascontiguousarray(transforms.resize_longest_side(big)).tobytes()).hexdigest()
    bound = next(c.bound for c in checks_for("e2e", "fp32") if c.metric == "mask_iou")
    env = {**os.environ, "POCKETSAM_MASK_IOU": str(bound), "POCKETSAM_DOWNSCALE": f"{png}:{sha}"}
    run = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=600)
    out = run.stdout + run.stderr
    print(out)  # the worst mask IoU line, for the log
    assert run.returncode == 0, out[-3000:]
    # every declared test ran: a test class the runner no longer finds, or a test that silently disappears, fails
    assert junit_count(out) == declared_tests(), out[-3000:]
