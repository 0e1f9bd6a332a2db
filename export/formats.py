"""The export formats, in a plain dict: each declares its recipes (hence its precisions) and the function that
writes its two parts.

Importing this module imports no converter and no torch (the CLI lists formats, precisions and graphs from it on a
runtime-only install): each format's recipes are plain data (`<format>/recipes.py`), and its exporter is imported
only when a job runs. `export_bundle` is format-agnostic: it builds the model, reads calibration images, calls the
format's `export_parts`, then records the probe, measures parity and writes the manifest the same way for every
format. Adding a precision is one recipe entry plus one parity row (`pocketsam.runtime.parity`); a test fails when
the row is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Mapping

from .coreml.recipes import COREML_RECIPES
from .core import ExportJob
from .onnx.recipes import ONNX_RECIPES
from .tflite.recipes import TFLITE_RECIPES

# The graphs `--encoder-graph` / `--decoder-graph` pick (built by `graphs.encoder_graph` / `graphs.decoder_graph`).
# Encoder: "fast" (export/encoder_rewrite.py), "fast-grouped" (the same with the q, k, v projections grouped over
# heads: `EncoderRewrite.grouped_qkv`) or "reference" (upstream-shaped TinyViT). Decoder: "fast"
# (export/decoder_rewrite.py) or "reference", the upstream-shaped graph the PyTorch reference runs, for comparing or
# for ruling the rewrite out when a result looks wrong. Each format has its defaults (below).
ENCODER_GRAPHS = ("fast", "fast-grouped", "reference")
DECODER_GRAPHS = ("fast", "reference")


@dataclass(frozen=True)
class FormatExporter:
    """One export format."""

    name: str
    # {precision enum: recipe}: the format's precisions, in the order the CLI lists them.
    recipes: Mapping[Enum, Any]
    # Writes both parts; returns {part: {input name: shape as written (symbolic axes stay strings)}}.
    export_parts: Callable[[ExportJob], dict[str, dict[str, list]]]
    steps: int = 4  # how many times export_parts calls job.step (progress bar length)
    # None when this machine can run the format's models (parity is measured at export), else the reason why not.
    cannot_run_here: Callable[[], str | None] = lambda: None
    # The decoder graph exported unless --decoder-graph says otherwise: the fast one where it was measured faster,
    # the upstream-shaped one elsewhere (the measurements: docs/performance.md, docs/tflite.md).
    default_decoder_graph: str = "reference"
    # The same for the encoder; `encoder_graph_by_precision` overrides it for precisions measured otherwise.
    default_encoder_graph: str = "reference"
    encoder_graph_by_precision: dict[str, str] = field(default_factory=dict)

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(p.value for p in self.recipes)

    @property
    def calibrated(self) -> frozenset[str]:
        """The precisions that need calibration images."""
        return frozenset(p.value for p, r in self.recipes.items() if r.calibrated)

    def encoder_graph_for(self, precision: str) -> str:
        """The encoder graph exported for `precision` unless --encoder-graph says otherwise."""
        return self.encoder_graph_by_precision.get(precision, self.default_encoder_graph)


def _export_onnx(job: ExportJob) -> dict[str, dict[str, list]]:
    from .onnx.export import export_onnx_parts

    return export_onnx_parts(job)


def _export_tflite(job: ExportJob) -> dict[str, dict[str, list]]:
    from .tflite.export import export_tflite_parts

    return export_tflite_parts(job)


def _export_coreml(job: ExportJob) -> dict[str, dict[str, list]]:
    from .coreml.export import export_coreml_parts

    return export_coreml_parts(job)


def _litert_missing() -> str | None:
    import importlib.util

    if importlib.util.find_spec("ai_edge_litert") is None:
        return "ai-edge-litert is not installed (pip install 'pocketsam[tflite]')"
    return None


def _coreml_cannot_predict() -> str | None:
    import platform

    if platform.system() != "Darwin":
        return f"CoreML prediction needs macOS (this is {platform.system()}): run `pocketsam verify` on a Mac"
    return None


FORMATS: dict[str, FormatExporter] = {
    "onnx": FormatExporter(
        name="onnx",
        recipes=ONNX_RECIPES,
        export_parts=_export_onnx,
        steps=5,  # tracing 2, quantizing 2, the encoder's pieces 1
        default_decoder_graph="fast",
        default_encoder_graph="fast",
    ),
    "tflite": FormatExporter(
        name="tflite",
        recipes=TFLITE_RECIPES,
        export_parts=_export_tflite,
        cannot_run_here=_litert_missing,
        default_decoder_graph="fast",  # its image-side products as einsum, so they become BATCH_MATMUL
        default_encoder_graph="fast",
        # Full int8 puts QUANTIZE/DEQUANTIZE around every integer op, and the fast graph's per-head projections
        # triple them; int8-dynamic quantizes every FULLY_CONNECTED's input on the fly, and grouped q/k/v
        # projections quantize each window tensor 3 times instead of 3 x heads.
        encoder_graph_by_precision={"int8": "reference", "int8-dynamic": "fast-grouped"},
    ),
    "coreml": FormatExporter(
        name="coreml",
        recipes=COREML_RECIPES,
        export_parts=_export_coreml,
        cannot_run_here=_coreml_cannot_predict,
        default_decoder_graph="reference",  # not measured: CoreML predicts only on macOS
        default_encoder_graph="reference",
    ),
}

# Every precision any format knows, in first-seen order: the CLI's choices (each format validates its own).
ALL_PRECISIONS = tuple(dict.fromkeys(p for f in FORMATS.values() for p in f.precisions))
