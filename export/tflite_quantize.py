"""TFLite precisions and the ai-edge-quantizer recipes that make them from a converted fp32 .tflite.

A recipe is data (a dataclass with a comment on every field); `quantize_tflite` is the one function that reads it.
ai-edge-quantizer works on the .tflite flatbuffer itself (no torch, < 1 s for weight recipes); the full-integer
recipe calibrates activation ranges by running the float model on real-image feeds, one feed list per signature.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from pocketsam.runtime.errors import PocketSamError


class TflitePrecision(str, Enum):
    """Precisions a TFLite part can be exported in (the names the CLI, manifests and parity table use)."""

    FP32 = "fp32"
    FP16 = "fp16"  # float16 weights, dequantized to float32 at load (XNNPACK) or run in fp16 by the GPU delegate
    INT8_DYNAMIC = "int8-dynamic"  # dynamic-range: int8 weights, activations quantized on the fly per op
    INT8 = "int8"  # full integer: int8 weights and activations, ranges calibrated on real images; float I/O


# Op groups that the full-int8 recipe can keep in float, by the model op each stands for in the converted graph.
# LayerNorm is decomposed by litert-torch into MEAN, SQUARED_DIFFERENCE, RSQRT, SUB, MUL, ADD; MEAN + RSQRT +
# SQUARED_DIFFERENCE are the ops that only LayerNorm uses, so keeping those float keeps its statistics float.
LAYERNORM_OPS = ("MEAN", "SQUARED_DIFFERENCE", "RSQRT")
SOFTMAX_OPS = ("SOFTMAX",)
GELU_OPS = ("GELU",)
# TFLite TRANSPOSE_CONV: the final 4x mask upscaling (tflite-runtime has no int8 kernel for it)
UPSCALING_OPS = ("CONV_2D_TRANSPOSE",)


@dataclass(frozen=True)
class TfliteRecipe:
    """How one part is quantized for LiteRT."""

    precision: TflitePrecision
    # Needs calibration feeds (static activation ranges).
    calibrated: bool = False
    # TFLite op names kept entirely in float in the full-int8 recipe (QUANTIZE/DEQUANTIZE inserted around them).
    float_ops: tuple[str, ...] = ()
    # One weight scale per output channel (True) or per tensor: TinyViT's depthwise convs and the decoder's
    # projections have channels whose ranges differ by 100x, which one per-tensor scale flattens to zero.
    per_channel: bool = True
    # Weighted op types that get int8 weights (None: every type the quantizer supports); the others stay float.
    op_types: tuple[str, ...] | None = None
    # Only weighted ops whose activation input has at least this many rows (tokens or pixels) are quantized: the
    # per-pixel projections (4096 rows in the decoder, far more in the encoder) carry the FLOPs; the per-token ones
    # (a handful of prompt tokens) cost nothing in float and carry the prompt (as the ONNX recipes' min_rows).
    # In the full-int8 recipe the rule covers every op, weighted or not (the decoder's whole token path).
    min_rows: int = 0
    # Full int8 only: the op types that get int8 activations (None: every op the quantizer supports, minus
    # float_ops and float_scopes). The others stay float, with QUANTIZE/DEQUANTIZE around the int8 islands.
    int8_ops: tuple[str, ...] | None = None
    # Regular expressions searched in each op's scope (its output tensor names, which litert-torch derives from the
    # PyTorch module path); matching ops stay float whatever their type.
    float_scopes: tuple[str, ...] = ()

    def aeq_recipe(self, model_path: Path | None = None) -> list[dict[str, Any]]:
        """The ai-edge-quantizer recipe (a list of rules; later rules override earlier ones). `model_path` (the
        fp32 .tflite) is needed when the recipe keeps ops float by their row count."""
        from ai_edge_quantizer import recipe

        granularity = "CHANNELWISE" if self.per_channel else "TENSORWISE"
        if self.precision is TflitePrecision.FP16:
            return [_rule("*", "float_casting", weight={"num_bits": 16, "dtype": "FLOAT", "symmetric": True,
                                                         "granularity": "TENSORWISE"},
                          compute="FLOAT", explicit_dequantize=True)]
        if self.precision is TflitePrecision.INT8_DYNAMIC:
            rules = recipe.dynamic_wi8_afp32()
        elif self.precision is TflitePrecision.INT8:
            (static,) = recipe.static_wi8_ai8()
            rules = ([static] if self.int8_ops is None else [{**copy.deepcopy(static), "operation": op}
                                                             for op in self.int8_ops])
            # Float I/O: the runtime feeds every precision the same float32 arrays (and the image's 0..255 pixels
            # would otherwise be requantized by the caller).
            rules += [_no_quantize(op) for op in ("INPUT", "OUTPUT", *self.float_ops)]
        else:
            raise QuantizationError(f"no quantizer recipe for {self.precision.value}")
        rules += [{**_no_quantize("*"), "regex": f".*(?:{scope}).*"} for scope in self.float_scopes]
        for r in rules:
            if "weight_tensor_config" in r.get("op_config", {}):
                r["op_config"]["weight_tensor_config"]["granularity"] = granularity
        if self.op_types is not None:
            rules += [_no_quantize(op) for op in WEIGHTED_OPS if op not in self.op_types]
        if self.min_rows and model_path is not None:
            # An op's scope is its output tensor names, each followed by ";" (ai-edge-quantizer's get_op_scope).
            every_op = self.precision is TflitePrecision.INT8
            rules += [{**_no_quantize(op), "regex": "^" + re.escape(name) + ";"}
                      for op, name in small_weighted_ops(model_path, self.min_rows, every_op)]
        return rules


# BATCH_MATMUL counts as weighted when one operand is a constant (the fast decoder's folded projections,
# export/decoder_rewrite.py). Dynamic-range quantization must leave those float: it quantizes the constant even when
# it is the left operand, and TFLite's kernel has no int8 x float BATCH_MATMUL ("failed to prepare").
WEIGHTED_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D_TRANSPOSE", "EMBEDDING_LOOKUP",
                "BATCH_MATMUL")
# ai-edge-quantizer's name for TFLite's TRANSPOSE_CONV
_AEQ_NAMES = {"TRANSPOSE_CONV": "CONV_2D_TRANSPOSE"}


def small_weighted_ops(model_path: Path, min_rows: int, every_op: bool = False) -> list[tuple[str, str]]:
    """(ai-edge-quantizer op name, output tensor name) of the weighted ops (`every_op`: of every op the quantizer
    knows) with fewer than `min_rows` activation rows: the product of the output's leading axes (FULLY_CONNECTED:
    tokens; NHWC conv: output pixels)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_quantizer.utils.tfl_flatbuffer_utils import TFL_OP_CODE_TO_NAME

    buf = Path(model_path).read_bytes()
    model = schema.Model.GetRootAsModel(buf, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    small = []
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            oc = model.OperatorCodes(op.OpcodeIndex())
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            name = names.get(code, "")
            aeq = _AEQ_NAMES.get(name, name)
            if every_op and code in TFL_OP_CODE_TO_NAME:
                aeq = str(TFL_OP_CODE_TO_NAME[code].value)
            elif aeq not in WEIGHTED_OPS:
                continue
            if op.OutputsLength() < 1:
                continue
            out = sg.Tensors(op.Outputs(0))
            shape = [int(d) for d in out.ShapeAsNumpy()] if out.ShapeLength() else []
            # FC: leading axes; NHWC conv: N*H*W; a 1-D tensor (a per-token statistic) counts its length
            rows = int(np.prod(shape[:-1])) if len(shape) > 1 else (shape[0] if shape else 0)
            if rows < min_rows:
                small.append((aeq, out.Name().decode()))
    return small


def _rule(op: str, algorithm: str, **config: Any) -> dict[str, Any]:
    op_config: dict[str, Any] = {"compute_precision": config["compute"], "explicit_dequantize":
                                 config.get("explicit_dequantize", False), "skip_checks": False,
                                 "min_weight_elements": 0}
    if "weight" in config:
        op_config["weight_tensor_config"] = config["weight"]
    return {"regex": ".*", "operation": op, "algorithm_key": algorithm, "op_config": op_config}


def _no_quantize(op: str) -> dict[str, Any]:
    return {"regex": ".*", "operation": op, "algorithm_key": "no_quantize"}


_CONVS = ("CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D_TRANSPOSE")

# Encoder recipes (and the decoder's, unless DECODER_RECIPES overrides them).
TFLITE_RECIPES: dict[TflitePrecision, TfliteRecipe] = {
    TflitePrecision.FP32: TfliteRecipe(TflitePrecision.FP32),
    TflitePrecision.FP16: TfliteRecipe(TflitePrecision.FP16),
    # FULLY_CONNECTED and CONV_2D but the patch embedding's (docs/tflite.md, fast encoder graph, probe photo): FC only
    # e2e mask IoU 0.991; + every CONV_2D 0.975; + every CONV_2D but the patch embedding 0.980 (~12 % faster than
    # FC only: the MBConv 1x1 convs at 256x256 and the neck's 3x3 carry a fifth of the encoder's time). The
    # depthwise convs stay float: with them the embedding error rose from 2 % to 20 % of its range (IoU 0.79).
    TflitePrecision.INT8_DYNAMIC: TfliteRecipe(TflitePrecision.INT8_DYNAMIC, op_types=("FULLY_CONNECTED", "CONV_2D"),
                                               float_scopes=("PatchEmbed",)),
    # Full integer: int8 weights (per channel) and int8 activations (per tensor, min/max calibrated on real photos).
    # Encoder: FULLY_CONNECTED and BATCH_MATMUL only. The per-layer study (docs/tflite.md) found two culprits:
    # TinyViT's convs (MBConv stages, local depthwise convs: conv-only int8 gave e2e 0.77) and the int8 residual
    # stream that LayerNorm normalizes (per-tensor int8 rounding of windows whose variance is near 0 is blown up by
    # 1/sigma; all-int8 with convs, LayerNorm and residual ADDs float still gave 0.90). FC + BATCH_MATMUL: 0.99.
    TflitePrecision.INT8: TfliteRecipe(
        TflitePrecision.INT8,
        calibrated=True,
        int8_ops=("FULLY_CONNECTED", "BATCH_MATMUL"),
    ),
}

# The decoder's own recipes where they differ, for the upstream-shaped decoder graph (`--decoder-graph reference`;
# LiteRT's default until session 3, docs/tflite.md). Its int8 FULLY_CONNECTED layers (even the per-pixel ones)
# cost 0.06 of decoder mask IoU on the synthetic weights (0.90 with all of them, 0.94 with min_rows=1024), its
# convs 0.027 (0.973 alone): int8-dynamic quantizes the convs (mask downscaling and upscaling) only.
DECODER_RECIPES: dict[TflitePrecision, TfliteRecipe] = {
    TflitePrecision.INT8_DYNAMIC: TfliteRecipe(TflitePrecision.INT8_DYNAMIC, op_types=_CONVS, min_rows=1024),
    # Full integer on the image side (4096-row FULLY_CONNECTED, BATCH_MATMUL, the elementwise ops, the mask
    # downscaling convs) with four float islands, each found by the per-layer study (docs/tflite.md):
    # - the prompt encoding (top-level ops of the graph): int8 point labels cannot hold the box-corner labels 2 and
    #   3 (the EQUAL constants quantized to 1.0), so box prompts lost their corner embeddings (decoder IoU 0.54);
    # - every op with < 1024 rows: the token path (prompt tokens, IoU/mask tokens, hypernetwork MLPs);
    # - LayerNorm entirely (not only its statistics) and LayerNorm2d; Softmax, GELU, TRANSPOSE_CONV as before;
    # - the mask-input branch (mask_downscaling): calibration prompts never pass a mask, so its ranges are unknown.
    TflitePrecision.INT8: TfliteRecipe(
        TflitePrecision.INT8,
        calibrated=True,
        float_ops=(*LAYERNORM_OPS, *SOFTMAX_OPS, *GELU_OPS, *UPSCALING_OPS),
        float_scopes=(r"DecoderGraph_module;\d+;", "LayerNorm", "mask_downscaling"),
        min_rows=1024,
    ),
}

# The same for the fast decoder graph (LiteRT's default). It has no image-side projections left (they are
# folded onto the prompt side) and does the upscaling as two FULLY_CONNECTED on 4096 / 16384 rows: with
# min_rows=1024, FULLY_CONNECTED + convs quantizes exactly the upscaling again (and the mask-input convs).
FAST_DECODER_RECIPES: dict[TflitePrecision, TfliteRecipe] = {
    TflitePrecision.INT8_DYNAMIC: TfliteRecipe(TflitePrecision.INT8_DYNAMIC, op_types=("FULLY_CONNECTED", *_CONVS),
                                               min_rows=1024),
    # Full integer (int8 activations too) on the two upscaling FULLY_CONNECTED, the rest float (with the same
    # float islands as above). The fast graph's other image-side ops are activation x activation BATCH_MATMULs and
    # residual ADDs: int8 there measured decoder mask IoU 0.81; FULLY_CONNECTED only 0.985 (chelsea probe).
    TflitePrecision.INT8: TfliteRecipe(
        TflitePrecision.INT8,
        calibrated=True,
        float_ops=(*LAYERNORM_OPS, *SOFTMAX_OPS, *GELU_OPS),
        float_scopes=(r"DecoderGraph_module;\d+;", "LayerNorm", "mask_downscaling"),
        min_rows=1024,
        int8_ops=("FULLY_CONNECTED",),  # the two upscaling matmuls (all other FULLY_CONNECTED have < 1024 rows)
    ),
}


def recipe_for(precision: str | TflitePrecision, part: str, decoder_graph: str = "reference") -> TfliteRecipe:
    """The recipe of one part ("encoder" or "decoder") in one precision (decoder: for that decoder graph)."""
    p = TflitePrecision(precision)
    decoder = FAST_DECODER_RECIPES if decoder_graph == "fast" else DECODER_RECIPES
    return (decoder.get(p) if part == "decoder" else None) or TFLITE_RECIPES[p]


class QuantizationError(PocketSamError, RuntimeError):
    """ai-edge-quantizer failed or was asked for something it cannot do."""


def quantize_tflite(
    fp32_path: Path,
    out_path: Path,
    recipe: TfliteRecipe,
    calibration: dict[str, list[dict[str, np.ndarray]]] | None = None,
) -> Path:
    """Write `fp32_path` quantized by `recipe` to `out_path` (fp32 is a copy).

    `calibration`: {signature key: [feed dict by the signature's input names]} for calibrated recipes.
    """
    if recipe.precision is TflitePrecision.FP32:
        out_path.write_bytes(Path(fp32_path).read_bytes())
        return out_path
    if recipe.calibrated and not calibration:
        raise QuantizationError(f"{recipe.precision.value} needs calibration images")
    from ai_edge_quantizer import quantizer

    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):  # its own bars and reports
            q = quantizer.Quantizer(str(fp32_path), recipe.aeq_recipe(Path(fp32_path)))
            result = None
            if q.need_calibration:
                result = _calibrate(q, Path(fp32_path), calibration)
            quantized = q.quantize(result, enable_progress_bar=False, enable_progress_report=False)
            quantized.export_model(str(out_path), overwrite=True)
    except PocketSamError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise QuantizationError(f"ai-edge-quantizer failed on {Path(fp32_path).name} ({recipe.precision.value}): "
                                f"{first}") from e
    return out_path



def _calibrate(q: Any, fp32_path: Path, calibration: dict[str, list[dict[str, np.ndarray]]]) -> dict[str, Any]:
    """Activation min/max per tensor, tracked in C++ by the interpreter's profiler (ai-edge-quantizer's
    CALIBRATION_PROFILER_BASED mode): ~15 s for the vit_t encoder on 7 photos, where the default mode (every tensor
    kept, then read op by op in Python) took ~8 min. The profiler reports every statistic as a scalar, where the
    quantizer expects one value per axis of the tensor (keepdims) for per-tensor ranges: reshaped here."""
    from ai_edge_quantizer.calibrator import CalibrationMode

    result = q.calibrate(calibration, num_threads=os.cpu_count() or 1, mode=CalibrationMode.CALIBRATION_PROFILER_BASED)
    ranks = _tensor_ranks(fp32_path)
    for name, qsv in result.items():
        rank = ranks.get(name)
        for key in ("min", "max"):
            if key in qsv and rank is not None and np.ndim(qsv[key]) != rank and np.size(qsv[key]) == 1:
                qsv[key] = np.reshape(qsv[key], (1,) * rank)
    return result


def _tensor_ranks(model_path: Path) -> dict[str, int]:
    """{tensor name: rank} over every subgraph of a .tflite."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(Path(model_path).read_bytes(), 0)
    ranks = {}
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            ranks[t.Name().decode()] = t.ShapeLength()
    return ranks
