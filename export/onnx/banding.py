"""Encoder rewrites that bound onnxruntime's peak memory: the work on TinyViT's two largest activation maps is done
in pieces by an ONNX `Loop`, so only one piece's tensors are alive at a time.

`band_stem`: the nodes from the image to the third stride-2 convolution (normalization, patch embedding, the two
MBConv blocks at 256x256 and PatchMerging's depthwise convolution, whose 64 MiB maps set the peak) run in `bands`
horizontal bands of their output rows. Each band reads its input rows plus a halo as deep as the receptive field
(derived from the convolutions' kernels, strides and pads), and the rows the halo makes wrong (those a band edge
inside the image pads with zeros) are cropped away; at the image's own edges a band pads as the whole-image graph
does. `chunk_token_mlps`: each per-token MLP (LayerNorm, fc1, GELU, fc2, the residual add) over at least
`min_tokens` tokens runs over `chunks` slices of its tokens, which needs no halo.

Outputs equal the whole-image graph's to float rounding (a convolution over fewer rows may sum in another order).
Why a Loop: onnxruntime runs a Loop's iterations one after another and frees an iteration's tensors before the
next; the same bands written side by side in one graph were scheduled in any order and the peak did not fall
(docs/performance.md, section 8.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .rewrite import RewriteError, _inputs, _toposort

# Measured on the fp32 vit_t encoder (docs/performance.md, section 8.1.1): 4 bands of the stem and 2 chunks of
# the two 16384-token MLPs give the lowest peak; more pieces only add Loop iterations (and the stem's halo rows).
STEM_BANDS = 4
MLP_CHUNKS = 2
MLP_MIN_TOKENS = 8192

# Ops that compute each output element from the same element (or the same row) of their inputs: a region of them
# can be cut along rows. Binary ones may read a constant only if it does not vary along the cut axis.
_ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Erf", "Gelu", "Relu", "Sigmoid", "Tanh", "Cast", "Identity",
                          "QuantizeLinear", "DequantizeLinear"})


@dataclass(frozen=True)
class Piece:
    """One iteration of a Loop over slices of `axis`: read source[start:end], keep result[crop:crop + length]."""

    start: int
    end: int
    crop: int


# Ops whose output has their first input's shape (a weight's DequantizeLinear, a Cast of a constant).
_SHAPE_KEEPING = frozenset({"Cast", "Identity", "QuantizeLinear", "DequantizeLinear"})


def _constant_shapes(graph: onnx.GraphProto) -> dict[str, tuple[int, ...] | None]:
    """{name: shape, or None where it is not known here} of the initializers, Constant outputs, and values computed
    from those alone."""
    shapes: dict[str, tuple[int, ...] | None] = {i.name: tuple(i.dims) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            shapes[node.output[0]] = tuple(value.dims) if value is not None else None
        elif node.input and all(not i or i in shapes for i in node.input):
            for o in node.output:
                shapes[o] = shapes[node.input[0]] if node.op_type in _SHAPE_KEEPING else None
    return shapes


def _invariant_along(shape: tuple[int, ...] | None, axis_from_end: int) -> bool:
    """Whether a constant of `shape`, broadcast against a tensor, is the same for every index of that tensor's
    axis `axis_from_end` (counted from the last axis, -1). An unknown shape is not."""
    return shape is not None and (len(shape) < -axis_from_end or shape[axis_from_end] == 1)


def _value_types(model: onnx.ModelProto) -> dict[str, tuple[int, list[int]]]:
    """{value name: (onnx element type, shape with 0 for unknown dims)} by onnx's shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    return {v.name: (v.type.tensor_type.elem_type, [d.dim_value for d in v.type.tensor_type.shape.dim])
            for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}


def _read_outside(graph: onnx.GraphProto, nodes: Sequence[onnx.NodeProto]) -> set[str]:
    """Values that graph's other top-level nodes (their subgraphs included) or its outputs read."""
    ids = {id(n) for n in nodes}
    return {i for n in graph.node if id(n) not in ids for i in _inputs(n)} | {o.name for o in graph.output}


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _loop(graph: onnx.GraphProto, nodes: Sequence[onnx.NodeProto], source: str, target: str, elem: int, rank: int,
          axis: int, pieces: Sequence[Piece], length: int, name: str) -> list[onnx.NodeProto]:
    """Nodes that compute `target` (of onnx element type `elem` and rank `rank`) as `nodes` did, in a Loop over
    `pieces` of `source`'s `axis`, taking `length` rows of that axis from each piece. Moves the initializers only
    `nodes` read into the Loop's body and adds its tables to graph.initializer."""
    if axis != rank - 2:
        raise RewriteError(f"{name}: a loop joins pieces of the last axis but one (axis {axis} of rank {rank})")
    p = f"{name}/"

    def table(key: str, column: Iterable[int]) -> str:
        graph.initializer.append(numpy_helper.from_array(np.array([[v] for v in column], np.int64), p + key))
        return p + key

    starts, ends = table("starts", (x.start for x in pieces)), table("ends", (x.end for x in pieces))
    crops, crop_ends = table("crops", (x.crop for x in pieces)), table("crop_ends", (x.crop + length for x in pieces))
    graph.initializer.extend([
        numpy_helper.from_array(np.array([axis], np.int64), p + "axis"),
        numpy_helper.from_array(np.array(len(pieces), np.int64), p + "trips"),
        numpy_helper.from_array(np.array(True), p + "true"),
        # [n, d0, ..., d_axis, last] -> (perm) [d0, ..., n, d_axis, last] -> [d0, ..., n * length, last]. Not the
        # static shape: with it (shape inference then goes on past the Loop) onnxruntime's optimizer rewrote the
        # rest of the graph, and the encoder's peak rose from +65 to +151 MiB (docs/performance.md, section 8.1.1).
        numpy_helper.from_array(np.array([0] * axis + [len(pieces) * length, -1], np.int64), p + "joined_shape"),
    ])
    body = [helper.make_node("Gather", [t, p + "i"], [t + "/i"]) for t in (starts, ends, crops, crop_ends)]
    body.append(helper.make_node("Slice", [source, starts + "/i", ends + "/i", p + "axis"], [p + "piece"]))
    for node in nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        for k, x in enumerate(copy.input):
            if x == source:
                copy.input[k] = p + "piece"
        body.append(copy)
    body += [helper.make_node("Slice", [target, crops + "/i", crop_ends + "/i", p + "axis"], [p + "kept"]),
             helper.make_node("Identity", [p + "cond"], [p + "cond_out"])]
    loop_body = helper.make_graph(
        body, name,
        [helper.make_tensor_value_info(p + "i", onnx.TensorProto.INT64, []),
         helper.make_tensor_value_info(p + "cond", onnx.TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(p + "cond_out", onnx.TensorProto.BOOL, []),
         helper.make_tensor_value_info(p + "kept", elem, None)],
        _own_initializers(graph, nodes))
    perm = [*range(1, axis + 1), 0, *range(axis + 1, rank + 1)]
    return [helper.make_node("Loop", [p + "trips", p + "true"], [p + "stack"], body=loop_body, name=name),
            helper.make_node("Transpose", [p + "stack"], [p + "stack_t"], perm=perm),
            helper.make_node("Reshape", [p + "stack_t", p + "joined_shape"], [target])]


def _own_initializers(graph: onnx.GraphProto, nodes: Sequence[onnx.NodeProto]) -> list[onnx.TensorProto]:
    """Remove from graph.initializer, and return, the initializers that only `nodes` read: they move into the Loop
    body. onnxruntime looks for a Conv's weights among its own graph's initializers only, not the outer scope's,
    to run the Conv in its blocked NCHWc layout (without it the stem's bands ran 2.3x slower, in plain NCHW)."""
    read_here, read_elsewhere = {i for n in nodes for i in _inputs(n)}, _read_outside(graph, nodes)
    moving = [t for t in graph.initializer if t.name in read_here and t.name not in read_elsewhere]
    names = {t.name for t in moving}
    kept = [t for t in graph.initializer if t.name not in names]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return moving


def _replace(graph: onnx.GraphProto, moved: Sequence[onnx.NodeProto], loop: Sequence[onnx.NodeProto]) -> None:
    """Put `loop` where the first of `moved` was, and drop `moved` (all top-level nodes of graph)."""
    ids = {id(n) for n in moved}
    first = next(k for k, n in enumerate(graph.node) if id(n) in ids)
    nodes = [*graph.node[:first], *loop, *(n for n in graph.node[first:] if id(n) not in ids)]
    del graph.node[:]
    graph.node.extend(nodes)


def _leaks(graph: onnx.GraphProto, moved: Sequence[onnx.NodeProto], target: str) -> list[str]:
    """Values computed by `moved` that a node outside it, or a graph output, reads (other than `target`)."""
    produced = {o for n in moved for o in n.output}
    return sorted((produced & _read_outside(graph, moved)) - {target})


# --- the stem, in bands of rows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reach:
    """Row geometry of a tensor computed from the image: its row y depends on image rows
    [stride * y - up, stride * y + down]."""

    stride: int
    up: int
    down: int

    def conv(self, kernel: int, stride: int, pad_top: int) -> "Reach":
        """After a convolution over rows (dilation 1): its row y reads rows stride * y - pad_top + [0, kernel)."""
        return Reach(self.stride * stride, self.stride * pad_top + self.up,
                     self.stride * (kernel - 1 - pad_top) + self.down)

    @staticmethod
    def union(reaches: Sequence["Reach"]) -> "Reach":
        """Of an elementwise op over several such tensors: the widest reach (their strides must agree)."""
        if len({r.stride for r in reaches}) != 1:
            raise RewriteError(f"stem bands: an op joins tensors of different strides {reaches}")
        return Reach(reaches[0].stride, max(r.up for r in reaches), max(r.down for r in reaches))


def _conv_rows(node: onnx.NodeProto) -> tuple[int, int, int] | None:
    """(kernel, stride, top pad) of a 2-D Conv along rows, or None for one this geometry does not describe
    (dilated, auto-padded, not 2-D)."""
    a = _attrs(node)
    kernel, strides, pads = a.get("kernel_shape", [1, 1]), a.get("strides", [1, 1]), a.get("pads", [0] * 4)
    if len(kernel) != 2 or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") \
            or any(d != 1 for d in a.get("dilations", [1, 1])):
        return None
    return kernel[0], strides[0], pads[0]


def stem_region(graph: onnx.GraphProto, image: str, stride2_convs: int = 3,
                ) -> tuple[list[onnx.NodeProto], str, Reach]:
    """(the nodes from `image` to the `stride2_convs`-th stride-2 Conv, in order; that Conv's output; its Reach).

    Raises RewriteError if an op on the way is not a Conv or an elementwise op with row-invariant constants."""
    constants = _constant_shapes(graph)
    reach: dict[str, Reach] = {image: Reach(1, 0, 0)}
    moved: list[onnx.NodeProto] = []
    seen = 0
    for node in graph.node:
        derived = [i for i in node.input if i in reach]
        if not derived:
            continue
        others = [i for i in node.input if i and i not in reach]
        if node.op_type == "Conv":
            rows = _conv_rows(node)
            if rows is None or node.input[0] not in reach or any(o not in constants for o in others):
                raise RewriteError(f"stem bands: Conv {node.name!r} is not a 2-D convolution of the image's rows "
                                   "by constant weights")
            out = reach[node.input[0]].conv(*rows)
            seen += rows[1] == 2
        elif node.op_type in _ELEMENTWISE and all(o in constants and _invariant_along(constants[o], -2)
                                                  for o in others):
            out = Reach.union([reach[i] for i in derived])
        else:
            raise RewriteError(f"stem bands: {node.op_type} {node.name!r} cannot be cut into bands of rows")
        moved.append(node)
        for o in node.output:
            reach[o] = out
        if seen == stride2_convs:
            return moved, node.output[0], out
    raise RewriteError(f"stem bands: the graph has fewer than {stride2_convs} stride-2 convolutions")


def stem_pieces(reach: Reach, size: int, bands: int) -> tuple[list[Piece], int]:
    """(the pieces of image rows that compute `bands` equal bands of output rows; rows per band). The halo is the
    receptive field's depth rounded up to the stride, so every piece starts on the stride grid."""
    rows = size // reach.stride
    if size % reach.stride or rows % bands:
        raise RewriteError(f"stem bands: {size} image rows at stride {reach.stride} do not split into {bands} bands")
    per_band = rows // bands
    halo = -(-max(reach.up, reach.down - (reach.stride - 1)) // reach.stride) * reach.stride
    pieces = []
    for b in range(bands):
        first = b * per_band * reach.stride  # image row of the band's first output row
        start = max(0, first - halo)
        end = min(size, first + per_band * reach.stride + halo)
        pieces.append(Piece(start, end, (first - start) // reach.stride))
    return pieces, per_band


def band_stem(model: onnx.ModelProto, bands: int = STEM_BANDS, image: str = "image") -> list[Piece]:
    """Rewrite `model` in place so its stem runs in `bands` bands of rows (module doc); returns the bands' pieces
    of image rows. The image input must have a static NCHW shape."""
    graph = model.graph
    _toposort(graph)
    dims = [d.dim_value for d in next(i for i in graph.input if i.name == image).type.tensor_type.shape.dim]
    if len(dims) != 4 or not all(dims):
        raise RewriteError(f"stem bands: the input {image!r} has no static NCHW shape ({dims})")
    moved, target, reach = stem_region(graph, image)
    leaks = _leaks(graph, moved, target)
    if leaks:
        raise RewriteError(f"stem bands: the rest of the graph reads {leaks} of the stem")
    pieces, per_band = stem_pieces(reach, dims[2], bands)
    _replace(graph, moved, _loop(graph, moved, image, target, _value_types(model)[target][0], rank=4, axis=2,
                                 pieces=pieces, length=per_band, name="stem_bands"))
    _toposort(graph)
    del graph.value_info[:]  # shapes of values now inside a Loop body
    onnx.checker.check_model(model)
    return pieces


# --- per-token MLPs, in chunks of tokens ---------------------------------------------------------------------


def _token_reshape(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto], tokens: int) -> bool:
    """Whether a Reshape only merges or splits a batch of 1 with `tokens` rows ([1, T, C] <-> [T, C]; onnxruntime's
    quantizer writes MatMul + Add as Reshape, Gemm, Reshape), so that on a chunk it is the same with T = -1."""
    shape = initializers.get(node.input[1]) if len(node.input) > 1 else None
    if shape is None:
        return False
    dims = [int(d) for d in numpy_helper.to_array(shape)]
    return len(dims) in (2, 3) and dims[-2] == tokens and (len(dims) == 2 or dims[0] == 1)


def _token_region(graph: onnx.GraphProto, start: int, tokens: int, constants: dict[str, tuple[int, ...] | None],
                  ) -> tuple[list[onnx.NodeProto], str, str] | None:
    """(the per-token nodes from the LayerNormalization graph.node[start] over `tokens` rows on, its input, the
    value they give the rest of the graph), or None when that region is not an MLP (fewer than two products by
    constant matrices)."""
    norm = graph.node[start]
    source = norm.input[0]
    initializers = {t.name: t for t in graph.initializer}
    region, values = [norm], {*norm.output}
    for node in graph.node[start + 1:]:
        inputs = [i for i in node.input if i]
        if not any(i in values or i == source for i in inputs):
            continue
        others = [i for i in inputs if i not in values and i != source]
        if node.op_type in ("MatMul", "Gemm"):
            weight = constants.get(node.input[1], ())
            bias = constants.get(node.input[2], ()) if len(node.input) > 2 and node.input[2] else (0,)
            ok = (node.input[0] in values and weight is not None and len(weight) == 2 and bias is not None
                  and len(bias) == 1 and not _attrs(node).get("transA", 0))
        elif node.op_type == "Reshape":
            ok = node.input[0] in values and _token_reshape(node, initializers, tokens)
        else:
            ok = node.op_type in _ELEMENTWISE and all(o in constants and _invariant_along(constants[o], -2)
                                                      for o in others)
        if not ok:
            continue
        region.append(node)
        values.update(node.output)
    read = _read_outside(graph, region)
    # The region ends at the first of its values that the rest of the graph reads (the residual add's output;
    # per-token ops of the next block may have joined after it), and holds only what that value needs.
    output = next((o for n in region for o in n.output if o in read), None)
    needed, kept = {output}, []
    for node in reversed(region):
        if needed & set(node.output):
            kept.append(node)
            needed.update(node.input)
    if output is None or sum(n.op_type in ("MatMul", "Gemm") for n in kept) < 2:
        return None
    return kept[::-1], source, output


def _free_token_reshapes(graph: onnx.GraphProto, nodes: Sequence[onnx.NodeProto], tokens: int) -> None:
    """Point the Reshapes among `nodes` at copies of their shapes with -1 for `tokens`, so they fit any chunk."""
    initializers = {t.name: t for t in graph.initializer}
    replaced = set()
    for node in nodes:
        if node.op_type == "Reshape":
            dims = numpy_helper.to_array(initializers[node.input[1]]).copy()
            dims[-2] = -1
            name = f"{node.input[1]}/any_tokens"
            if name not in initializers:
                initializers[name] = numpy_helper.from_array(dims.astype(np.int64), name)
                graph.initializer.append(initializers[name])
            replaced.add(node.input[1])
            node.input[1] = name
    read = {i for n in graph.node for i in _inputs(n)}
    kept = [t for t in graph.initializer if t.name not in replaced - read]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def chunk_token_mlps(model: onnx.ModelProto, chunks: int = MLP_CHUNKS, min_tokens: int = MLP_MIN_TOKENS) -> int:
    """Rewrite `model` in place so every per-token MLP over [1, tokens, channels] with tokens >= min_tokens (and
    divisible by chunks) runs over `chunks` slices of its tokens (module doc). Returns how many were rewritten.
    Regions that hold an op other than LayerNormalization, MatMul or Gemm by a constant matrix, the Reshapes around
    a Gemm and elementwise ops (an int8-dynamic graph's DynamicQuantizeLinear, whose scale is a statistic of the
    whole tensor) are left whole."""
    types = _value_types(model)
    graph = model.graph
    _toposort(graph)
    done = 0
    k = 0
    while k < len(graph.node):
        node = graph.node[k]
        shape = types.get(node.input[0] if node.input else "", (0, []))[1]
        k += 1
        if node.op_type != "LayerNormalization" or _attrs(node).get("axis", -1) not in (-1, len(shape) - 1) \
                or len(shape) != 3 or shape[0] != 1 or shape[1] < min_tokens or shape[1] % chunks:
            continue
        found = _token_region(graph, k - 1, shape[1], _constant_shapes(graph))
        if found is None:
            continue
        moved, source, target = found
        if _leaks(graph, moved, target):
            continue
        _free_token_reshapes(graph, moved, shape[1])
        per = shape[1] // chunks
        pieces = [Piece(c * per, (c + 1) * per, 0) for c in range(chunks)]
        _replace(graph, moved, _loop(graph, moved, source, target, types[target][0], rank=3, axis=1,
                                     pieces=pieces, length=per, name=f"mlp_chunks_{done}"))
        done += 1
    _toposort(graph)
    del graph.value_info[:]  # shapes of values now inside a Loop body
    onnx.checker.check_model(model)
    return done


def bound_encoder_memory(model: onnx.ModelProto, stem_bands: int = STEM_BANDS, mlp_chunks: int = MLP_CHUNKS,
                         ) -> str:
    """Rewrite the encoder `model` in place: its large per-token MLPs in chunks, then its stem in bands (module
    doc). The MLPs go first because shape inference, which finds them, stops at a Loop's output. Returns what was
    done, for the export log."""
    mlps = chunk_token_mlps(model, mlp_chunks, MLP_MIN_TOKENS)
    pieces = band_stem(model, stem_bands)
    return f"stem in {len(pieces)} bands of rows, {mlps} MLPs in {mlp_chunks} chunks of tokens"
