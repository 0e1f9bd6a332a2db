"""What every format's exporter shares: the job it is handed, its error types, and the check of a converted file
against PyTorch. Torch-free (the format registry and the CLI import it); the torch side of the check is
`graphs.check_against_torch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pocketsam.runtime.parity import checks_for
from pocketsam.runtime.spec import GraphSpec


class ConversionError(Exception):
    """A converter or quantizer failed: not a mistake of the user's (the CLI exits 3 for these, not 2, and says how
    to see the full traceback)."""


class ExportError(ConversionError):
    """A converter failed on a graph (the message names the graph and the converter)."""


class QuantizationError(ConversionError):
    """A quantizer failed or was asked for something it cannot do."""


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


# fp32 conversion: the converted file must compute what eager PyTorch computes, on sizes other than the trace's.
(CONVERSION_CHECK,) = checks_for("conversion", "fp32")


def check_conversion(path: Path, graph: GraphSpec, want: dict[str, np.ndarray], got: dict[str, np.ndarray],
                     where: str = "") -> None:
    """ExportError unless every output of `got` (the converted file's) is `want` (eager PyTorch's) within the parity
    table's conversion bound: max |got - want| relative to max(|want|, 1). `where` names the inputs' sizes."""
    for name in graph.output_names:
        w, g = want[name], got[name]
        err = float(np.abs(w - g).max()) / max(float(np.abs(w).max()), 1.0) if w.shape == g.shape else float("inf")
        if not CONVERSION_CHECK.passes(err):
            raise ExportError(
                f"{path.name}: output {name}{where} differs from PyTorch by {err:.3g} of its range (bound "
                f"{CONVERSION_CHECK.bound:g}; shapes {w.shape} vs {g.shape}): a symbolic axis frozen while tracing, "
                "or a converter bug"
            )
