"""Where a part's time goes, per operator: `pocketsam profile BUNDLE [--part encoder|decoder]`.

Speed work needs a profile before a guess. The two engines are profiled differently, because the Python wheels
expose different things:

- **LiteRT** (ai-edge-litert) has no op profiler in its Python Interpreter (the C++ `benchmark_model
  --enable_op_profiling` is not in the wheel), and XNNPACK runs the whole graph as one delegate node anyway. So each
  distinct operator (type + input/output shapes) is cut out of the flatbuffer into a one-op model — its constant
  inputs kept, its other inputs fed random data — timed alone under XNNPACK with the same thread count, and
  multiplied by how often it occurs. An isolated op misses what XNNPACK does across ops (fusing a PAD into the next
  conv, keeping a tensor in cache) and pays the per-invoke overhead alone, so the table carries the whole graph's
  measured median beside the sum (on MobileSAM the sum landed between -7 % and +25 % of it: read the shares).
- **ONNX Runtime** has a profiler: the session records each node's kernel time; the rows are its means per run.

No torch is needed: this reads the bundle's model files only.
"""

from __future__ import annotations

import collections
import copy
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pocketsam.runtime import spec
from pocketsam.runtime.bundle import Bundle, load_bundle
from pocketsam.runtime.errors import PocketSamError

from .harness import SETTLE_S, Stats, interleaved


class ProfileError(PocketSamError, RuntimeError):
    """A model could not be profiled (missing engine, unsupported format)."""


@dataclass(frozen=True)
class OpTime:
    """One distinct operator of a graph: its type, shapes, how often it occurs and what one occurrence costs."""

    op: str  # TFLite builtin name (FULLY_CONNECTED) or ONNX op_type (MatMul)
    shapes: str  # "in=(...) out=(...)"; ONNX: the input shapes the profiler saw
    count: int
    ms_each: float  # TFLite: median of isolated runs; ONNX: mean kernel time per occurrence per run

    @property
    def total_ms(self) -> float:
        return self.ms_each * self.count


@dataclass
class Profile:
    """A per-operator latency profile of one model file."""

    path: str
    engine: str  # "litert" or "onnxruntime"
    threads: int
    graph_ms: float  # the whole graph's median latency, measured the usual way (for comparison with the sum)
    rows: list[OpTime] = field(default_factory=list)

    @property
    def total_ms(self) -> float:
        return float(sum(r.total_ms for r in self.rows))

    def by_type(self) -> list[tuple[str, float, int]]:
        """(op type, total ms, occurrences), most expensive first."""
        ms: dict[str, float] = collections.defaultdict(float)
        n: dict[str, int] = collections.defaultdict(int)
        for r in self.rows:
            ms[r.op] += r.total_ms
            n[r.op] += r.count
        return sorted(((k, ms[k], n[k]) for k in ms), key=lambda t: -t[1])

    def table(self, top: int = 25) -> str:
        """Text: totals per operator type, then the `top` most expensive distinct operators."""
        total = self.total_ms or 1.0
        how = ("sum of isolated ops" if self.engine == "litert" else "sum of kernel times")
        lines = [f"{self.path} ({self.engine}, {self.threads} threads): whole graph {self.graph_ms:.1f} ms, "
                 f"{how} {self.total_ms:.1f} ms", "", f"{'op type':<22}{'ms':>9}{'share':>8}{'count':>7}"]
        lines += [f"{op:<22}{ms:9.1f}{100 * ms / total:7.1f}%{n:7d}" for op, ms, n in self.by_type()]
        lines += ["", f"{'ms':>9}  {'count x ms':>14}  op and shapes"]
        for r in sorted(self.rows, key=lambda r: -r.total_ms)[:top]:
            lines.append(f"{r.total_ms:9.2f}  {r.count:4d} x {r.ms_each:7.3f}  {r.op} {r.shapes}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        by_type = [{"op": op, "ms": ms, "count": n} for op, ms, n in self.by_type()]
        return {"path": self.path, "engine": self.engine, "threads": self.threads, "graph_ms": self.graph_ms,
                "total_ms": self.total_ms, "by_type": by_type,
                "rows": [{**asdict(r), "total_ms": r.total_ms} for r in self.rows]}


def _median_ms(fn: Callable[[], object], runs: int, settle_s: float = 0.0) -> float:
    """Median ms of `fn` after one warm-up call (allocations, XNNPACK weight packing): the harness's timing loop.
    The whole graph gets the harness's settling pause; isolated ops, timed alone and back to back, get none."""
    return Stats.of(interleaved({"fn": fn}, warmup=1, runs=runs, settle_s=settle_s)["fn"]).median_ms


# --- LiteRT: one-op models ---------------------------------------------------------------------------------------

def _one_op_model(model: Any, sg: Any, op: Any) -> bytes:
    """A .tflite holding only `op` of subgraph `sg`: its constant inputs kept, its other inputs made graph inputs."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    m = schema.ModelT()
    m.version = model.version
    m.operatorCodes = model.operatorCodes
    m.buffers = [schema.BufferT()]  # buffer 0: the empty buffer of non-constant tensors
    sub = schema.SubGraphT()
    sub.tensors, remap = [], {}

    def add(i: int) -> int:
        if i < 0 or i in remap:  # -1: an omitted optional input
            return remap.get(i, i)
        t = copy.copy(sg.tensors[i])
        data = model.buffers[t.buffer].data
        if data is not None and len(data):
            m.buffers.append(model.buffers[t.buffer])
            t.buffer = len(m.buffers) - 1
        else:
            t.buffer = 0
        sub.tensors.append(t)
        remap[i] = len(sub.tensors) - 1
        return remap[i]

    one = copy.copy(op)
    one.inputs = [add(i) for i in op.inputs]
    one.outputs = [add(i) for i in op.outputs]
    sub.inputs = [remap[i] for i in op.inputs if i >= 0 and sub.tensors[remap[i]].buffer == 0]
    sub.outputs = list(one.outputs)
    sub.operators = [one]
    m.subgraphs = [sub]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def _random_feed(interpreter: Any, rng: np.random.Generator) -> None:
    for d in interpreter.get_input_details():
        dtype = np.dtype(d["dtype"])
        if dtype.kind == "f":
            x = rng.uniform(0.0, 2.0, d["shape"]).astype(dtype)  # positive: RSQRT, LOG stay finite
        else:
            x = np.zeros(d["shape"], dtype)  # indices, shapes, flags: 0 is always in range
        interpreter.set_tensor(d["index"], x)


def _litert_interpreter(model_path: str | None, content: bytes | None, threads: int) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise ProfileError("profiling a .tflite needs ai-edge-litert (pip install 'pocketsam[tflite]')") from e
    it = Interpreter(model_path=model_path, model_content=content, num_threads=threads)
    it.allocate_tensors()
    return it


def profile_tflite(path: str | Path, threads: int = 2, runs: int = 5, signature_subgraph: int = 0) -> Profile:
    """Per-operator profile of a .tflite under XNNPACK (see the module docstring for the method)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    path = Path(path)
    rng = np.random.default_rng(0)
    whole = _litert_interpreter(str(path), None, threads)
    _random_feed(whole, rng)
    graph_ms = _median_ms(whole.invoke, runs, settle_s=SETTLE_S)
    del whole

    model = flatbuffer_utils.read_model(str(path))
    sg = model.subgraphs[signature_subgraph]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    groups: dict[tuple, list[Any]] = {}
    for op in sg.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        shapes = tuple(tuple(int(s) for s in sg.tensors[i].shape) if i >= 0 else None for i in op.inputs)
        out = tuple(int(s) for s in sg.tensors[op.outputs[0]].shape) if len(op.outputs) else ()
        groups.setdefault((name, shapes, out), []).append(op)
    rows = []
    for (name, shapes, out), ops in groups.items():
        one = _litert_interpreter(None, _one_op_model(model, sg, ops[0]), threads)
        _random_feed(one, rng)
        ms = _median_ms(one.invoke, runs)
        ins = ",".join("-" if s is None else str(s).replace(" ", "") for s in shapes)
        rows.append(OpTime(name, f"in={ins} out={str(out).replace(' ', '')}", len(ops), ms))
    return Profile(str(path), "litert", threads, graph_ms, rows)


# --- ONNX Runtime: its own profiler ------------------------------------------------------------------------------


def sample_feeds(graph: spec.GraphSpec, points: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of one call of `graph` by spec name (batch 1; a click + a pad point for the decoder)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in graph.inputs:
        shape = t.concrete_shape(batch=1, num_points=points)
        feeds[t.name] = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    if "image" in feeds:
        feeds["image"] *= 255.0
    if "point_coords" in feeds:
        feeds["point_coords"] *= float(spec.IMAGE_SIZE)
    if "point_labels" in feeds:
        labels = np.full(feeds["point_labels"].shape, float(spec.LABEL_PAD), np.float32)
        labels[:, 0] = 1.0
        feeds["point_labels"] = labels
    for name in ("mask_input", "has_mask_input"):
        if name in feeds:
            feeds[name][:] = 0.0
    return feeds


# Their kernel time includes the nodes of their branches, which the profiler reports one by one as well.
_CONTROL_FLOW = ("If", "Loop", "Scan")


def _with_image_cache(sess: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`feeds` for a decoder with the image cache (spec.DECODER_CACHED) as every click but an image's first
    runs it: the cache computed by one call without it, then fed back."""
    from pocketsam.runtime.predictor import image_cache_feeds, kept_image_cache

    names = [t.name for t in spec.IMAGE_CACHE]
    computed = dict(zip(names, sess.run(names, {**feeds, **image_cache_feeds(None)})))
    return {**feeds, **image_cache_feeds(kept_image_cache(computed))}


def profile_onnx(path: str | Path, graph: spec.GraphSpec, threads: int = 2, runs: int = 5,
                 points: int = 2) -> Profile:
    """Per-node kernel times of an .onnx from onnxruntime's profiler, grouped by (op type, input shapes)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ProfileError("profiling an .onnx needs onnxruntime (pip install 'pocketsam[onnx]')") from e
    path = Path(path)
    from pocketsam.runtime.backends.ort import session_options

    feeds = sample_feeds(graph, points)
    sess = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    if spec.has_image_cache([i.name for i in sess.get_inputs()]):
        feeds = _with_image_cache(sess, feeds)
    graph_ms = _median_ms(lambda: sess.run(None, feeds), runs, settle_s=SETTLE_S)
    with tempfile.TemporaryDirectory() as tmp:
        opts = session_options(threads)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        prof = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):  # the first is a warm-up, dropped below
            prof.run(None, feeds)
        events = json.loads(Path(prof.end_profiling()).read_text())
    durations: dict[str, list[float]] = collections.defaultdict(list)  # node -> kernel ms per run, in order
    kind: dict[str, tuple[str, str]] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        node, args = e["name"][: -len("_kernel_time")], e.get("args", {})
        if args.get("op_name") in _CONTROL_FLOW:
            continue
        durations[node].append(e["dur"] / 1e3)
        shapes = ",".join(str(list(d.values())[0]).replace(" ", "") for d in args.get("input_type_shape", []))
        kind[node] = (args.get("op_name", "?"), f"in={shapes}")
    groups: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for node, durs in durations.items():
        groups[kind[node]].append(float(np.mean(durs[1:] or durs)))
    rows = [OpTime(op, shapes, len(means), float(np.mean(means))) for (op, shapes), means in groups.items()]
    return Profile(str(path), "onnxruntime", threads, graph_ms, rows)


def profile_bundle(root: str | Path, part: str = "encoder", threads: int = 2, runs: int = 5) -> Profile:
    """Profile one part of a bundle folder (TFLite or ONNX)."""
    bundle: Bundle = load_bundle(root)
    if part not in ("encoder", "decoder"):
        raise ProfileError(f"unknown part {part!r} (encoder or decoder)")
    path = bundle.part(part).path
    if bundle.format == "tflite":
        return profile_tflite(path, threads, runs)
    if bundle.format == "onnx":
        graph = spec.ENCODER if part == "encoder" else spec.DECODER
        return profile_onnx(path, graph, threads, runs, points=bundle.decoder_points or 2)
    raise ProfileError(f"profiling {bundle.format} bundles is not supported here (tflite and onnx are)")
