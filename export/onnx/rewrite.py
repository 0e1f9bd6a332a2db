"""Rewrites of exported ONNX graphs that a traced torch graph cannot express.

`skip_unused_mask_path`: segment-anything's eager `PromptEncoder` runs `mask_downscaling` only when a mask prompt
is given; a traced decoder (SamOnnxModel's design, and ours) has no control flow, so it runs the mask convolutions
on every click and multiplies the result by `has_mask_input = 0`. This wraps them in an ONNX `If` on
`max(has_mask_input) > 0` whose else-branch is a zero, so a click without a mask pays nothing for them (a few
per cent of the decoder in onnxruntime) and the outputs are unchanged: the graph computes `has * T + (1 - has) * no_mask`, and
with every `has` 0 the value of T is multiplied by 0 either way.

`cache_image_stage`: a decoder traced with the image cache as extra outputs (`decoder_rewrite.ImageCache`) gets
inputs to take it back: the computation of the cache from the image embedding (and the mask input) goes into an
`If` on `use_image_cache`, whose other branch reads the `cached_*` inputs and returns empty cache outputs
(`spec.DECODER_CACHED`). Either branch feeds the rest of the graph the same values.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from pocketsam.runtime import spec

from ..core import ConversionError


class RewriteError(ConversionError):
    """A graph does not have the structure a rewrite relies on (the export changed: fix the rewrite)."""


def _implicit_inputs(node: onnx.NodeProto) -> set[str]:
    """Outer-scope values the subgraphs of `node` (an If's branches) read."""
    names: set[str] = set()
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            g = attr.g
            inner = {o for n in g.node for o in n.output} | {i.name for i in g.initializer} | {i.name for i in g.input}
            for n in g.node:
                names |= ({i for i in n.input if i} | _implicit_inputs(n)) - inner
            names |= {o.name for o in g.output} - inner
    return names


def _inputs(node: onnx.NodeProto) -> set[str]:
    return {i for i in node.input if i} | _implicit_inputs(node)


def _live(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """`nodes` without those whose outputs neither another of them nor `outputs` reads."""
    while True:
        read = outputs | {i for n in nodes for i in _inputs(n)}
        live = [n for n in nodes if any(o in read for o in n.output)]
        if len(live) == len(nodes):
            return live
        nodes = live


def _toposort(graph: onnx.GraphProto) -> None:
    """Sort graph.node topologically, in place (the fp16 converter appends its input Casts at the end)."""
    ready = {i.name for i in graph.initializer} | {i.name for i in graph.input} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in _inputs(node)):
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


def _image_stage(graph: onnx.GraphProto, names: Sequence[str], sources: Sequence[str],
                 ) -> tuple[list[onnx.NodeProto], dict[str, str]]:
    """(the nodes that compute the cache outputs `names` from `sources` and constants alone, in topological order;
    for each output, the value the rest of the graph reads of it). Raises RewriteError as `cache_image_stage`."""
    _toposort(graph)
    outputs = {o.name for o in graph.output}
    if not set(names) <= outputs:
        raise RewriteError(f"image cache: the graph has no outputs {sorted(set(names) - outputs)}")
    producer = {o: n for n in graph.node for o in n.output}
    # What the rest of the graph reads of each cache tensor: the output itself, or (fp16 graphs with float32 I/O)
    # the value its output Cast reads.
    readers = {name: [n for n in graph.node if name in _inputs(n)] for name in names}
    values = {}
    for name in names:
        node = producer.get(name)
        if readers[name]:
            values[name] = name
        elif node is not None and node.op_type == "Cast" and any(node.input[0] in _inputs(n) for n in graph.node
                                                                 if n is not node):
            values[name] = node.input[0]
        else:
            raise RewriteError(f"image cache: nothing in the graph reads {name}")
    # Nodes computed from the sources and constants alone, then those of them the cache needs.
    derived, static = set(sources), {i.name for i in graph.initializer}
    image_only = []
    for node in graph.node:
        inputs = _inputs(node)
        if inputs <= static:
            static.update(node.output)
        elif inputs <= derived | static:
            image_only.append(node)
            derived.update(node.output)
    wanted = set(names) | set(values.values())
    missing = sorted(w for w in wanted if w not in derived)
    if missing:
        raise RewriteError(f"image cache: {missing} are not computed from {list(sources)} alone")
    needed: set[str] = set(wanted)
    moved = []
    for node in reversed(image_only):
        if needed & set(node.output):
            moved.append(node)
            needed |= _inputs(node)
    moved.reverse()
    moved_ids = {id(n) for n in moved}
    produced = {o for n in moved for o in n.output}
    read_outside = {i for n in graph.node if id(n) not in moved_ids for i in _inputs(n)} | outputs
    leaks = sorted((produced & read_outside) - wanted)
    if leaks:
        raise RewriteError(f"image cache: the rest of the graph reads {leaks} of the cache's computation")
    return moved, values


_SOURCES = ("image_embeddings", "mask_input", "has_mask_input")


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Turn the top-level Constant nodes holding a tensor into initializers of the same name, in place."""
    keep = []
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and set(attrs) == {"value"}:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attrs["value"].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def image_stage_nodes(model: onnx.ModelProto, cache: Sequence[spec.TensorSpec] = spec.IMAGE_CACHE,
                      sources: Sequence[str] = _SOURCES) -> set[str]:
    """Names of the nodes that compute the image cache: work done once per image, which the quantizers leave
    float (int8 there would cost accuracy and make no click faster)."""
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    return {n.name for n in _image_stage(graph, [t.name for t in cache], sources)[0]}


def cache_image_stage(model: onnx.ModelProto, cache: Sequence[spec.TensorSpec] = spec.IMAGE_CACHE,
                      sources: Sequence[str] = _SOURCES,
                      flag: str = spec.USE_IMAGE_CACHE.name,
                      prefix: str = spec.CACHED_INPUT_PREFIX) -> onnx.ModelProto:
    """Return `model` (whose outputs include the `cache` tensors) with the cache computation inside an `If` on
    `flag` > 0.5 and inputs `prefix + name` for the cache (module doc).

    Raises RewriteError unless every cache output is computed from `sources` and constants alone and the rest of
    the graph reads nothing else of that computation.
    """
    graph = model.graph
    names = [t.name for t in cache]
    _constants_to_initializers(graph)  # both branches read them, without a copy each (the 4 MB positional encoding)
    moved, values = _image_stage(graph, names, sources)
    moved_ids = {id(n) for n in moved}
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)}
    float32 = onnx.TensorProto.FLOAT
    # Two branches of one If, each the whole decoder: "cache_given" reads the cached_* inputs where the rest of
    # the graph read the cache (so no copy of them is made) and returns empty cache outputs; "compute_cache" is the
    # traced graph as it was. Weights stay top-level initializers, which both branches read.
    rest = [n for n in graph.node if id(n) not in moved_ids]
    then_nodes, feeds_in = [], {}
    for t in cache:
        value, elem = values[t.name], types.get(values[t.name], float32)
        cached = prefix + t.name
        if elem != float32:
            then_nodes.append(helper.make_node("Cast", [cached], [cached + "/cast"], to=elem))
            cached += "/cast"
        feeds_in[value] = cached
        empty = np.zeros((0, *[d for d in t.shape if not isinstance(d, str)]), dtype=np.float32)
        then_nodes.append(helper.make_node("Constant", [], [t.name + "/empty"], value=numpy_helper.from_array(empty)))
    for node in rest:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        for i, x in enumerate(copy.input):
            copy.input[i] = feeds_in.get(x, x)
        then_nodes.append(copy)
    kept = [o for o in graph.output if o.name not in names]  # the masks and scores
    then_outs = [o.name for o in kept] + [t.name + "/empty" for t in cache]
    then_nodes = _live(then_nodes, set(then_outs))  # the constants only the cache's computation read
    else_outs = [o.name for o in kept] + names
    then_branch = helper.make_graph(then_nodes, "cache_given", [],
                                    [helper.make_tensor_value_info(n, float32, None) for n in then_outs])
    else_branch = helper.make_graph(list(graph.node), "compute_cache", [],
                                    [helper.make_tensor_value_info(n, float32, None) for n in else_outs])
    half = helper.make_tensor(flag + "_half", float32, [], [0.5])
    cond = flag + "_set"
    gate = [
        helper.make_node("Constant", [], [half.name], value=half),
        helper.make_node("Greater", [flag, half.name], [cond]),
        helper.make_node("If", [cond], [o.name for o in kept] + names, then_branch=then_branch,
                         else_branch=else_branch, name="image_cache"),
    ]
    del graph.node[:]
    graph.node.extend(gate)
    graph.input.extend([helper.make_tensor_value_info(prefix + t.name, float32, list(t.shape)) for t in cache])
    graph.input.append(helper.make_tensor_value_info(flag, float32, list(spec.USE_IMAGE_CACHE.shape)))
    for o in graph.output:  # the cache outputs are float32, batch free (empty when the cache was read)
        if o.name in names:
            o.CopyFrom(helper.make_tensor_value_info(o.name, float32, list(next(t for t in cache
                                                                                if t.name == o.name).shape)))
    _toposort(graph)
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return model
