"""The Android demo's pure-Kotlin core (android_demo/core) against the golden files, on the JVM.

Runs android_demo/run-jvm-tests.sh (kotlinc + JUnit 4 from Debian's kotlin and junit4 packages, which .ci/run
installs): PIL-exact resizing (the goldens' sha256s, and one downscale made here with PIL, since every golden photo
is upscaled), float32 coordinates bit-equal to upstream, the decoder's prompt tokens, masks from upstream's low-res
logits and a SegmentSession over engines replaying upstream's embeddings and logits, both at the parity table's e2e
fp32 mask IoU bound; the bundle reader on a bundle `pocketsam export` wrote and on broken ones; and the in-app
benchmark's rows, which are fed here to `pocketsam bench-merge` through the installed entry point.
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

from _scripts import bench_merge
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


def check_bench_merge(bench: Path, tmp_path: Path) -> None:
    """The Kotlin benchmark's rows through `pocketsam bench-merge`: accepted (every row validated against the bench
    row schema), joined unchanged, and in the table. The rows are BenchTest's: two LiteRT delegates timed on a fake
    clock (the GPU contender's encoder 40 ms, decoder 3 ms per call), so their medians are known exactly."""
    rows, md = bench_merge(bench, tmp_path)
    assert {(r["delegate"], r["part"]) for r in rows} == {(d, p) for d in ("xnnpack", "gpu")
                                                          for p in ("encoder", "decoder", "prompt", "e2e")}
    gpu = {r["part"]: r["stats"]["median_ms"] for r in rows if r["delegate"] == "gpu"}
    assert gpu == {"encoder": 40.0, "decoder": 3.0, "prompt": 3.0, "e2e": 43.0}
    for part, ms in gpu.items():
        line = f"| Tensor G3 | android | mobilesam-tflite (litert 2.2.0, gpu) | {part} | "
        assert any(row.startswith(line) and f"| {ms:.1f} |" in row for row in md.splitlines()), (line, md)


def test_kotlin_core_matches_the_goldens(tmp_path, request):
    if shutil.which("kotlinc") is None or not JUNIT.exists():
        pytest.skip("the Kotlin core's tests need kotlinc and JUnit 4 (apt-get install kotlin junit4; .ci/run does)")
    bundle = request.getfixturevalue("tiny_bundle")  # a real `pocketsam export` bundle for the Kotlin reader
    # a downscale case (PIL antialiases when it shrinks): a seeded photo-sized image and PIL's resize of it
    rng = np.random.default_rng(7)
    big = (np.linspace(0, 255, 1803)[None, :, None] * 0.5 + rng.integers(0, 128, (1201, 1803, 3))).astype(np.uint8)
    png = tmp_path / "big.png"
    Image.fromarray(big).save(png)
    sha = hashlib.sha256(np.ascontiguousarray(transforms.resize_longest_side(big)).tobytes()).hexdigest()
    bound = next(c.bound for c in checks_for("e2e", "fp32") if c.metric == "mask_iou")
    bench = tmp_path / "android-bench.json"
    env = {**os.environ, "POCKETSAM_MASK_IOU": str(bound), "POCKETSAM_DOWNSCALE": f"{png}:{sha}",
           "POCKETSAM_BUNDLE": str(bundle), "POCKETSAM_BENCH_OUT": str(bench)}
    run = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=600)
    out = run.stdout + run.stderr
    print(out)  # the worst mask IoU line, for the log
    assert run.returncode == 0, out[-3000:]
    # every declared test ran: a test class the runner no longer finds, or a test that silently disappears, fails
    assert junit_count(out) == declared_tests(), out[-3000:]
    assert "read onnx bundle tiny-fp32" in out, out[-3000:]  # the real bundle was read, not skipped
    check_bench_merge(bench, tmp_path)
