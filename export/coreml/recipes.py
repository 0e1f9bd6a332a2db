"""CoreML recipes, per part: data only (an Enum of precisions and a dataclass with a comment on every field).
`pocketsam.export.coreml.quantize` applies their compression; the CLI and the format registry read the precisions
from here without importing coremltools.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class CoreMLPrecision(str, Enum):
    """Precisions a CoreML part can be exported in (manifest, CLI and parity-table names)."""

    FP32 = "fp32"  # fp32 weights and compute (CPU/GPU only: the Neural Engine computes in fp16)
    FP16 = "fp16"  # fp16 weights and compute, audited ops kept fp32: what the Neural Engine runs
    INT8 = "int8"  # int8 weights (linear symmetric, per output channel), fp16 compute
    PALETTIZED_6 = "palettized-6"  # 6-bit k-means palette per weight tensor, fp16 compute
    PALETTIZED_4 = "palettized-4"  # 4-bit k-means palette per weight tensor, fp16 compute
    W8A8 = "w8a8"  # int8 activations (calibrated on photos) and int8 weights


@dataclass(frozen=True)
class CoreMLRecipe:
    """How one part is made for CoreML."""

    precision: CoreMLPrecision
    fp16_compute: bool  # fp16 compute precision with the audited op selection (everything but fp32)
    compression: str | None = None  # "int8" | "palettize" | "w8a8" | None
    nbits: int | None = None  # palette size in bits
    # Needs photos: the fp16 audit's magnitudes choose the fp32 ops of every fp16 recipe; W8A8 also calibrates.
    calibrated: bool = True


COREML_RECIPES: dict[CoreMLPrecision, CoreMLRecipe] = {
    CoreMLPrecision.FP32: CoreMLRecipe(CoreMLPrecision.FP32, fp16_compute=False, calibrated=False),
    CoreMLPrecision.FP16: CoreMLRecipe(CoreMLPrecision.FP16, fp16_compute=True),
    CoreMLPrecision.INT8: CoreMLRecipe(CoreMLPrecision.INT8, fp16_compute=True, compression="int8"),
    CoreMLPrecision.PALETTIZED_6: CoreMLRecipe(CoreMLPrecision.PALETTIZED_6, True, "palettize", nbits=6),
    CoreMLPrecision.PALETTIZED_4: CoreMLRecipe(CoreMLPrecision.PALETTIZED_4, True, "palettize", nbits=4),
    CoreMLPrecision.W8A8: CoreMLRecipe(CoreMLPrecision.W8A8, fp16_compute=True, compression="w8a8"),
}
