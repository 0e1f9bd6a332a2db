"""Applying the ONNX recipes (`recipes.py`) with onnxruntime's quantizers.

`quantize_onnx` is the one function that reads a recipe.
Calibration follows onnxruntime's minimal protocol: an iterator of feed dicts, wrapped as a CalibrationDataReader.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import onnx

from pocketsam.runtime.spec import TensorSpec

from ..core import QuantizationError
from .recipes import OnnxPrecision, OnnxRecipe
from .rewrite import image_stage_nodes


# Sizes of the symbolic axes when counting rows: the smallest real prompt (one click + SAM's pad point).
_ROW_AXES = {"batch": 1, "num_points": 2}


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrite every Gemm with a constant weight as MatMul (+ Add for the bias), in place; returns how many.

    ONNX Runtime's dynamic quantizer has no integer Gemm (its registry quantizes MatMul, not Gemm), and the
    TorchScript exporter writes every Linear on a 2-D input as Gemm: without this rewrite an int8-dynamic export
    of this model quantizes nothing in the encoder and one node in the decoder.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes, count = [], 0
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        w = w.T if attrs.get("transB", 0) else w
        w_name = f"{node.input[1]}_matmul"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), w_name))
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(onnx.helper.make_node("MatMul", [node.input[0], w_name], [mm_out], name=f"{node.name}_MatMul"))
        if has_bias:
            nodes.append(onnx.helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=f"{node.name}_Add"))
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return count


def nodes_to_quantize(model: onnx.ModelProto, recipe: OnnxRecipe) -> list[str]:
    """Names of the nodes `recipe` quantizes: weighted nodes of its op types with >= min_rows activation rows."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    del fixed.graph.value_info[:]  # re-infer every shape from the fixed input sizes
    for inp in fixed.graph.input:
        for d in inp.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                d.dim_value = _ROW_AXES.get(d.dim_param, 1)
    inferred = SymbolicShapeInference.infer_shapes(fixed, auto_merge=True)
    shapes: dict[str, list[int]] = {}
    for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    weights = {i.name for i in model.graph.initializer}
    selected = []
    for node in model.graph.node:
        if node.op_type not in recipe.op_types or not any(i in weights for i in node.input):
            continue
        act = shapes.get(next((i for i in node.input if i not in weights), ""), [])
        if node.op_type == "Conv":  # NCHW: one row per output pixel
            rows = int(np.prod(act[2:])) if len(act) == 4 else 0
        else:  # MatMul/Gemm: every leading axis is a row
            rows = int(np.prod(act[:-1])) if act else 0
        if rows >= recipe.min_rows:
            selected.append(node.name)
    return selected


class _Reader:
    """onnxruntime's CalibrationDataReader over an iterator of feed dicts."""

    def __init__(self, feeds: Iterable[dict]) -> None:
        self._it: Iterator[dict] = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def __iter__(self):  # newer onnxruntime versions iterate the reader
        return iter(self.get_next, None)


def quantize_onnx(
    fp32_path: Path, out_path: Path, recipe: OnnxRecipe, calibration: Iterable[dict] | None = None,
    image_cache: Sequence[TensorSpec] = (),
) -> Path:
    """Write `fp32_path` quantized by `recipe` to `out_path` (fp32 is a copy). Metadata props are kept.

    `image_cache`: the decoder's image-cache outputs (`spec.IMAGE_CACHE`, a decoder traced with them): the nodes
    computing them run once per image, not per click, so int8 would cost accuracy and save nothing: they stay float
    (the cached first layer's three 4096-row projections; with them int8, decoder mask IoU fell 0.987 -> 0.984
    (int8-dynamic) and 0.982 -> 0.978 (int8-static) on the probe, docs/quantization.md)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = onnx.load(str(fp32_path))
    if recipe.precision is OnnxPrecision.FP32:
        onnx.save(src, str(out_path))
        return out_path
    if recipe.precision is OnnxPrecision.FP16:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # keep_io_types: the graph's I/O stays float32, so the runtime feeds every precision the same arrays.
        model = convert_float_to_float16(src, keep_io_types=True, disable_shape_infer=False)
        _copy_metadata(src, model)
        onnx.save(model, str(out_path))
        return out_path
    if recipe.calibrated and calibration is None:
        raise QuantizationError(f"{recipe.precision.value} needs calibration images")
    with tempfile.TemporaryDirectory() as tmp:
        # quant_pre_process (shape inference + graph cleanup) first: without it quantize_* fails on torch-exported
        # graphs with "Expected ... to be an initializer" (TOOLCHAIN.md).
        pre = Path(tmp) / "pre.onnx"
        source = fp32_path
        if recipe.precision is OnnxPrecision.INT8_DYNAMIC:
            rewritten = onnx.load(str(fp32_path))
            gemm_to_matmul(rewritten)
            source = Path(tmp) / "matmul.onnx"
            onnx.save(rewritten, str(source))
        # skip_optimization: the optimizer would fuse MatMul + Add back into Gemm
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=False,
                          skip_optimization=recipe.precision is OnnxPrecision.INT8_DYNAMIC)
        pre_model = onnx.load(str(pre))
        nodes = nodes_to_quantize(pre_model, recipe)
        if image_cache:
            once = image_stage_nodes(pre_model, image_cache)
            nodes = [n for n in nodes if n not in once]
        if not nodes:
            raise QuantizationError(f"{fp32_path.name}: no node matches the {recipe.precision.value} recipe")
        if recipe.precision is OnnxPrecision.INT8_DYNAMIC:
            quantize_dynamic(
                str(pre),
                str(out_path),
                op_types_to_quantize=list(recipe.op_types),
                nodes_to_quantize=nodes,
                per_channel=recipe.per_channel,
                weight_type=QuantType.QInt8,
            )
        else:
            quantize_static(
                str(pre),
                str(out_path),
                _Reader(calibration),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(recipe.op_types),
                nodes_to_quantize=nodes,
                per_channel=recipe.per_channel,
                # u8 activations x s8 weights: the combination x86 (VNNI) and Arm int8 kernels run fastest
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
    model = onnx.load(str(out_path))
    _copy_metadata(src, model)
    onnx.save(model, str(out_path))
    return out_path


def _copy_metadata(src: onnx.ModelProto, dst: onnx.ModelProto) -> None:
    have = {p.key for p in dst.metadata_props}
    for p in src.metadata_props:
        if p.key not in have:
            dst.metadata_props.add(key=p.key, value=p.value)
