"""What a CoreML `.mlpackage` holds, read without running it, on any OS.

Prediction needs macOS, but the model specification (a protobuf) and the weight blob are plain files: this module
reads them with coremltools (an optional dependency, imported lazily: `pip install 'pocketsam[coreml]'`) and checks
them against `pocketsam.runtime.spec`. Used by the CoreML backend before loading, by `pocketsam info` and by
`pocketsam verify --structure`.

Checks, each with its own error: the package folder and its `Manifest.json` (parses, names a root model that
exists); the model spec (parses; an ML Program); every weight blob an op refers to exists and is long enough;
input/output names, shapes (fixed axes equal, symbolic axes flexible) and dtypes equal the spec's.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BundleError, MissingEngineError
from .spec import GraphSpec

# CoreML model specification version -> the oldest OS that loads it (coremltools' availability table).
SPEC_VERSION_TARGETS = {
    7: "iOS16 / macOS13",
    8: "iOS17 / macOS14",
    9: "iOS18 / macOS15",
    10: "iOS26 / macOS26",
}

# Ops that commonly leave the Neural Engine (run on CPU or GPU instead), with why. Heuristic: Core ML decides per
# device and OS, and the truth is MLComputePlan on a Mac. These are what we have seen or Apple's notes name.
ANE_UNFRIENDLY: dict[str, str] = {
    "shape": "dynamic shapes: the Neural Engine runs static shapes",
    "gather": "gather with computed indices",
    "gather_nd": "gather with computed indices",
    "gather_along_axis": "gather with computed indices",
    "scatter": "scatter",
    "scatter_nd": "scatter",
    "scatter_along_axis": "scatter",
    "tile": "tile by a computed count (dynamic shapes)",
    "fill": "fill of a computed shape",
    "range_1d": "range of computed length",
    "non_zero": "data-dependent output shape",
    "topk": "sorting",
    "argsort": "sorting",
    "cumsum": "cumulative sum",
    "while_loop": "control flow",
    "cond": "control flow",
    "einsum": "einsum (often lowered to CPU)",
    "band_part": "band_part",
    "non_maximum_suppression": "NMS",
}
# The Neural Engine computes in fp16 only: ops kept in fp32 (op-level precision selection) run on CPU/GPU.
_SKIP_COMPUTE = {"const", "cast"}
_ANE_MAX_AXIS = 16384  # a tensor axis larger than this is a common reason for a CPU fallback


def import_coremltools():
    """coremltools (read-only use), or MissingEngineError naming the extra."""
    try:
        logging.getLogger("coremltools").setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            import coremltools
            from coremltools.proto import MIL_pb2  # noqa: F401
    except ImportError:
        raise MissingEngineError(
            "reading CoreML models needs coremltools: pip install 'pocketsam[coreml]'"
        ) from None
    return coremltools


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output as the file declares it."""

    name: str
    shape: tuple[Any, ...]  # ints; a flexible axis is "lo..hi" (or "lo..*")
    dtype: str  # "float32", "float16", "int32"

    def line(self, kind: str) -> str:
        return f"{kind:<7}{self.name:<18}[{', '.join(map(str, self.shape))}] {self.dtype}"


@dataclass
class CoreMLStructure:
    """The static facts of one .mlpackage."""

    path: Path
    spec_version: int
    min_target: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    ops: Counter  # op type -> count (every op except const)
    weights: dict[str, int]  # storage kind -> number of weight elements ("fp16", "fp32", "int8 (linear)", ...)
    compute: dict[str, int]  # "fp16" / "fp32" -> number of compute ops (by output dtype)
    fp32_ops: list[str]  # compute ops whose output is fp32 (kept off fp16: off the Neural Engine too)
    ane_unfriendly: dict[str, int]  # op type -> count, for ops in ANE_UNFRIENDLY
    large_axes: list[str]  # "op name: shape" of tensors with an axis > _ANE_MAX_AXIS
    metadata: dict[str, str]
    description: str
    size_bytes: int
    problems: list[str] = field(default_factory=list)  # mismatches against the spec (empty: conforms)

    def lines(self) -> list[str]:
        out = [f"ML Program, spec version {self.spec_version} (needs {self.min_target}), "
               f"{self.size_bytes / 2**20:.2f} MiB"]  # fmt: skip
        out += [t.line("input") for t in self.inputs] + [t.line("output") for t in self.outputs]
        total = sum(self.weights.values()) or 1
        out.append("weights   " + ", ".join(f"{k} {v / 1e6:.2f}M ({100 * v / total:.0f}%)"
                                            for k, v in sorted(self.weights.items(), key=lambda kv: -kv[1])))
        out.append("compute   " + ", ".join(f"{k} {v} ops" for k, v in sorted(self.compute.items())))
        if self.fp32_ops:
            out.append(f"fp32 ops  {len(self.fp32_ops)} kept in fp32 (off the Neural Engine): "
                       + ", ".join(self.fp32_ops[:8]) + (" …" if len(self.fp32_ops) > 8 else ""))
        out.append("ops       " + ", ".join(f"{k} {v}" for k, v in self.ops.most_common()))
        if self.ane_unfriendly or self.large_axes:
            why = [f"{k} x{v} ({ANE_UNFRIENDLY[k]})" for k, v in sorted(self.ane_unfriendly.items())]
            if self.large_axes:
                why.append(f"{len(self.large_axes)} tensors with an axis > {_ANE_MAX_AXIS}")
            out.append("ANE risk  " + "; ".join(why))
        else:
            out.append("ANE risk  none of the ops that commonly fall off the Neural Engine")
        for k in ("precision", "weights_id", "fp32_modules", "pocketsam_version"):
            if f"pocketsam.{k}" in self.metadata:
                out.append(f"meta      {k}: {self.metadata[f'pocketsam.{k}']}")
        out += [f"PROBLEM   {p}" for p in self.problems]
        return out


def _check_package(path: Path) -> Path:
    """The package's root model spec file, after checking the folder and its Manifest.json."""
    if not path.exists():
        raise BundleError(f"{path}: no such .mlpackage")
    if not path.is_dir():
        raise BundleError(f"{path}: a .mlpackage is a folder (this is a file: a damaged copy or a renamed file)")
    manifest = path / "Manifest.json"
    if not manifest.is_file():
        raise BundleError(f"{path}: damaged .mlpackage: Manifest.json is missing")
    try:
        doc = json.loads(manifest.read_text())
        entry = doc["itemInfoEntries"][doc["rootModelIdentifier"]]
        model = path / "Data" / entry["path"]
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{path}: damaged .mlpackage: Manifest.json is broken ({type(e).__name__}: {e})") from None
    if not model.is_file():
        raise BundleError(f"{path}: damaged .mlpackage: the model spec {entry['path']} named by Manifest.json is missing")
    return model


def _shape_of(ft) -> tuple[Any, ...]:
    arr = ft.type.multiArrayType
    shape: list[Any] = list(arr.shape)
    if arr.WhichOneof("ShapeFlexibility") == "shapeRange":
        shape = []
        for r in arr.shapeRange.sizeRanges:
            hi = "*" if r.upperBound < 0 else r.upperBound
            shape.append(r.lowerBound if r.lowerBound == r.upperBound else f"{r.lowerBound}..{hi}")
    elif arr.WhichOneof("ShapeFlexibility") == "enumeratedShapes":
        options = [tuple(s.shape) for s in arr.enumeratedShapes.shapes]
        shape = [opts[0] if len(set(opts)) == 1 else "|".join(map(str, sorted(set(opts))))
                 for opts in zip(*options)]  # fmt: skip
    return tuple(shape)


_ARRAY_DTYPES = {65568: "float32", 65552: "float16", 131104: "int32", 65600: "float64"}


def _tensor_infos(features) -> list[TensorInfo]:
    out = []
    for ft in features:
        kind = ft.type.WhichOneof("Type")
        dtype = _ARRAY_DTYPES.get(ft.type.multiArrayType.dataType, str(ft.type.multiArrayType.dataType)) \
            if kind == "multiArrayType" else kind
        out.append(TensorInfo(ft.name, _shape_of(ft) if kind == "multiArrayType" else (), dtype))
    return out


def _numel(tensor_type) -> int:
    n = 1
    for d in tensor_type.dimensions:
        n *= d.constant.size if d.WhichOneof("dimension") == "constant" else 1
    return n


def _walk(ops):
    for op in ops:
        yield op
        for block in op.blocks:
            yield from _walk(block.operations)


def read_structure(path: str | Path, graph: GraphSpec | None = None) -> CoreMLStructure:
    """Read an .mlpackage's spec and weights index; with `graph`, list every mismatch with the spec in `problems`."""
    ct = import_coremltools()
    from coremltools.proto import MIL_pb2

    path = Path(path)
    model_file = _check_package(path)
    try:
        from coremltools.proto import Model_pb2

        spec = Model_pb2.Model()
        spec.ParseFromString(model_file.read_bytes())
    except Exception as e:  # protobuf's DecodeError and friends
        raise BundleError(f"{path}: damaged .mlpackage: the model spec does not parse ({type(e).__name__})") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise BundleError(f"{path}: not an ML Program (a {spec.WhichOneof('Type')} model): re-export with pocketsam")
    del ct
    weights_dir = model_file.parent / "weights"
    ops: Counter = Counter()
    weights: Counter = Counter()
    compute: Counter = Counter()
    fp32_ops, large_axes = [], []
    blob_ends: dict[str, int] = {}
    for fn in spec.mlProgram.functions.values():
        block = fn.block_specializations[fn.opset]
        for op in _walk(block.operations):
            out_type = op.outputs[0].type.tensorType if op.outputs else None
            dtype = MIL_pb2.DataType.Name(out_type.dataType) if out_type is not None else "?"
            if op.type == "const":
                val = op.attributes["val"]
                if val.WhichOneof("value") == "blobFileValue":
                    blob = val.blobFileValue
                    blob_ends[blob.fileName] = max(blob_ends.get(blob.fileName, 0), int(blob.offset) + 64)
                n = _numel(out_type)
                if n >= 16:  # weights, not scalars and shape constants
                    weights[{"FLOAT16": "fp16", "FLOAT32": "fp32"}.get(dtype, dtype.lower())] += n
                continue
            ops[op.type] += 1
            if op.type.startswith("constexpr_"):
                n = _numel(out_type)
                kind = {"constexpr_affine_dequantize": "int8 (linear)",
                        "constexpr_lut_to_dense": "palettized",
                        "constexpr_blockwise_shift_scale": "int (blockwise)"}.get(op.type, op.type)  # fmt: skip
                if op.type == "constexpr_lut_to_dense":
                    lut = op.attributes.get("lut") if "lut" in op.attributes else None
                    if lut is not None:
                        entries = _numel(lut.type.tensorType)
                        bits = max(1, (entries - 1).bit_length())
                        kind = f"palettized {bits}-bit"
                weights[kind] += n
                for attr in op.attributes.values():
                    if attr.WhichOneof("value") == "blobFileValue":
                        b = attr.blobFileValue
                        blob_ends[b.fileName] = max(blob_ends.get(b.fileName, 0), int(b.offset) + 64)
                continue
            if op.type not in _SKIP_COMPUTE and out_type is not None:
                if dtype == "FLOAT32":
                    compute["fp32"] += 1
                    fp32_ops.append(op.outputs[0].name)
                elif dtype == "FLOAT16":
                    compute["fp16"] += 1
            for o in op.outputs:
                dims = [d.constant.size for d in o.type.tensorType.dimensions if d.WhichOneof("dimension") == "constant"]
                if any(d > _ANE_MAX_AXIS for d in dims):
                    large_axes.append(f"{o.name}: {dims}")
    for name, end in blob_ends.items():
        f = weights_dir / name.removeprefix("@model_path/weights/")
        if not f.is_file():
            raise BundleError(f"{path}: damaged .mlpackage: the weights file {f.relative_to(path)} is missing")
        if f.stat().st_size < end:
            raise BundleError(f"{path}: damaged .mlpackage: the weights file {f.relative_to(path)} is truncated "
                              f"({f.stat().st_size} bytes, ops refer to offset {end - 64})")  # fmt: skip
    if not blob_ends and not weights_dir.exists() and sum(weights.values()) > 1_000_000:
        raise BundleError(f"{path}: damaged .mlpackage: no weights folder")
    from .bundle import size_of

    structure = CoreMLStructure(
        path=path,
        spec_version=spec.specificationVersion,
        min_target=SPEC_VERSION_TARGETS.get(spec.specificationVersion, f"spec v{spec.specificationVersion}"),
        inputs=_tensor_infos(spec.description.input),
        outputs=_tensor_infos(spec.description.output),
        ops=ops,
        weights=dict(weights),
        compute=dict(compute),
        fp32_ops=fp32_ops,
        ane_unfriendly={k: v for k, v in ops.items() if k in ANE_UNFRIENDLY},
        large_axes=large_axes,
        metadata=dict(spec.description.metadata.userDefined),
        description=spec.description.metadata.shortDescription,
        size_bytes=size_of(path),
    )
    if graph is not None:
        structure.problems = spec_problems(structure, graph)
    return structure


def spec_problems(structure: CoreMLStructure, graph: GraphSpec) -> list[str]:
    """Every way the file's I/O differs from `graph` (names, order-insensitive; shapes; dtypes)."""
    problems = []
    for kind, got, want in (("input", structure.inputs, graph.inputs), ("output", structure.outputs, graph.outputs)):
        got_by = {t.name: t for t in got}
        want_names, got_names = sorted(t.name for t in want), sorted(got_by)
        if want_names != got_names:
            problems.append(f"{kind}s {got_names} are not the {graph.name} spec's {want_names}")
            continue
        for t in want:
            g = got_by[t.name]
            if g.dtype != t.dtype:
                problems.append(f"{kind} {t.name}: dtype {g.dtype}, the spec says {t.dtype}")
            if kind == "output" and not g.shape:
                continue  # ML Programs may leave output shapes undeclared
            if len(g.shape) != len(t.shape):
                problems.append(f"{kind} {t.name}: rank {len(g.shape)} {list(g.shape)}, the spec says {list(t.shape)}")
                continue
            for i, (gd, sd) in enumerate(zip(g.shape, t.shape)):
                if isinstance(sd, int) and gd != sd:
                    problems.append(f"{kind} {t.name}: axis {i} is {gd}, the spec says {sd}")
                elif isinstance(sd, str) and kind == "input" and isinstance(gd, int):
                    problems.append(f"{kind} {t.name}: axis {i} ({sd}) is fixed to {gd}, the spec's is flexible")
    return problems


def check_structure(path: str | Path, graph: GraphSpec) -> CoreMLStructure:
    """`read_structure`, raising BundleError when the file's I/O does not match the spec."""
    s = read_structure(path, graph)
    if s.problems:
        raise BundleError(f"{path}: does not match the {graph.name} spec: " + "; ".join(s.problems))
    return s


def structure_report(bundle_root: str | Path) -> tuple[list[str], int]:
    """`pocketsam verify --structure`: (lines, number of failed checks) for a CoreML bundle, on any OS.

    Each part's package is read and checked against its graph spec before its sha256 is checked, so a damaged
    package is reported by what is wrong with it (missing weights, broken manifest, wrong I/O), not only as a hash
    mismatch.
    """
    from .bundle import PARTS, _check_sha, load_bundle
    from .errors import PocketSamError
    from .spec import GRAPHS

    bundle = load_bundle(bundle_root, verify_hashes=False)
    if bundle.format != "coreml":
        raise BundleError(f"{bundle.root}: --structure checks CoreML bundles (this one is {bundle.format})")
    lines, failed = [], 0
    for part in PARTS:
        info = bundle.part(part)
        lines.append(f"{part}: {info.path.name} ({info.precision})")
        try:
            s = read_structure(info.path, GRAPHS[part])
        except PocketSamError as e:
            lines.append(f"  ✗ {e}")
            failed += 1
            continue
        lines += ["  " + line for line in s.lines() if not line.startswith("PROBLEM")]
        for p in s.problems:
            lines.append(f"  ✗ spec: {p}")
        failed += len(s.problems)
        if not s.problems:
            lines.append(f"  ✓ inputs/outputs match the {part} spec (names, shapes, dtypes)")
        declared = s.metadata.get("pocketsam.precision")
        if declared is not None and declared != info.precision:
            lines.append(f"  ✗ the model says precision {declared}, the manifest {info.precision}")
            failed += 1
        try:
            _check_sha(info.path, info.sha256, part)
            lines.append("  ✓ sha256 matches the manifest")
        except BundleError as e:
            lines.append(f"  ✗ {e}")
            failed += 1
    return lines, failed
