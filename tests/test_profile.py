"""`pocketsam profile`: per-operator profiles of a bundle's parts (benchmarks/profile.py). Structure only: every
operator of the graph is accounted for, times are real positive numbers; no timing is asserted (speed lives in
benchmarks, not tests)."""

from __future__ import annotations

import json

import pytest
from pocketsam.benchmarks.profile import ProfileError, profile_bundle, sample_feeds
from pocketsam.cli import main
from pocketsam.runtime import spec


def test_tflite_profile_accounts_for_every_op(tiny_tflite_bundle):
    from pocketsam.runtime.tflite_ops import read_tflite

    prof = profile_bundle(tiny_tflite_bundle, "decoder", threads=1, runs=1)
    ops = read_tflite(tiny_tflite_bundle / "decoder.tflite").subgraphs[0].ops  # serving_default (batch 1)
    assert sum(r.count for r in prof.rows) == len(ops)
    assert {r.op for r in prof.rows} == {o.name for o in ops}
    assert prof.engine == "litert" and prof.graph_ms > 0
    assert all(r.ms_each > 0 for r in prof.rows)
    by_type = dict((op, ms) for op, ms, _ in prof.by_type())
    assert sum(by_type.values()) == pytest.approx(prof.total_ms)
    assert "FULLY_CONNECTED" in prof.table(3)


def test_onnx_profile_uses_onnxruntime_profiler(tiny_bundle):
    prof = profile_bundle(tiny_bundle, "decoder", threads=1, runs=1)
    assert prof.engine == "onnxruntime" and prof.graph_ms > 0
    types = {r.op for r in prof.rows}
    assert "Softmax" in types and any("MatMul" in t for t in types)
    assert prof.total_ms > 0


def test_sample_feeds_follow_the_spec():
    feeds = sample_feeds(spec.DECODER, points=3)
    assert list(feeds) == spec.DECODER.input_names
    assert feeds["point_coords"].shape == (1, 3, 2) and feeds["point_coords"].max() <= spec.IMAGE_SIZE
    assert feeds["point_labels"].tolist() == [[1.0, -1.0, -1.0]]
    assert feeds["has_mask_input"].tolist() == [0.0]
    image = sample_feeds(spec.ENCODER)["image"]
    assert image.shape == (1, 3, spec.IMAGE_SIZE, spec.IMAGE_SIZE) and image.max() > 1.0  # 0..255 pixels


def test_cli_profile_writes_json(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["profile", str(tiny_bundle), "--part", "decoder", "--runs", "1", "--top", "3",
                 "--json", str(out)]) == 0
    assert "onnxruntime" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["by_type"] and data["rows"] and data["total_ms"] > 0


def test_cli_profile_bad_input(tiny_bundle, tmp_path, capsys):
    assert main(["profile", str(tiny_bundle), "--runs", "0"]) == 2
    assert "--runs" in capsys.readouterr().err
    assert main(["profile", str(tmp_path / "missing")]) == 2
    with pytest.raises(ProfileError, match="unknown part"):
        profile_bundle(tiny_bundle, "neck")
