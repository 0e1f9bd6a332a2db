"""The iOS demo's Swift core (ios_demo/PocketSAMKit, target PocketSAMCore) against the golden files, on Linux.

Runs ios_demo/run-linux-tests.sh: `swift test` with Debian 13's Swift 6.0 (`swiftlang`) inside a Debian 13 root
that `.ci/run` builds with debootstrap (skipped, saying why, where there is none). The Swift tests check PIL-exact
resizing (the goldens' sha256s, and one downscale made here with PIL, since every golden photo is upscaled),
float32 coordinates bit-equal to upstream, the decoder's prompt tokens, masks from upstream's low-res logits and a
SegmentSession over engines replaying upstream's embeddings and logits, both at the parity table's e2e fp32 mask IoU
bound; the bundle reader on bundles `pocketsam export` wrote (ONNX, and CoreML where coremltools is installed) and
on broken ones. What the Swift code writes is checked here with Python: its benchmark rows go through
`pocketsam bench-merge`, its mask PNGs are decoded by PIL.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _scripts import bench_merge
from pocketsam.benchmarks.apple import COMPUTE_UNITS
from pocketsam.runtime import transforms
from pocketsam.runtime.parity import checks_for

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "ios_demo" / "run-linux-tests.sh"
KIT = ROOT / "ios_demo" / "PocketSAMKit"
GOLDEN = ROOT / "tests" / "golden"


def declared_tests() -> int:
    """How many XCTest methods the Swift test sources declare (`func test…()` in an XCTestCase)."""
    return sum(len(re.findall(r"^\s*func test\w*\(\)", f.read_text(), flags=re.M))
               for f in (KIT / "Tests").rglob("*.swift"))


def xctest_summary(output: str) -> tuple[int, int, int]:
    """(executed, skipped, failures) from XCTest's last summary line (the "All tests" suite's):
    "Executed N tests, with K tests skipped and F failures (U unexpected) in …" (the skip part only when K > 0)."""
    found = re.findall(r"Executed (\d+) tests?, with (?:(\d+) tests? skipped and )?(\d+) failures?", output)
    assert found, f"no XCTest summary line:\n{output[-3000:]}"
    n, skipped, failures = found[-1]
    return int(n), int(skipped or 0), int(failures)


def test_xctest_summary_is_parsed():
    assert xctest_summary("\t Executed 31 tests, with 0 failures (0 unexpected) in 57.2 (57.2) seconds\n") == (31, 0, 0)
    assert xctest_summary("Executed 1 test, with 1 failure (0 unexpected) in 0.1 (0.1) seconds") == (1, 0, 1)
    two = ("Executed 9 tests, with 1 test skipped and 0 failures (0 unexpected) in 1 (1) seconds\n"
           "Executed 31 tests, with 2 tests skipped and 1 failure (0 unexpected) in 2 (2) seconds\n")
    assert xctest_summary(two) == (31, 2, 1)


def test_swift_compute_units_are_the_apple_targets():
    """The app's compute-unit names (the bench rows' `delegate`) are benchmarks/apple.py's, read from the Swift
    source rather than retyped there."""
    source = (KIT / "Sources" / "PocketSAMCore" / "Bench.swift").read_text()
    enum = source[source.index("public enum ComputeUnits"):]
    enum = enum[:enum.index("\n}\n")]
    assert sorted(re.findall(r'case \w+ = "(\w+)"', enum)) == sorted(COMPUTE_UNITS)


def _prepare_goldens(out: Path) -> None:
    spec = importlib.util.spec_from_file_location("prepare_goldens", ROOT / "ios_demo" / "prepare_goldens.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.prepare(out)


def _check_bench_rows(bench: Path, tmp_path: Path) -> None:
    """The Swift benchmark's rows through `pocketsam bench-merge`: accepted (every row validated against the bench
    row schema), joined unchanged, and in the table. They are BenchTests' rows: two compute units timed on a fake
    clock (CPU_ONLY: encoder 400 ms, decoder 12 ms per call), so their medians are known exactly."""
    rows, md = bench_merge(bench, tmp_path)
    assert {r["target"] for r in rows} == {"apple"}
    assert {(r["delegate"], r["part"]) for r in rows} == {(u, p) for u in ("CPU_AND_NE", "CPU_ONLY")
                                                          for p in ("encoder", "decoder", "prompt", "e2e")}
    assert all(r["name"] == f"mobilesam-coreml-fp16@{r['delegate']}" for r in rows)
    cpu = {r["part"]: r["stats"]["median_ms"] for r in rows if r["delegate"] == "CPU_ONLY"}
    assert cpu == {"encoder": 400.0, "decoder": 12.0, "prompt": 12.0, "e2e": 412.0}
    for part, ms in cpu.items():
        line = f"| A16 Bionic | apple | mobilesam-coreml-fp16@CPU_ONLY (coreml iOS 17.4, CPU_ONLY) | {part} | "
        assert any(row.startswith(line) and f"| {ms:.1f} |" in row for row in md.splitlines()), (line, md)


def _check_mask_pngs(out: Path, bound: float) -> None:
    """The PNGs the Swift MaskImage wrote, decoded by PIL: an 8-bit grayscale image of 0 and 255 (what
    `pocketsam predict --out` writes). The chelsea one is the best mask of the golden first click as the Swift
    session computed it from upstream's logits; it must be upstream's mask at the IoU bound."""
    with Image.open(out / "mask-pattern-3x70000.png") as im:
        assert (im.mode, im.size) == ("L", (70000, 3))
        got = np.asarray(im)
    want = np.where(np.arange(3 * 70000).reshape(3, 70000) % 7 < 3, 255, 0)  # AppCoreTests' pattern
    assert np.array_equal(got, want)
    image = next(i for i in json.loads((GOLDEN / "golden.json").read_text())["images"] if i["name"] == "chelsea")
    prompt = image["prompts"][0]
    h, w = image["original_size"]
    with Image.open(out / "mask-chelsea-point.png") as im:
        assert (im.mode, im.size) == ("L", (w, h))
        mask = np.asarray(im)
    assert set(np.unique(mask)) <= {0, 255}
    with np.load(GOLDEN / image["npz"]) as z:
        masks = np.unpackbits(z[f"{prompt['name']}.masks"], count=int(np.prod(prompt["masks_shape"])))
    upstream = masks.reshape(prompt["masks_shape"])[prompt["best_index"]].astype(bool)
    ours = mask == 255
    iou = (ours & upstream).sum() / (ours | upstream).sum()
    assert iou >= bound, f"the saved PNG vs upstream's best mask: IoU {iou:.6f} < {bound}"


def test_swift_core_matches_the_goldens(tmp_path, request):
    if os.geteuid() != 0:
        pytest.skip("the Swift core's tests run in a chroot: they need root (CI runs as root)")
    check = subprocess.run(["bash", str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        pytest.skip(f"the Swift core's tests need the Debian 13 root with swiftlang: {check.stderr.strip()}")
    work = tmp_path / "work"
    _prepare_goldens(work / "golden-npy")
    # a downscale case (PIL antialiases when it shrinks): a seeded portrait photo-sized image and PIL's resize of it
    rng = np.random.default_rng(11)
    big = (np.linspace(0, 255, 1517)[:, None, None] * 0.6 + rng.integers(0, 100, (1517, 1093, 3))).astype(np.uint8)
    np.save(work / "downscale.npy", big)
    (work / "downscale.sha256").write_text(
        hashlib.sha256(np.ascontiguousarray(transforms.resize_longest_side(big)).tobytes()).hexdigest() + "\n")
    # bundles `pocketsam export` wrote, for the Swift bundle reader: ONNX, and CoreML (the app's format: each part
    # an .mlpackage folder, hashed file by file) where coremltools is installed
    bundles = {"onnx-tiny-fp32": request.getfixturevalue("tiny_bundle")}
    if importlib.util.find_spec("coremltools") is not None:
        bundles["coreml-tiny-fp32-int8"] = request.getfixturevalue("coreml_tiny_bundles")["fp32+int8"]
    for name, path in bundles.items():
        shutil.copytree(path, work / "bundles" / name)
    bound = next(c.bound for c in checks_for("e2e", "fp32") if c.metric == "mask_iou")
    env = {**os.environ, "POCKETSAM_MASK_IOU": str(bound), "POCKETSAM_SWIFT_WORK": str(work),
           "POCKETSAM_PYTHON": sys.executable}
    run = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=1800)
    out = run.stdout + run.stderr
    print("\n".join(line for line in out.splitlines()
                    if "worst mask IoU" in line or line.startswith("read ") or "Executed" in line))
    assert run.returncode == 0, out[-5000:]
    executed, skipped, failures = xctest_summary(out)
    # every declared test ran, none skipped (every input was given), none failed
    assert (executed, skipped, failures) == (declared_tests(), 0, 0), out[-5000:]
    for name in bundles:
        assert re.search(rf"^read \w+ bundle {re.escape(name)}:", out, flags=re.M), f"{name} was not read:\n{out[-3000:]}"
    _check_bench_rows(work / "out" / "apple-bench.json", tmp_path)
    _check_mask_pngs(work / "out", bound)
