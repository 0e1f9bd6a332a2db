"""ONNX export of one graph: trace, simplify with onnxsim, check, stamp metadata.

Step by step (as coremltools' docs lay a conversion out):
1. the graph module's forward already takes and returns tensors only (`pocketsam.export.graphs`);
2. trace it with the TorchScript exporter on dummy inputs built from the spec, with the spec's symbolic axes dynamic;
3. simplify with onnxsim (constant folding removes the attention-bias gathers and the dense positional encoding;
   its graph fusions are off, see `export_onnx`);
4. check the model and stamp pocketsam's metadata (spec version, part, weights id) into `metadata_props`;
5. quantize each part by its recipe; the decoder's mask-prompt convolutions then go under an `If`
   (`onnx_rewrite.skip_unused_mask_path`), so a click without a mask input skips them as upstream's eager code does;
   the encoder's largest activations are computed in pieces by `Loop`s (`banding.bound_encoder_memory`), which
   bounds onnxruntime's peak memory.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from pocketsam.runtime import spec
from pocketsam.runtime.backends import open_session
from pocketsam.runtime.spec import SPEC_VERSION, GraphSpec

from .. import decoder_rewrite
from ..calibration import decoder_calibration, encoder_calibration
from ..core import ExportError, ExportJob
from ..graphs import check_against_torch, dummy_inputs
from .banding import bound_encoder_memory
from .quantize import quantize_onnx
from .recipes import ONNX_RECIPES, OnnxPrecision
from .rewrite import cache_image_stage, skip_unused_mask_path

# Opset 17: the first with a native LayerNormalization (one fused op instead of ~9, faster in ONNX Runtime and
# better behaved under fp16), and old enough for the ONNX Runtime Mobile builds phones ship (1.14+).
OPSET = 17

def dynamic_axes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    """{tensor name: {axis index: axis name}} for the spec's symbolic axes."""
    axes: dict[str, dict[int, str]] = {}
    for t in (*spec.inputs, *spec.outputs):
        named = {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
        if named:
            axes[t.name] = named
    return axes


def stamp_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Replace pocketsam's entries in the model's metadata_props."""
    keep = [p for p in model.metadata_props if not p.key.startswith("pocketsam.")]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in {"pocketsam.spec_version": SPEC_VERSION, **metadata}.items():
        model.metadata_props.add(key=k if k.startswith("pocketsam.") else f"pocketsam.{k}", value=str(v))


def _reads(graph: onnx.GraphProto) -> set[str]:
    """Every value name a node of `graph` (or of its subgraphs) reads, plus the graph's outputs."""
    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                names |= _reads(attr.g)
    return names


def prune_dead(model: onnx.ModelProto) -> int:
    """Remove nodes whose outputs nothing reads and initializers no node reads (constant folding leaves both behind
    when onnxsim's optimizer passes are off; onnxruntime warns about each at load). Returns how many were removed."""
    removed = 0
    while True:
        used = _reads(model.graph)
        live = [n for n in model.graph.node if any(o in used for o in n.output)]
        if len(live) == len(model.graph.node):
            break
        removed += len(model.graph.node) - len(live)
        del model.graph.node[:]
        model.graph.node.extend(live)
    keep = [i for i in model.graph.initializer if i.name in used]
    removed += len(model.graph.initializer) - len(keep)
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return removed


def export_onnx(module: torch.nn.Module, spec: GraphSpec, out_path: Path, metadata: dict[str, str]) -> Path:
    """Export `module` (forward takes spec.inputs in order) to a simplified fp32 ONNX file at `out_path`."""
    import onnxsim

    module = module.eval()
    args = dummy_inputs(spec)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about constants are expected and checked below
                torch.onnx.export(
                    module,
                    args,
                    str(raw),
                    input_names=spec.input_names,
                    output_names=spec.output_names,
                    dynamic_axes=dynamic_axes(spec),
                    opset_version=OPSET,
                    do_constant_folding=True,
                    dynamo=False,  # the TorchScript exporter: measured faster graphs here (TOOLCHAIN.md)
                )
        except Exception as e:
            raise ExportError(f"ONNX export of the {spec.name} failed: {e}") from e
        model = onnx.load(str(raw))
    # perform_optimization=False: onnxsim's fusions fold GELU's trailing `* 0.5` into the next Conv's weights, and
    # onnxruntime then no longer recognizes (and fuses) the 12 GELUs that precede a Conv in TinyViT (the MBConv
    # stage at 256x256), a large slowdown of the encoder for equal outputs (docs/performance.md). Constant folding
    # and shape inference still run; onnxruntime does its own fusions at load.
    simplified, ok = onnxsim.simplify(model, perform_optimization=False)
    if not ok:
        raise ExportError(f"onnxsim could not validate the simplified {spec.name}")
    prune_dead(simplified)
    onnx.checker.check_model(simplified)
    stamp_metadata(simplified, metadata)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(simplified, str(out_path))
    session = open_session("onnxruntime", out_path, spec)
    check_against_torch(module, spec, out_path, session.run, [{"batch": 1, "num_points": 5}])
    return out_path


def export_onnx_parts(job: ExportJob) -> dict[str, dict[str, list]]:
    """Write encoder.onnx and decoder.onnx into job.out_dir in their precisions; returns each part's input shapes."""
    tmp, step = job.out_dir, job.step
    # The decoder's products as onnxruntime runs them fastest (decoder_rewrite.ONNXRUNTIME, docs/performance.md).
    # With the image cache it is traced with the cache as extra outputs; after quantization they become the cache
    # I/O of spec.DECODER_CACHED (rewrite.cache_image_stage).
    decoder = job.decoder_module(decoder_rewrite.ONNXRUNTIME)
    traced = (spec.GraphSpec("decoder", spec.DECODER.inputs, spec.DECODER.outputs + spec.IMAGE_CACHE)
              if decoder.image_cache else spec.DECODER)
    graphs = {"encoder": (job.encoder_module(), spec.ENCODER), "decoder": (decoder, traced)}
    fp32: dict[str, Path] = {}
    for part, (module, graph) in graphs.items():
        step(f"tracing the {part} to ONNX")
        fp32[part] = export_onnx(module, graph, tmp / f"{part}.fp32.onnx", {**job.metadata, "part": part})
    for part, precision in job.precisions.items():
        step(f"{part}: {precision}")
        feeds: list[dict] | None = None
        recipe = ONNX_RECIPES[OnnxPrecision(precision)]
        if recipe.calibrated:
            enc = open_session("onnxruntime", fp32["encoder"], spec.ENCODER)
            if part == "encoder":
                feeds = encoder_calibration(job.calibration)
            else:
                dec = open_session("onnxruntime", fp32["decoder"], traced)
                feeds = decoder_calibration(enc, dec, job.calibration, seed=0)
        cached = spec.IMAGE_CACHE if part == "decoder" and decoder.image_cache else ()
        final = tmp / f"{part}.onnx"
        quantize_onnx(fp32[part], final, recipe, feeds, image_cache=cached)
        if part == "encoder" and not job.options.get("encoder_pieces", True):
            step("encoder: the whole graph (--no-encoder-pieces)")
        elif part == "encoder":
            rewritten = onnx.load(str(final))
            step(f"encoder: {bound_encoder_memory(rewritten)}")
            onnx.save(rewritten, str(final))
        if part == "decoder":
            rewritten = skip_unused_mask_path(onnx.load(str(final)))
            if decoder.image_cache:
                rewritten = cache_image_stage(rewritten)
            onnx.save(rewritten, str(final))
    for path in fp32.values():
        path.unlink()
    written = {"encoder": spec.ENCODER, "decoder": spec.DECODER_CACHED if decoder.image_cache else spec.DECODER}
    return {part: {t.name: list(t.shape) for t in g.inputs} for part, g in written.items()}
