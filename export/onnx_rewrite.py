"""Rewrites of exported ONNX graphs that a traced torch graph cannot express.

`skip_unused_mask_path`: segment-anything's eager `PromptEncoder` runs `mask_downscaling` only when a mask prompt
is given; a traced decoder (SamOnnxModel's design, and ours) has no control flow, so it runs the mask convolutions
on every click and multiplies the result by `has_mask_input = 0`. This wraps them in an ONNX `If` on
`max(has_mask_input) > 0` whose else-branch is a zero, so a click without a mask pays nothing for them (~3 ms of
~40 in onnxruntime here) and the outputs are unchanged: the graph computes `has * T + (1 - has) * no_mask`, and
with every `has` 0 the value of T is multiplied by 0 either way.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from pocketsam.runtime.errors import PocketSamError


class RewriteError(PocketSamError, RuntimeError):
    """A graph does not have the structure a rewrite relies on (the export changed: fix the rewrite)."""


def _toposort(graph: onnx.GraphProto) -> None:
    """Sort graph.node topologically, in place (the fp16 converter appends its input Casts at the end)."""
    ready = {i.name for i in graph.initializer} | {i.name for i in graph.input} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise RewriteError(f"graph has a cycle or reads undefined values at {rest[0].name}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _mask_only_nodes(graph: onnx.GraphProto, source: str) -> list[onnx.NodeProto]:
    """Nodes computed from `source` and static values only (initializers, constants, and nodes of those alone,
    such as an fp16 export's Casts of weights), in the graph's topological order."""
    derived = {source}
    static = {i.name for i in graph.initializer}
    picked = []
    for node in graph.node:  # topologically sorted first
        inputs = [i for i in node.input if i]
        if all(i in static for i in inputs):
            static.update(node.output)
        elif all(i in derived or i in static for i in inputs):
            picked.append(node)
            derived.update(node.output)
    return picked


def skip_unused_mask_path(model: onnx.ModelProto, mask_input: str = "mask_input",
                          has_mask_input: str = "has_mask_input") -> onnx.ModelProto:
    """Return `model` with the computation that depends only on `mask_input` inside an `If` (see module doc).

    Raises RewriteError unless that computation has exactly one output used elsewhere, of a known element type.
    """
    graph = model.graph
    _toposort(graph)
    moved = _mask_only_nodes(graph, mask_input)
    moved_ids = {id(n) for n in moved}
    produced = {o for n in moved for o in n.output}
    outside = [n for n in graph.node if id(n) not in moved_ids]
    used = {i for n in outside for i in n.input} | {o.name for o in graph.output}
    boundary = sorted(produced & used)
    if len(moved) < 2 or len(boundary) != 1:
        raise RewriteError(f"mask path: expected one tensor leaving {len(moved)} mask-only nodes, got {boundary}")
    (result,) = boundary
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    elem = types.get(result)
    if not elem:
        raise RewriteError(f"mask path: no element type inferred for {result}")
    zero = numpy_helper.from_array(np.zeros((1, 1, 1, 1), dtype=helper.tensor_dtype_to_np_dtype(elem)))
    then_branch = helper.make_graph(
        nodes=moved,  # a branch reads the outer graph's initializers, constants and inputs by name
        name="mask_given", inputs=[], outputs=[helper.make_tensor_value_info(result, elem, None)])
    else_branch = helper.make_graph(
        nodes=[helper.make_node("Constant", [], [result + "_skipped"], value=zero)],
        name="no_mask", inputs=[], outputs=[helper.make_tensor_value_info(result + "_skipped", elem, None)])
    has_max, cond = has_mask_input + "_max", has_mask_input + "_any"
    zero_f = helper.make_tensor(has_mask_input + "_zero", onnx.TensorProto.FLOAT, [], [0.0])
    gate = [
        helper.make_node("ReduceMax", [has_mask_input], [has_max], keepdims=0),
        helper.make_node("Constant", [], [zero_f.name], value=zero_f),
        helper.make_node("Greater", [has_max, zero_f.name], [cond]),
        helper.make_node("If", [cond], [result], then_branch=then_branch, else_branch=else_branch,
                         name="skip_mask_path_without_mask_input"),
    ]
    # The gate goes where `result` was produced: everything the branch reads is defined before it, everything
    # reading `result` after it, so the node list stays topologically sorted.
    at = next(i for i, n in enumerate(graph.node) if result in n.output)
    new_nodes = [n for n in graph.node[:at] if id(n) not in moved_ids] + gate + [
        n for n in graph.node[at:] if id(n) not in moved_ids]
    del graph.node[:]
    graph.node.extend(new_nodes)
    # Shapes recorded by earlier shape inference (the quantizers' pre-processing) assume T's full shape; engines
    # would plan buffers by them. Drop them: onnxruntime infers shapes again at load.
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return model
