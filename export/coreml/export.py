"""CoreML export: one ML Program (`.mlpackage`) per graph, through `torch.export`, for the Apple Neural Engine.

Step by step:
1. the graph module (`pocketsam.export.graphs`) is captured with `torch.export` — coremltools' TorchScript path
   breaks with numpy >= 2.4 (TOOLCHAIN.md) — with the spec's symbolic axes as bounded `Dim`s, then lowered to core
   aten ops with `run_decompositions({})`;
2. `ct.convert` to an ML Program with named float32 I/O from `pocketsam.runtime.spec` and a `RangeDim` for the
   decoder's point count and batch (the encoder is fully static, which is what the Neural Engine wants);
3. compute precision: fp32, or fp16 with op-level precision selection: the ops of the modules the fp16 audit
   (`pocketsam.export.fp16_audit.fp16_keep_list`, same photos) flags as near the fp16 range stay fp32;
4. weight compression (`coremltools.optimize.coreml`) on top of fp16 compute: int8 linear (per channel),
   k-means palettization to 6 or 4 bits, or W8A8 (activation ranges calibrated on real photos, then int8 weights);
5. metadata in the model (descriptions of every input and output, the pre/post constants, license, pocketsam
   version, weights origin, the modules kept in fp32), then save.

Prediction needs macOS; on Linux the bundle writer records why parity was not measured, and
`pocketsam verify --structure` / `pocketsam info` check the files against the spec.
"""

from __future__ import annotations

import json
import warnings
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pocketsam.runtime import spec
from pocketsam.runtime.coreml_structure import import_coremltools
from pocketsam.runtime.errors import BackendError
from pocketsam.runtime.spec import GraphSpec

from ..core import ExportError, ExportJob
from ..graphs import dummy_inputs
from .quantize import compress, quiet, w8a8_unavailable
from .recipes import COREML_RECIPES, CoreMLPrecision

# Minimum deployment target: iOS 17 / macOS 14. iOS 16 would be enough for fp16 ML Programs, int8 weights
# (constexpr_affine_dequantize) and per-tensor palettization (constexpr_lut_to_dense), but W8A8 needs the iOS 17
# `quantize`/`dequantize` activation ops, and one target for every precision means one bundle layout everywhere.
# iOS 18's extras (4-bit ints, per-block scales, grouped-channel palettes, stateful models) are not needed here, and
# iOS 17 still runs on every iPhone since the XS (A12, the first Neural Engine Core ML can target for fp16 ML
# Programs well); iOS 18 would drop the XS/XR generation.
MINIMUM_TARGET = "iOS17"

# Bounds of the decoder's flexible axes (RangeDim). SAM's segment-everything runs 64 prompts per batch; a prompt has
# at most a handful of user clicks plus the two box corners and one pad point, so 64 tokens leave ample room.
AXIS_BOUNDS: dict[str, tuple[int, int, int]] = {"batch": (1, 64, 1), "num_points": (1, 64, 2)}  # (min, max, default)

LICENSE = (
    "Apache-2.0 (pocketsam and the MobileSAM / Segment Anything architecture and official weights); weights made "
    "from another checkpoint carry that checkpoint's license"
)


# Metadata keys pocketsam writes into every model (user_defined_metadata).
META_PREFIX = "pocketsam."


# --- torch.export -------------------------------------------------------------------------------------------


def export_program(module: torch.nn.Module, graph: GraphSpec) -> torch.export.ExportedProgram:
    """`torch.export` of a graph module with the spec's symbolic axes as bounded Dims, lowered to core aten."""
    dims = {name: torch.export.Dim(name, min=lo, max=hi) for name, (lo, hi, _) in AXIS_BOUNDS.items()}
    dynamic = {t.name: ({i: dims[d] for i, d in enumerate(t.shape) if isinstance(d, str)} or None) for t in graph.inputs}
    args = dummy_inputs(graph)  # batch 2, 3 points: no axis is 1 by accident
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(module.eval(), args, dynamic_shapes=dynamic, strict=False)
            return ep.run_decompositions({})
    except Exception as e:
        raise ExportError(f"torch.export of the {graph.name} failed: {e}") from e


def _module_path(node) -> str:
    """The innermost module an FX node ran in, as `named_modules()` spells it ("" for the graph itself)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    for prefix in ("L['self'].", "L__self__."):
        path = path.removeprefix(prefix)
    return path.replace("[", ".").replace("]", "").replace("'", "")


def node_modules(ep: torch.export.ExportedProgram) -> dict[str, str]:
    """{FX node name: module path}. coremltools names each MIL op after the FX node it converts, so this maps the
    ops of the converted program back to the modules the fp16 audit reports on."""
    return {n.name: _module_path(n) for n in ep.graph.nodes if n.op == "call_function"}


def _op_module(op_name: str, modules: dict[str, str]) -> str | None:
    """Module of a MIL op: its FX node's; ops coremltools adds (suffixes like `_cast_fp16`) resolve to their
    origin by stripping a suffix at a time."""
    name = op_name
    while name:
        if name in modules:
            return modules[name]
        if "_" not in name:
            return None
        name = name.rsplit("_", 1)[0]
    return None


# --- conversion ---------------------------------------------------------------------------------------------


def _ct_inputs(ct, graph: GraphSpec) -> list:
    dims = {name: ct.RangeDim(lower_bound=lo, upper_bound=hi, default=d, symbol=name)
            for name, (lo, hi, d) in AXIS_BOUNDS.items()}  # fmt: skip
    return [
        ct.TensorType(name=t.name, shape=tuple(dims[d] if isinstance(d, str) else d for d in t.shape),
                      dtype=np.dtype(t.dtype).type)
        for t in graph.inputs
    ]  # fmt: skip


@dataclass
class ConvertedPart:
    """A converted graph and what the export decided about it."""

    model: Any  # ct.models.MLModel
    graph: GraphSpec
    precision: str
    keep_fp32_modules: list[str]  # from the fp16 audit
    fp32_ops: list[str]  # MIL ops the op selector kept in fp32 (names as in the converted program)
    seconds: float


def convert_graph(
    module: torch.nn.Module,
    graph: GraphSpec,
    fp16: bool,
    keep_fp32_modules: Sequence[str] = (),
) -> ConvertedPart:
    """Convert one graph to an ML Program (fp32, or fp16 compute keeping the ops of `keep_fp32_modules` in fp32)."""
    from ..fp16_audit import is_kept

    ct = import_coremltools()
    t0 = time.perf_counter()
    ep = export_program(module, graph)
    modules = node_modules(ep)
    kept_ops: list[str] = []

    def op_selector(op) -> bool:  # True: this op computes in fp16
        path = _op_module(op.name, modules)
        if path is not None and is_kept(path, keep_fp32_modules):
            if op.op_type != "const":
                kept_ops.append(op.name)
            return False
        return True

    precision = ct.transform.FP16ComputePrecision(op_selector=op_selector) if fp16 else ct.precision.FLOAT32
    try:
        with quiet():
            mlmodel = ct.convert(
                ep,
                inputs=_ct_inputs(ct, graph),
                outputs=[ct.TensorType(name=t.name, dtype=np.dtype(t.dtype).type) for t in graph.outputs],
                convert_to="mlprogram",
                minimum_deployment_target=getattr(ct.target, MINIMUM_TARGET),
                compute_precision=precision,
                skip_model_load=True,  # loading compiles the model: macOS only, and not needed to save it
            )
    except Exception as e:
        raise ExportError(f"coremltools could not convert the {graph.name}: {e}") from e
    return ConvertedPart(mlmodel, graph, "fp16" if fp16 else "fp32", list(keep_fp32_modules), sorted(set(kept_ops)),
                         time.perf_counter() - t0)


def stamp_metadata(mlmodel, graph: GraphSpec, part: str, precision: str, metadata: dict[str, str],
                   keep_fp32_modules: Sequence[str], fp32_ops: Sequence[str]) -> None:
    """Descriptions, license, version and pocketsam's keys, inside the model (Xcode shows them)."""
    from importlib import metadata as md

    try:
        version = md.version("pocketsam")
    except md.PackageNotFoundError:
        version = "unknown"
    wid = metadata.get("weights_id", "unknown")
    origin = (f"synthetic seeded random weights ({wid}): not a meaningful segmenter"
              if wid.startswith("random:") else f"MobileSAM checkpoint {wid}")  # fmt: skip
    what = ("MobileSAM image encoder (TinyViT-5M): one 1024x1024 RGB image -> 256x64x64 image embedding"
            if part == "encoder" else
            "MobileSAM prompt encoder + mask decoder: image embedding + point/box prompts -> 4 mask logits + IoU "
            "scores (index 0 single-mask, 1..3 multimask)")  # fmt: skip
    mlmodel.short_description = f"{what}. pocketsam {part}, {precision}; weights: {origin}."
    mlmodel.author = "pocketsam (export of MobileSAM, Zhang et al. 2023, and Segment Anything, Kirillov et al. 2023)"
    mlmodel.license = LICENSE
    mlmodel.version = version
    for t in graph.inputs:
        mlmodel.input_description[t.name] = f"{t.description} [{', '.join(map(str, t.shape))}] {t.dtype}"
    for t in graph.outputs:
        mlmodel.output_description[t.name] = f"{t.description} [{', '.join(map(str, t.shape))}] {t.dtype}"
    user = {
        "spec_version": spec.SPEC_VERSION,
        "part": part,
        "precision": precision,
        "pocketsam_version": version,
        "weights_id": wid,
        "checkpoint": origin,
        "minimum_deployment_target": MINIMUM_TARGET,
        "constants": json.dumps(spec.constants(), separators=(",", ":")),
        "fp32_modules": json.dumps(list(keep_fp32_modules)),
        "fp32_ops": json.dumps(list(fp32_ops)),
        **{k.removeprefix(META_PREFIX): str(v) for k, v in metadata.items()},
    }
    for k, v in user.items():
        mlmodel.user_defined_metadata[META_PREFIX + k] = str(v)


def export_coreml_part(
    module: torch.nn.Module,
    graph: GraphSpec,
    out_path: Path,
    precision: str,
    metadata: dict[str, str],
    keep_fp32_modules: Sequence[str] = (),
    calibration: list[dict[str, np.ndarray]] | None = None,
) -> ConvertedPart:
    """Convert, compress, stamp and save one part as `out_path` (.mlpackage)."""
    recipe = COREML_RECIPES[CoreMLPrecision(precision)]
    part = convert_graph(module, graph, recipe.fp16_compute, keep_fp32_modules if recipe.fp16_compute else ())
    t0 = time.perf_counter()
    model = compress(part.model, recipe, calibration)
    part.seconds += time.perf_counter() - t0
    metadata = {**metadata, "conversion_seconds": f"{part.seconds:.1f}"}
    stamp_metadata(model, graph, metadata.get("part", graph.name), precision, metadata, part.keep_fp32_modules,
                   part.fp32_ops)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with quiet():
        model.save(str(out_path))
    part.model, part.precision = model, precision
    return part


def export_coreml_parts(job: ExportJob) -> dict[str, dict[str, list]]:
    """Write encoder.mlpackage and decoder.mlpackage into job.out_dir; returns each part's input shapes."""
    from ..fp16_audit import HEADROOM, fp16_keep_list

    model = job.model
    graphs = {"encoder": (job.encoder_module(), spec.ENCODER), "decoder": (job.decoder_module(), spec.DECODER)}
    recipes = {part: COREML_RECIPES[CoreMLPrecision(p)] for part, p in job.precisions.items()}
    if any(r.compression == "w8a8" for r in recipes.values()):
        why = w8a8_unavailable()
        if why is not None:  # before minutes of conversion, not after
            raise BackendError(why)
    keep: dict[str, list[str]] = {"encoder": [], "decoder": []}
    job.step("fp16 audit: activation magnitudes on the photos")
    if any(r.fp16_compute for r in recipes.values()):
        keep = fp16_keep_list(model, job.calibration, job.options.get("fp16_headroom", HEADROOM), job.decoder_graph,
                              job.encoder_graph)
    calib: dict[str, list[dict]] = {}
    if any(r.compression == "w8a8" for r in recipes.values()):
        from ..calibration import decoder_calibration, encoder_calibration
        from ..reference import reference_sessions

        enc, dec = reference_sessions(model)
        calib = {"encoder": encoder_calibration(job.calibration),
                 "decoder": decoder_calibration(enc, dec, job.calibration, seed=0)}  # fmt: skip
    report = {}
    for part, (module, graph) in graphs.items():
        job.step(f"converting the {part} to CoreML ({job.precisions[part]})")
        done = export_coreml_part(module, graph, job.out_dir / f"{part}{spec.FORMAT_EXTENSIONS['coreml']}",
                                  job.precisions[part], {**job.metadata, "part": part}, keep[part], calib.get(part))
        report[part] = {"seconds": round(done.seconds, 1), "fp32_modules": done.keep_fp32_modules,
                        "fp32_ops": len(done.fp32_ops)}  # fmt: skip
    job.step("done")
    job.options.setdefault("report", report)
    return {part: {t.name: list(t.shape) for t in g.inputs} for part, (_, g) in graphs.items()}
