"""ONNX Runtime quantization recipes, per part: data only (an Enum of precisions and a dataclass with a comment on
every field). `pocketsam.export.onnx.quantize` applies them; the CLI and the format registry read the precisions
from here without importing onnx.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class OnnxPrecision(str, Enum):
    """Precisions an ONNX part can be exported in (the names the CLI, manifests and parity table use)."""

    FP32 = "fp32"
    FP16 = "fp16"  # float16 weights and compute, float32 I/O
    INT8_DYNAMIC = "int8-dynamic"  # int8 weights, activations quantized on the fly per tensor
    INT8_STATIC = "int8-static"  # int8 weights and activations (QDQ), activation ranges calibrated on real images


@dataclass(frozen=True)
class OnnxRecipe:
    """How one part is quantized for ONNX Runtime."""

    precision: OnnxPrecision
    # Op types that get int8 weights/activations; everything else (LayerNorm, Softmax, GELU, Add, ConvTranspose
    # for the mask upscaling) stays float, where int8 costs most accuracy for little speed.
    op_types: tuple[str, ...] = ()
    # One scale per output channel: TinyViT's depthwise convs and the decoder's projections have channels whose
    # ranges differ by 100x, which one per-tensor scale flattens to zero.
    per_channel: bool = True
    # Needs a calibration iterator (static activation ranges).
    calibrated: bool = False
    # Only nodes with a constant weight whose activation input has at least this many rows (tokens or pixels) are
    # quantized. The per-pixel projections (64x64 = 4096 rows in the decoder, far more in the encoder) carry the
    # FLOPs; the per-token ones (a handful of prompt tokens) cost nothing in float and carry the prompt, and
    # activation x activation MatMuls (attention scores, the final mask product) must never get a per-tensor scale.
    min_rows: int = 1024


ONNX_RECIPES: dict[OnnxPrecision, OnnxRecipe] = {
    OnnxPrecision.FP32: OnnxRecipe(OnnxPrecision.FP32),
    OnnxPrecision.FP16: OnnxRecipe(OnnxPrecision.FP16),
    # MatMul/Gemm only: with Conv included, ConvInteger makes the encoder ~2x slower on x86 (TOOLCHAIN.md).
    OnnxPrecision.INT8_DYNAMIC: OnnxRecipe(OnnxPrecision.INT8_DYNAMIC, op_types=("MatMul", "Gemm")),
    # MatMul/Gemm only, as for dynamic: with Conv included (per-tensor u8 activations of TinyViT's MBConv stages
    # at 256x256 and 128x128), the encoder's embedding error rose to 86% of its range and e2e mask IoU fell to
    # 0.76 on the synthetic weights; MatMul/Gemm alone measured 0.99 (docs/quantization.md).
    OnnxPrecision.INT8_STATIC: OnnxRecipe(OnnxPrecision.INT8_STATIC, op_types=("MatMul", "Gemm"), calibrated=True),
}
