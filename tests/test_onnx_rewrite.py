"""The ONNX-level rewrite of the decoder (export/onnx_rewrite.py): the mask-prompt path under an `If`."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from pocketsam.export.onnx_rewrite import RewriteError, skip_unused_mask_path
from pocketsam.runtime import spec

ort = pytest.importorskip("onnxruntime")


def _feeds(has_mask: float, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image_embeddings": rng.normal(0, 1, (1, 256, 64, 64)).astype(np.float32),
        "point_coords": rng.uniform(0, 1024, (batch, 3, 2)).astype(np.float32),
        "point_labels": np.array([[1, 0, -1]] * batch, np.float32),
        "mask_input": rng.normal(0, 4, (batch, 1, 256, 256)).astype(np.float32),
        "has_mask_input": np.full(batch, has_mask, np.float32),
    }


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(spec.DECODER.output_names, feeds)


def test_bundle_decoder_gates_the_mask_path(tiny_bundle):
    """The exported decoder has the gate, and its then-branch holds the mask convolutions."""
    model = onnx.load(str(tiny_bundle / "decoder.onnx"))
    (gate,) = [n for n in model.graph.node if n.op_type == "If"]
    branches = {a.name: a.g for a in gate.attribute}
    assert sum(n.op_type == "Conv" for n in branches["then_branch"].node) == 3  # mask_downscaling's three convs
    assert [n.op_type for n in branches["else_branch"].node] == ["Constant"]
    assert not any(n.op_type == "Conv" for n in model.graph.node)  # nothing of the mask path left outside


def test_rewrite_keeps_outputs_with_and_without_mask(tiny_model, tmp_path):
    """Same outputs as the ungated graph, for clicks without a mask (else-branch) and with one (then-branch)."""
    from pocketsam.export.graphs import DecoderGraph
    from pocketsam.export.onnx import export_onnx

    path = export_onnx(DecoderGraph(tiny_model, fast=True), spec.DECODER, tmp_path / "d.onnx", {})
    plain = onnx.load(str(path))
    gated = skip_unused_mask_path(onnx.load(str(path)))
    for has in (0.0, 1.0):
        feeds = _feeds(has)
        for want, got in zip(_run(plain, feeds), _run(gated, feeds)):
            # has=1: the branch's convs may run without the NCHWc layout the main graph gets: rounding only
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    # a batch mixing clicks with and without a mask takes the then-branch and keeps each row's own embedding
    mixed = _feeds(0.0)
    mixed["has_mask_input"] = np.array([0.0, 1.0], np.float32)
    for want, got in zip(_run(plain, mixed), _run(gated, mixed)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_rewrite_refuses_a_graph_without_a_mask_path(tiny_bundle):
    """A decoder whose mask input feeds nothing (the export changed) is an error, not a silent no-op."""
    with pytest.raises(RewriteError, match="expected one tensor leaving 0 mask-only nodes"):
        skip_unused_mask_path(onnx.load(str(tiny_bundle / "decoder.onnx")), mask_input="no_such_input")
