"""LiteRT quantization recipes, per part: data only (an Enum of precisions and a dataclass with a comment on every
field). `pocketsam.export.tflite.quantize` turns a recipe into ai-edge-quantizer rules and applies it; the CLI and
the format registry read the precisions from here without importing any converter.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


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


# BATCH_MATMUL counts as weighted when one operand is a constant (the fast decoder's folded projections,
# export/decoder_rewrite.py). Dynamic-range quantization must leave those float: it quantizes the constant even when
# it is the left operand, and TFLite's kernel has no int8 x float BATCH_MATMUL ("failed to prepare").
WEIGHTED_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D_TRANSPOSE", "EMBEDDING_LOOKUP",
                "BATCH_MATMUL")

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
# docs/tflite.md). Its int8 FULLY_CONNECTED layers (even the per-pixel ones)
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
