"""The apple target's control flow: macOS check, one contender per compute unit through the coreml backend's
`compute_units` option, rows labelled with the unit. The CoreML engine is faked (prediction needs macOS)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from _bench_fakes import FakeDecoder, FakeEncoder
from pocketsam.benchmarks import apple
from pocketsam.cli import main
from pocketsam.runtime.errors import BackendError

IMAGE = np.zeros((32, 48, 3), np.uint8)


def test_not_macos_is_a_clear_message(capsys):
    with pytest.raises(BackendError, match="needs macOS"):
        apple.check_macos(lambda: "Linux")
    if apple.platform.system() != "Darwin":
        assert main(["bench", "some-bundle", "--target", "apple", "--reference", "none"]) == 2
        assert "needs macOS" in capsys.readouterr().err


def test_compute_units_each_open_a_contender(coreml_tiny_bundles, tmp_path):
    bundle = shutil.copytree(coreml_tiny_bundles["fp32+int8"], tmp_path / "tiny-coreml")
    opened = []

    def fake_open(b, backend, **options):
        opened.append((backend, options))
        return b, FakeEncoder(), FakeDecoder()

    rows = apple.bench_apple([bundle], IMAGE, ("encoder", "decoder"), compute_units=("CPU_ONLY", "ALL"), warmup=0,
                             runs=2, reference="none", progress=False, opener=fake_open, system=lambda: "Darwin")
    assert opened == [("coreml", {"compute_units": "CPU_ONLY"}), ("coreml", {"compute_units": "ALL"})]
    assert [(r["name"], r["part"], r["delegate"]) for r in rows] == [
        ("tiny-coreml@CPU_ONLY", "encoder", "CPU_ONLY"), ("tiny-coreml@CPU_ONLY", "decoder", "CPU_ONLY"),
        ("tiny-coreml@ALL", "encoder", "ALL"), ("tiny-coreml@ALL", "decoder", "ALL")]
    assert all(r["target"] == "apple" and r["engine"] == "coreml" and r["speedup"] is None for r in rows)


def test_apple_refuses_other_formats_and_unknown_units(tiny_bundle):
    with pytest.raises(BackendError, match="times CoreML bundles"):
        apple.apple_contenders([tiny_bundle], ("ALL",))
    with pytest.raises(BackendError, match="unknown compute unit"):
        apple.apple_contenders([tiny_bundle], ("NPU_PLEASE",))
