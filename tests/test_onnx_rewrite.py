"""The ONNX-level rewrites of the decoder (export/onnx/rewrite.py): the mask-prompt path and the image cache under
`If`s."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from pocketsam.export.onnx.rewrite import RewriteError, skip_unused_mask_path
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


def _all_nodes(graph: onnx.GraphProto):
    """Every node of `graph` and of its subgraphs."""
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(a.g)


def test_bundle_decoder_gates_the_mask_path(tiny_bundle):
    """The exported decoder has the gate (inside the image cache's, which computes the dense embedding), and its
    then-branch holds the mask convolutions."""
    model = onnx.load(str(tiny_bundle / "decoder.onnx"))
    (gate,) = [n for n in _all_nodes(model.graph) if n.name == "skip_mask_path_without_mask_input"]
    branches = {a.name: a.g for a in gate.attribute}
    assert sum(n.op_type == "Conv" for n in branches["then_branch"].node) == 3  # mask_downscaling's three convs
    assert [n.op_type for n in branches["else_branch"].node] == ["Constant"]
    assert sum(n.op_type == "Conv" for n in _all_nodes(model.graph)) == 3  # nothing of the mask path elsewhere


def test_rewrite_keeps_outputs_with_and_without_mask(tiny_model, tmp_path):
    """Same outputs as the ungated graph, for clicks without a mask (else-branch) and with one (then-branch)."""
    from pocketsam.export.graphs import DecoderGraph
    from pocketsam.export.onnx.export import export_onnx

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


# --- the image cache (spec.DECODER_CACHED) ----------------------------------------------------------------------


def _traced_cached(tiny_model, tmp_path):
    """The fast decoder as the ONNX export traces it: the image cache as extra outputs."""
    from pocketsam.export import decoder_rewrite
    from pocketsam.export.graphs import DecoderGraph
    from pocketsam.export.onnx.export import export_onnx

    graph = spec.GraphSpec("decoder", spec.DECODER.inputs, spec.DECODER.outputs + spec.IMAGE_CACHE)
    path = export_onnx(DecoderGraph(tiny_model, fast=True, rewrite=decoder_rewrite.ONNXRUNTIME), graph,
                       tmp_path / "d.onnx", {})
    return onnx.load(str(path))


def _run_all(model: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {i.name: feeds[i.name] for i in sess.get_inputs()})))


def _no_cache() -> dict[str, np.ndarray]:
    from pocketsam.runtime.predictor import image_cache_feeds

    return image_cache_feeds(None)


def test_cache_rewrite_reads_back_what_it_computed(tiny_model, tmp_path):
    """use_image_cache 0: the traced graph's outputs and the cache, filled; 1: the same masks from the fed cache
    (bit for bit: the same kernels on the same values), the cache outputs empty. A mask input recomputes it."""
    from pocketsam.export.onnx.rewrite import cache_image_stage

    traced = _traced_cached(tiny_model, tmp_path)
    cached = cache_image_stage(skip_unused_mask_path(onnx.load_from_string(traced.SerializeToString())))
    assert [i.name for i in cached.graph.input] == spec.DECODER_CACHED.input_names
    assert sorted(o.name for o in cached.graph.output) == sorted(spec.DECODER_CACHED.output_names)
    click = _feeds(0.0, batch=1)
    want = _run_all(traced, click)
    first = _run_all(cached, {**click, **_no_cache()})
    for name, w in want.items():
        np.testing.assert_allclose(first[name], w, rtol=0, atol=1e-4, err_msg=name)
    assert first["image_tokens"].shape == (1, 4096, 256)
    from pocketsam.runtime.predictor import image_cache_feeds, kept_image_cache

    keep = image_cache_feeds(kept_image_cache(first))
    again = _run_all(cached, {**click, **keep})
    for name in spec.DECODER.output_names:
        np.testing.assert_array_equal(again[name], first[name], err_msg=name)
    assert all(again[t.name].shape == (0, *t.shape[1:]) for t in spec.IMAGE_CACHE)
    # a batch of 2 other clicks reads the batch-1 cache (broadcast)
    other = _feeds(0.0, batch=2, seed=3)
    other["image_embeddings"] = click["image_embeddings"]
    ref = _run_all(traced, other)
    got = _run_all(cached, {**other, **keep})
    for name in spec.DECODER.output_names:
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=1e-4, err_msg=name)
    # with a mask input the cache must be computed (the dense embedding differs): use_image_cache 0
    masked = _feeds(1.0, batch=2, seed=4)
    ref, got = _run_all(traced, masked), _run_all(cached, {**masked, **_no_cache()})
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=1e-4, err_msg=name)


def test_bundle_decoder_carries_the_image_cache(tiny_bundle):
    """ONNX bundles' decoders have the cache I/O: one If whose "cache given" branch reads the cached_* inputs and
    never the embedding or the mask (no mask gate, no projection of the image), the other the whole traced graph."""
    model = onnx.load(str(tiny_bundle / "decoder.onnx"))
    assert sorted(i.name for i in model.graph.input) == sorted(spec.DECODER_CACHED.input_names)
    (gate,) = [n for n in model.graph.node if n.op_type == "If"]
    branches = {a.name: a.g for a in gate.attribute}
    given = {i for n in branches["then_branch"].node for i in n.input}
    assert {spec.CACHED_INPUT_PREFIX + t.name for t in spec.IMAGE_CACHE} <= given
    assert not {"image_embeddings", "mask_input", "has_mask_input"} & given
    assert not any(n.op_type in ("If", "Conv") for n in branches["then_branch"].node)
    assert any(n.name == "skip_mask_path_without_mask_input" for n in branches["else_branch"].node)


def test_cache_rewrite_refuses_a_graph_without_cache_outputs(tiny_bundle):
    from pocketsam.export.onnx.rewrite import cache_image_stage

    plain = onnx.load(str(tiny_bundle / "decoder.onnx"))
    with pytest.raises(RewriteError, match="image cache: the graph has no outputs"):
        cache_image_stage(plain, cache=(spec.TensorSpec("no_such_output", (1,), "float32", ""),))


@pytest.mark.parametrize("precision", ["int8-dynamic", "int8-static"])
def test_int8_decoders_keep_the_image_cache_float(vit_t_bundles, precision):
    """The cache is computed once per image: the quantizers leave its computation float (onnx/quantize.py), and quantize
    the upscaling that every click runs."""
    from pocketsam.export.onnx.rewrite import image_stage_nodes

    model = onnx.load(str(vit_t_bundles[precision] / "decoder.onnx"))
    (gate,) = [n for n in model.graph.node if n.op_type == "If"]
    branches = {a.name: a.g for a in gate.attribute}
    computing = onnx.helper.make_model(branches["else_branch"])
    computing.graph.initializer.extend(model.graph.initializer)  # what the branch reads from the outer graph
    computing.graph.input.extend(model.graph.input)
    stage = image_stage_nodes(computing)
    ops = {n.name: n.op_type for n in computing.graph.node}
    int8 = {"MatMulInteger", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "QLinearMatMul"}
    assert stage and not {ops[n] for n in stage} & int8
    assert {n.op_type for n in branches["then_branch"].node} & int8  # the per-click image side is quantized
