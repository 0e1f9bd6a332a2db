"""The export formats, in a plain dict: each declares its precisions and the function that writes its two parts.

`export_bundle` is format-agnostic: it builds the model, reads calibration images, calls the format's
`export_parts`, then records the probe, measures parity and writes the manifest the same way for every format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

# The graphs `--encoder-graph` / `--decoder-graph` pick (built by `graphs.encoder_graph` / `graphs.decoder_graph`;
# named here so the CLI lists them without importing torch). Encoder: "fast" (export/encoder_rewrite.py),
# "fast-grouped" (the same with the q, k, v projections grouped over heads: `EncoderRewrite.grouped_qkv`) or
# "reference" (upstream-shaped TinyViT). Decoder: "fast" (export/decoder_rewrite.py) or "reference", the
# upstream-shaped graph the PyTorch reference runs, for comparing or for ruling the rewrite out when a result looks
# wrong. Each format has its defaults (`FormatExporter.default_decoder_graph`, `encoder_graph_for`).
ENCODER_GRAPHS = ("fast", "fast-grouped", "reference")
DECODER_GRAPHS = ("fast", "reference")


@dataclass
class ExportJob:
    """Everything a format's `export_parts` needs. Parts are written as `out_dir/<part><extension>`."""

    model: Any  # pocketsam.export.model.MobileSam
    out_dir: Path
    precisions: dict[str, str]  # {"encoder": "fp32", "decoder": "int8-dynamic"}
    calibration: list[np.ndarray]  # HxWx3 uint8 RGB photos; empty unless a precision needs calibration
    metadata: dict[str, str]  # stamped into every model file (weights id, spec version)
    step: Callable[[str], None]  # progress: call once per unit of work with what is being done
    options: dict[str, Any] = field(default_factory=dict)  # format-specific (e.g. decoder_points for TFLite)
    decoder_graph: str = "fast"  # one of graphs.DECODER_GRAPHS (export_bundle passes the format's default)
    encoder_graph: str = "reference"  # one of graphs.ENCODER_GRAPHS (likewise)

    def encoder_module(self, same_stride2: bool = False):
        """The encoder graph module to convert (`graphs.encoder_graph` of the job's model; `same_stride2`: LiteRT's
        form of the fast graphs' stride-2 convs)."""
        from .graphs import encoder_graph

        return encoder_graph(self.model, self.encoder_graph, same_stride2)

    def decoder_module(self, rewrite=None):
        """The decoder graph module to convert (`graphs.decoder_graph` of the job's model; `rewrite`: the target
        engine's form of the fast graph's products, a `decoder_rewrite.DecoderRewrite`, default the plain one)."""
        from .graphs import decoder_graph

        return decoder_graph(self.model, self.decoder_graph, rewrite)


@dataclass(frozen=True)
class FormatExporter:
    """One export format."""

    name: str
    precisions: tuple[str, ...]
    calibrated: frozenset[str]  # precisions that need calibration images
    # Writes both parts; returns {part: {input name: shape as written (symbolic axes stay strings)}}.
    export_parts: Callable[[ExportJob], dict[str, dict[str, list]]]
    steps: int = 4  # how many times export_parts calls job.step (progress bar length)
    # None when this machine can run the format's models (parity is measured at export), else the reason why not.
    cannot_run_here: Callable[[], str | None] = lambda: None
    # The decoder graph exported unless --decoder-graph says otherwise (graphs.DECODER_GRAPHS): the fast one where
    # it was measured faster (onnxruntime), the upstream-shaped one elsewhere (docs/performance.md).
    default_decoder_graph: str = "reference"
    # The same for the encoder (graphs.ENCODER_GRAPHS): fast where measured faster (LiteRT, onnxruntime), else the
    # reference; `encoder_graph_by_precision` overrides it for the encoder precisions measured otherwise.
    default_encoder_graph: str = "reference"
    encoder_graph_by_precision: dict[str, str] = field(default_factory=dict)

    def encoder_graph_for(self, precision: str) -> str:
        """The encoder graph exported for `precision` unless --encoder-graph says otherwise."""
        return self.encoder_graph_by_precision.get(precision, self.default_encoder_graph)


def _onnx() -> FormatExporter:
    from .onnx import export_onnx_parts
    from .quantize import ONNX_RECIPES

    return FormatExporter(
        name="onnx",
        precisions=tuple(p.value for p in ONNX_RECIPES),
        calibrated=frozenset(p.value for p, r in ONNX_RECIPES.items() if r.calibrated),
        export_parts=export_onnx_parts,
        default_decoder_graph="fast",  # decoder 1.5-1.8x faster in onnxruntime (docs/performance.md)
        default_encoder_graph="fast",  # 5-9 % faster in onnxruntime on an Intel VM, equal on an AMD one (§5, §6.5)
    )


def _tflite() -> FormatExporter:
    from .tflite import export_tflite_parts
    from .tflite_quantize import TFLITE_RECIPES

    def cannot_run_here() -> str | None:
        try:
            import ai_edge_litert  # noqa: F401
        except ImportError:
            return "ai-edge-litert is not installed (pip install 'pocketsam[tflite]')"
        return None

    return FormatExporter(
        name="tflite",
        precisions=tuple(p.value for p in TFLITE_RECIPES),
        calibrated=frozenset(p.value for p, r in TFLITE_RECIPES.items() if r.calibrated),
        export_parts=export_tflite_parts,
        cannot_run_here=cannot_run_here,
        # fast, its image-side products as einsum (BATCH_MATMUL): 54 ms against 71 ms for the upstream-shaped
        # decoder under XNNPACK (docs/tflite.md); as plain matmuls litert-torch made them slow FULLY_CONNECTEDs
        default_decoder_graph="fast",
        default_encoder_graph="fast",  # LiteRT encoder ~15 % faster (docs/tflite.md)
        # Full int8 puts QUANTIZE/DEQUANTIZE around every integer op: the fast graph's per-head projections triple
        # them (encoder 0.91x eager against 1.07-1.20x for the upstream-shaped graph, docs/tflite.md).
        # int8-dynamic quantizes every FULLY_CONNECTED's input on the fly: grouped q/k/v projections quantize each
        # window tensor 3 times instead of 3 x heads (encoder 288 -> 266 ms, docs/performance.md §6).
        encoder_graph_by_precision={"int8": "reference", "int8-dynamic": "fast-grouped"},
    )


def _coreml() -> FormatExporter:
    from .coreml import COREML_RECIPES, cannot_run_here, export_coreml_parts

    return FormatExporter(
        name="coreml",
        precisions=tuple(p.value for p in COREML_RECIPES),
        calibrated=frozenset(p.value for p, r in COREML_RECIPES.items() if r.calibrated),
        export_parts=export_coreml_parts,
        steps=4,
        cannot_run_here=cannot_run_here,
        default_decoder_graph="reference",  # not measured: CoreML predicts only on macOS
        default_encoder_graph="reference",  # likewise
    )


# Builders, so importing this module imports no converter: `pocketsam export --format X` loads only X's.
FORMATS: dict[str, Callable[[], FormatExporter]] = {
    "onnx": _onnx,
    "tflite": _tflite,
    "coreml": _coreml,
}

# Every precision any format knows, for the CLI's choices (each format validates its own).
ALL_PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static", "int8", "palettized-6", "palettized-4", "w8a8")
