"""What is inside a .tflite file, read from its flatbuffer without running it (no torch, no interpreter).

- `check_tflite_file`: a one-line BundleError for a file that is not a TFLite flatbuffer or is cut short, before
  any engine sees it (an interpreter given a truncated flatbuffer may read past its end).
- `read_tflite`: signatures, and per subgraph every operator with the dtypes of its activations and weights, so
  `pocketsam info` can say which ops run in integer, which keep float activations with int8 weights ("hybrid",
  dynamic-range quantization) and which stay float.
- `DELEGATE_SUPPORT`: the ops each mobile delegate is documented to take, so `info` marks the ones that would fall
  back to the CPU on a phone before the user gets there.

The schema comes from `ai_edge_litert.schema_py_generated` (ai-edge-litert ships it), falling back to the `tflite`
package's generated classes; both need only `flatbuffers`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BundleError, MissingEngineError

_IDENTIFIER = b"TFL3"  # bytes 4..8 of every TFLite flatbuffer
METADATA_PREFIX = "pocketsam."  # names of the metadata entries pocketsam stamps at export


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        try:
            import tflite as schema  # the `tflite` package: the same generated classes, one module per table
        except ImportError:
            raise MissingEngineError(
                "reading .tflite files needs ai-edge-litert (or the tflite package): pip install 'pocketsam[tflite]'"
            ) from None
    return schema


# --- delegate support -----------------------------------------------------------------------------------------
# GPU: the builtin ops `tflite::CheckGpuDelegateCompatibility` accepts (tensorflow/lite/tools/versioning/
# gpu_compatibility.cc, the checker the GPU delegate and TFLite's model analyzer use). Per-op conditions (e.g.
# SLICE/STRIDED_SLICE on 3-D or 4-D tensors only, MUL broadcasting one way only, CAST only bool->float) are not
# checked here: an op listed may still be refused for its shapes. Not listed, notably: GELU, SELECT(_V2), GATHER,
# BROADCAST_TO, CUMSUM, EMBEDDING_LOOKUP — they run on the CPU and split the GPU graph.
GPU_SUPPORTED = frozenset(
    """ABS ADD AVERAGE_POOL_2D BATCH_MATMUL CAST CONCATENATION CONV_2D COS DENSIFY DEPTHWISE_CONV_2D DEPTH_TO_SPACE
    DEQUANTIZE DIV ELU EQUAL EXP FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GREATER GREATER_EQUAL HARD_SWISH
    LEAKY_RELU LESS LESS_EQUAL LOG LOGISTIC LSTM MAXIMUM MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL PACK
    PAD POW PRELU QUANTIZE REDUCE_MAX REDUCE_MIN REDUCE_PROD RELU RELU6 RELU_N1_TO_1 RESHAPE RESIZE_BILINEAR
    RESIZE_NEAREST_NEIGHBOR RSQRT SIN SLICE SOFTMAX SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE
    STRIDED_SLICE SUB SUM TANH TILE TRANSPOSE TRANSPOSE_CONV""".split()
)

# NNAPI: the builtin ops the TFLite NNAPI delegate maps to an NNAPI operation (tensorflow/lite/delegates/nnapi/
# nnapi_delegate.cc, NNAPIDelegateKernel::Validate), with the lowest Android API level at which it does; checked
# case by case against tensorflow/tensorflow@acdcab50 (docs/tflite.md). Not there: GELU, BROADCAST_TO, SELECT_V2, and
# BATCH_MATMUL (later releases accept it only at NNAPI runtime feature level 6 and only when a target accelerator
# is named), COS (later releases: API 29). NNAPI is deprecated since Android 15; vendors' drivers may still refuse
# an op they do not implement, and per-op conditions (rank <= 4, constant shapes, types) are not checked here.
NNAPI_MIN_API: dict[str, int] = {
    **dict.fromkeys(
        "ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE EMBEDDING_LOOKUP "
        "FLOOR FULLY_CONNECTED HARD_SWISH HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D LOCAL_RESPONSE_NORMALIZATION "
        "LOGISTIC LSH_PROJECTION MAX_POOL_2D MUL RELU RELU6 RELU_N1_TO_1 RESHAPE RESIZE_BILINEAR RNN SOFTMAX "
        "SPACE_TO_DEPTH TANH".split(), 27),
    **dict.fromkeys(
        "BATCH_TO_SPACE_ND DIV LSTM MEAN PAD PADV2 SPACE_TO_BATCH_ND SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB "
        "SVDF TRANSPOSE".split(), 28),
    **dict.fromkeys(
        "ABS ARG_MAX ARG_MIN BIDIRECTIONAL_SEQUENCE_LSTM CAST EQUAL EXP EXPAND_DIMS GATHER GREATER GREATER_EQUAL "
        "LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOG_SOFTMAX MAXIMUM MINIMUM NEG "
        "NOT_EQUAL POW PRELU QUANTIZE REDUCE_ANY REDUCE_MAX REDUCE_MIN REDUCE_PROD RESIZE_NEAREST_NEIGHBOR RSQRT "
        "SELECT SIN SLICE SPLIT SQRT SUM TILE TOPK_V2 TRANSPOSE_CONV UNIDIRECTIONAL_SEQUENCE_LSTM "
        "UNIDIRECTIONAL_SEQUENCE_RNN".split(), 29),
    **dict.fromkeys("DENSIFY ELU FILL PACK SPLIT_V".split(), 30),
}
NNAPI_SUPPORTED = frozenset(NNAPI_MIN_API)

DELEGATE_SUPPORT: dict[str, frozenset[str]] = {"gpu": GPU_SUPPORTED, "nnapi": NNAPI_SUPPORTED}
DELEGATE_SOURCES = {
    "gpu": "tensorflow/lite/tools/versioning/gpu_compatibility.cc",
    "nnapi": "tensorflow/lite/delegates/nnapi/nnapi_delegate.cc (Validate)",
}

# Ops that only move or reshape data: their precision follows their input and is not worth reporting.
_LAYOUT_OPS = frozenset("RESHAPE TRANSPOSE SLICE STRIDED_SLICE CONCATENATION PACK UNPACK SPLIT SPLIT_V SQUEEZE "
                        "EXPAND_DIMS GATHER BROADCAST_TO PAD PADV2 TILE".split())


@dataclass
class OpInfo:
    """One operator: its builtin name and how it computes ("integer", "hybrid", "float" or "float16")."""

    name: str
    compute: str


@dataclass
class SubgraphInfo:
    name: str
    ops: list[OpInfo] = field(default_factory=list)

    def counts(self) -> Counter:
        return Counter(op.name for op in self.ops)


@dataclass
class TfliteInfo:
    """What `read_tflite` finds in a file."""

    path: Path
    version: int
    signatures: dict[str, dict[str, list[str]]]  # signature key -> {"inputs": [...], "outputs": [...]}
    subgraphs: list[SubgraphInfo]
    # The model's metadata entries whose name starts with "pocketsam." (weights id, spec version, part), as text.
    metadata: dict[str, str] = field(default_factory=dict)

    def op_counts(self) -> Counter:
        """Operators over every subgraph (a batched decoder variant counts its ops again)."""
        total: Counter = Counter()
        for sg in self.subgraphs:
            total.update(sg.counts())
        return total

    def by_compute(self) -> dict[str, Counter]:
        """{"integer"|"hybrid"|"float"|"float16": Counter of op names}, layout-only ops left out."""
        out: dict[str, Counter] = {}
        for sg in self.subgraphs:
            for op in sg.ops:
                if op.name not in _LAYOUT_OPS:
                    out.setdefault(op.compute, Counter())[op.name] += 1
        return out

    def float_ops(self) -> Counter:
        """Compute ops whose activations stay float (float or hybrid), excluding QUANTIZE/DEQUANTIZE boundaries."""
        c: Counter = Counter()
        for kind in ("float", "float16", "hybrid"):
            c.update(self.by_compute().get(kind, Counter()))
        for boundary in ("QUANTIZE", "DEQUANTIZE"):
            c.pop(boundary, None)
        return c

    def unsupported(self, delegate: str) -> list[str]:
        """Op names in this file that `delegate` ("gpu", "nnapi") is not documented to support."""
        supported = DELEGATE_SUPPORT[delegate]
        return sorted(n for n in self.op_counts() if n not in supported)


def check_tflite_file(path: Path) -> bytes:
    """The file's bytes, or a one-line BundleError if it is not a complete TFLite flatbuffer."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise BundleError(f"{path}: cannot read ({e.strerror})") from None
    if len(buf) < 8 or buf[4:8] != _IDENTIFIER:
        raise BundleError(f"{path}: not a TFLite model (no TFL3 flatbuffer identifier; corrupt or another format)")
    schema = _schema()  # outside the try: a missing reader is a MissingEngineError naming the extra, not "corrupt"
    try:
        _parse(path, buf, schema)
    except BundleError:
        raise
    except Exception as e:  # flatbuffers raises struct/IndexError when an offset points past the end
        raise BundleError(f"{path}: TFLite flatbuffer is truncated or corrupt (a table or weight buffer lies past "
                          f"the end of its {len(buf)} bytes)") from None
    return buf


def _builtin_names(schema) -> dict[int, str]:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def _type_names(schema) -> dict[int, str]:
    return {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_") and isinstance(v, int)}


def _compute_kind(types: list[str | None], weight_types: list[str | None]) -> str:
    acts = [t for t in types if t is not None]
    if any(t in ("INT8", "UINT8", "INT16") for t in acts):
        return "integer"
    if any(t in ("INT8", "INT4", "UINT8") for t in weight_types if t is not None):
        return "hybrid"
    if acts and all(t == "FLOAT16" for t in acts):
        return "float16"
    return "float"


def _parse(path: Path, buf: bytes, schema) -> TfliteInfo:
    model = schema.Model.GetRootAsModel(buf, 0)
    n_buffers = model.BuffersLength()
    if model.SubgraphsLength() < 1:
        raise BundleError(f"{path}: TFLite model has no subgraph")
    ops_by_name = _builtin_names(schema)
    type_names = _type_names(schema)
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())  # deprecated field holds codes < 127
        name = ops_by_name.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            custom = oc.CustomCode()
            name = f"CUSTOM:{custom.decode() if custom else '?'}"
        codes.append(name)
    # A tensor is a weight when its buffer holds data (a constant baked into the file).
    const_buffers = set()
    for b in range(n_buffers):
        buffer = model.Buffers(b)
        if buffer.DataLength() > 0:
            buffer.DataAsNumpy()  # a view; raises when the weights run past the end of a truncated file
            const_buffers.add(b)
        elif buffer.Offset() > 0:  # weights stored after the flatbuffer (models > 2 GB, or when so converted)
            if buffer.Offset() + buffer.Size() > len(buf):
                raise BundleError(f"{path}: TFLite weight buffer {b} lies past the end of the file (truncated)")
            const_buffers.add(b)
    subgraphs = []
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        name = sg.Name().decode() if sg.Name() else f"subgraph{s}"
        info = SubgraphInfo(name)
        n_tensors = sg.TensorsLength()
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            idx = op.OpcodeIndex()
            if idx >= len(codes):
                raise BundleError(f"{path}: operator refers to opcode {idx} of {len(codes)} (corrupt file)")
            acts, weights = [], []
            io = [op.Inputs(k) for k in range(op.InputsLength())] + [op.Outputs(k) for k in range(op.OutputsLength())]
            for j in io:
                if j < 0:
                    continue
                if j >= n_tensors:
                    raise BundleError(f"{path}: operator refers to tensor {j} of {n_tensors} (corrupt file)")
                t = sg.Tensors(j)
                (weights if t.Buffer() in const_buffers else acts).append(type_names.get(t.Type()))
            info.ops.append(OpInfo(codes[idx], _compute_kind(acts, weights)))
        subgraphs.append(info)
    signatures = {}
    for k in range(model.SignatureDefsLength()):
        sd = model.SignatureDefs(k)
        key = sd.SignatureKey().decode()
        signatures[key] = {
            "inputs": [sd.Inputs(i).Name().decode() for i in range(sd.InputsLength())],
            "outputs": [sd.Outputs(i).Name().decode() for i in range(sd.OutputsLength())],
        }
    return TfliteInfo(Path(path), model.Version(), signatures, subgraphs, _pocketsam_metadata(model, buf))


def _pocketsam_metadata(model, buf: bytes) -> dict[str, str]:
    """{name: text} of the model's `pocketsam.*` metadata entries (each a name and a buffer holding UTF-8)."""
    out = {}
    for i in range(model.MetadataLength()):
        md = model.Metadata(i)
        name = md.Name().decode() if md.Name() else ""
        if not name.startswith(METADATA_PREFIX) or md.Buffer() >= model.BuffersLength():
            continue
        b = model.Buffers(md.Buffer())
        raw = (b.DataAsNumpy().tobytes() if b.DataLength() else
               buf[b.Offset():b.Offset() + b.Size()] if b.Offset() > 1 else b"")
        out[name] = raw.decode("utf-8", "replace")
    return out


def read_tflite(path: Path) -> TfliteInfo:
    """Parse a .tflite file (BundleError if it is not one, or is cut short)."""
    buf = check_tflite_file(path)
    return _parse(Path(path), buf, _schema())


def describe_ops(info: TfliteInfo) -> list[str]:
    """Lines for `pocketsam info`: op counts, what stays float, and what each delegate is not documented to run."""
    counts = info.op_counts()
    lines = ["    operators  " + ", ".join(f"{n} {c}" for n, c in sorted(counts.items(), key=lambda kv: -kv[1]))]
    kinds = info.by_compute()
    for kind in ("integer", "hybrid", "float16", "float"):
        if kind in kinds:
            ops = ", ".join(f"{n} {c}" for n, c in sorted(kinds[kind].items(), key=lambda kv: -kv[1]))
            lines.append(f"    {kind:<10} {ops}")
    for delegate in ("gpu", "nnapi"):
        missing = info.unsupported(delegate)
        what = ", ".join(missing) if missing else "none"
        lines.append(f"    not on {delegate:<5} {what}  (per {DELEGATE_SOURCES[delegate]})")
    return lines
