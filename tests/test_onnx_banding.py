"""The encoder's Loop rewrites that bound onnxruntime's peak memory (export/onnx/banding.py): the stem in bands of
rows with a halo, the large per-token MLPs in chunks of tokens. Outputs must equal the whole graph's in every ONNX
precision; the geometry of the bands must cover each kept row's receptive field; graphs the rewrite cannot cut are
refused with a reason or left whole."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from pocketsam.export.onnx.banding import (
    MLP_CHUNKS,
    STEM_BANDS,
    Reach,
    band_stem,
    bound_encoder_memory,
    chunk_token_mlps,
    stem_pieces,
)
from pocketsam.export.onnx.rewrite import RewriteError
from pocketsam.runtime import spec
from pocketsam.runtime.image import load_image
from pocketsam.runtime.transforms import preprocess

ort = pytest.importorskip("onnxruntime")

PHOTO = Path(__file__).parent / "golden" / "images" / "chelsea.png"


def _loops(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "Loop"]


def _run(model: onnx.ModelProto, image: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": image})[0]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """chelsea as the encoder's input, 1x3x1024x1024 float32 (a real photo: edges of every band see content)."""
    return preprocess(load_image(PHOTO))[0]


@pytest.fixture(scope="module")
def tiny_encoders(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """The shrunk model's fast encoder graph as ONNX, whole (before the rewrite), in each ONNX precision."""
    from pocketsam.export.calibration import encoder_calibration
    from pocketsam.export.graphs import encoder_graph
    from pocketsam.export.onnx.export import export_onnx
    from pocketsam.export.onnx.quantize import quantize_onnx
    from pocketsam.export.onnx.recipes import ONNX_RECIPES, OnnxPrecision

    folder = tmp_path_factory.mktemp("banding")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp32 = export_onnx(encoder_graph(tiny_model, "fast"), spec.ENCODER, folder / "fp32.onnx", {"part": "encoder"})
    paths = {"fp32": fp32}
    for precision in (OnnxPrecision.FP16, OnnxPrecision.INT8_DYNAMIC):
        paths[precision.value] = quantize_onnx(fp32, folder / f"{precision.value}.onnx", ONNX_RECIPES[precision])
    static = OnnxPrecision.INT8_STATIC  # calibrated on the one photo: enough for a graph to compare against
    paths[static.value] = quantize_onnx(fp32, folder / f"{static.value}.onnx", ONNX_RECIPES[static],
                                        encoder_calibration([load_image(PHOTO)]))
    return paths


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8-dynamic", "int8-static"])
def test_banded_encoder_computes_what_the_whole_graph_does(tiny_encoders, photo, precision):
    whole = onnx.load(str(tiny_encoders[precision]))
    banded = onnx.ModelProto()
    banded.CopyFrom(whole)
    summary = bound_encoder_memory(banded)
    loops = _loops(banded)
    assert "stem_bands" in loops, summary
    # The shrunk model's one 128x128 stage block has a 16384-token MLP; int8-dynamic quantizes its activations
    # with one scale per tensor (DynamicQuantizeLinear), a statistic chunks would change, so it stays whole.
    # int8-static's quantizer wrote its products as Reshape, Gemm, Reshape, which are cut too.
    assert len(loops) == (1 if precision == "int8-dynamic" else 2), (summary, loops)
    want, got = _run(whole, photo), _run(banded, photo)
    if precision.startswith("int8"):
        # A float difference of 1e-6 before a QuantizeLinear (or int8-dynamic's DynamicQuantizeLinear) can move a
        # value to the next int8 step, so a piece that summed in another order differs from the whole graph by a
        # quantization step (0.065 of 4.8 was seen here while the bands' convolutions ran in another layout).
        # What must hold: the quantization error against fp32 is no worse.
        fp32 = _run(onnx.load(str(tiny_encoders["fp32"])), photo)
        errs = {name: (float(np.abs(v - fp32).max()), float(np.abs(v - fp32).mean()))
                for name, v in (("whole", want), ("banded", got))}
        print(f"{precision}: {summary}; error against fp32 (max, mean): {errs}")
        assert errs["banded"][0] <= 1.1 * errs["whole"][0] and errs["banded"][1] <= 1.05 * errs["whole"][1]
        return
    # fp32: a convolution over fewer rows may sum in another order (measured 0 here and 3e-6 on vit_t, whose
    # |embedding| <= 4.1); fp16 rounds each op's output to ~1e-3 of its value, so one reordered sum moves the result
    # by that much (measured 0.0098 of 4.8).
    tol = {"fp32": 2e-5, "fp16": 2e-2}[precision] * float(np.abs(want).max())
    err = float(np.abs(got - want).max())
    print(f"{precision}: {summary}; max |banded - whole| = {err:.3g} (tolerance {tol:.3g})")
    assert err <= tol


def test_the_upstream_shaped_encoder_graph_is_banded_too(tmp_path, tiny_model, photo):
    """`--encoder-graph reference` (the upstream-shaped graph) has the same stem and MLPs, in its own ops."""
    from pocketsam.export.graphs import encoder_graph
    from pocketsam.export.onnx.export import export_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_onnx(encoder_graph(tiny_model, "reference"), spec.ENCODER, tmp_path / "reference.onnx",
                           {"part": "encoder"})
    whole, banded = onnx.load(str(path)), onnx.load(str(path))
    bound_encoder_memory(banded)
    assert len(_loops(banded)) == 2
    want = _run(whole, photo)
    assert float(np.abs(_run(banded, photo) - want).max()) <= 2e-5 * float(np.abs(want).max())


def test_band_geometry_covers_each_kept_rows_receptive_field():
    for reach, size, bands in [(Reach(8, 15, 15), 1024, 4), (Reach(8, 15, 15), 1024, 8), (Reach(4, 11, 11), 1024, 2),
                               (Reach(2, 1, 1), 64, 4), (Reach(4, 3, 0), 32, 2)]:
        pieces, per_band = stem_pieces(reach, size, bands)
        assert per_band * bands * reach.stride == size
        for b, piece in enumerate(pieces):
            assert piece.start % reach.stride == 0  # on the stride grid: each level's rows line up with the whole's
            first, last = b * per_band, (b + 1) * per_band - 1  # output rows the band keeps
            assert piece.start + piece.crop * reach.stride == first * reach.stride
            # rows the kept outputs read lie inside the piece, or beyond the image, padded as the whole graph pads
            assert piece.start <= max(0, reach.stride * first - reach.up), (reach, b, piece)
            assert piece.end >= min(size, reach.stride * last + reach.down + 1), (reach, b, piece)


def test_band_counts_that_do_not_divide_the_rows_are_refused():
    with pytest.raises(RewriteError, match="do not split into 3 bands"):
        stem_pieces(Reach(8, 15, 15), 1024, 3)


def _graph(nodes, initializers, size: int, out_shape: list[int]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _conv(name: str, x: str, out: str, stride: int, channels: tuple[int, int] = (3, 3)) -> tuple[onnx.NodeProto, dict]:
    w = np.random.default_rng(len(name)).normal(0, 0.3, (channels[1], channels[0], 3, 3)).astype(np.float32)
    return (helper.make_node("Conv", [x, name + "_w"], [out], name=name, kernel_shape=[3, 3], strides=[stride] * 2,
                             pads=[1, 1, 1, 1]), {name + "_w": w})


def test_a_small_stem_is_banded_exactly():
    nodes, inits = [], {}
    x = "image"
    for k in range(3):
        node, w = _conv(f"c{k}", x, f"y{k}", 2)
        nodes += [node, helper.make_node("Tanh", [f"y{k}"], [f"t{k}"])]
        inits.update(w)
        x = f"t{k}"
    nodes.append(helper.make_node("Identity", [x], ["out"]))
    whole = _graph(nodes, inits, 64, [1, 3, 8, 8])
    banded = onnx.ModelProto()
    banded.CopyFrom(whole)
    pieces = band_stem(banded, bands=4)
    assert [(p.start, p.end) for p in pieces] == [(0, 24), (8, 40), (24, 56), (40, 64)]
    image = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(_run(banded, image), _run(whole, image), atol=1e-6)


def test_a_stem_with_an_op_that_mixes_rows_is_refused():
    node, w = _conv("c0", "image", "y0", 2)
    nodes = [node, helper.make_node("MaxPool", ["y0"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Identity", ["p"], ["out"])]
    with pytest.raises(RewriteError, match="MaxPool .* cannot be cut into bands of rows"):
        band_stem(_graph(nodes, w, 32, [1, 3, 8, 8]), bands=2)


def test_a_constant_that_varies_along_the_rows_is_refused():
    node, w = _conv("c0", "image", "y0", 2)
    ramp = np.arange(16, dtype=np.float32).reshape(1, 1, 16, 1)  # a per-row offset: not the same in every band
    nodes = [node, helper.make_node("Add", ["y0", "ramp"], ["out"])]
    with pytest.raises(RewriteError, match="Add .* cannot be cut"):
        band_stem(_graph(nodes, {**w, "ramp": ramp}, 32, [1, 3, 16, 16]), bands=2)


def test_mlps_over_few_tokens_are_left_whole(tiny_encoders):
    model = onnx.load(str(tiny_encoders["fp32"]))
    assert chunk_token_mlps(model, MLP_CHUNKS, min_tokens=10 ** 6) == 0
    assert _loops(model) == []


def test_defaults_are_what_the_export_applies(tiny_bundle):
    """The tiny bundle came through `pocketsam.export`: its encoder holds the stem Loop and the MLP Loop, with the
    default counts of pieces."""
    model = onnx.load(str(Path(tiny_bundle) / "encoder.onnx"))
    loops = {n.name: n for n in model.graph.node if n.op_type == "Loop"}
    assert set(loops) == {"stem_bands", "mlp_chunks_0"}
    trips = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("/trips")}
    assert int(trips["stem_bands/trips"]) == STEM_BANDS
    assert int(trips["mlp_chunks_0/trips"]) == MLP_CHUNKS


def test_no_encoder_pieces_exports_the_whole_graph(tmp_path):
    """`pocketsam export --no-encoder-pieces` (the option export_bundle passes on): no Loop in the encoder."""
    from pocketsam.export.bundle_writer import export_bundle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = export_bundle(tmp_path / "whole", config="tiny", progress=False, encoder_pieces=False)
    assert result.passed
    assert _loops(onnx.load(str(result.bundle.root / "encoder.onnx"))) == []
