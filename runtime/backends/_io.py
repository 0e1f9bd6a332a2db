"""Checks shared by every backend: the model file's I/O must be the graph spec's."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import BundleError
from ..spec import IO_VARIANTS, GraphSpec


def check_io_names(path: Path, graph: GraphSpec, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    """Raise BundleError when a model file's input/output names are not exactly those of the spec or of one of its
    variants (`spec.IO_VARIANTS`: a decoder may carry the image cache), order-insensitive."""
    variants = IO_VARIANTS.get(graph.name, (graph,))
    if graph not in variants:
        variants = (graph,)
    if any(sorted(inputs) == sorted(v.input_names) and sorted(outputs) == sorted(v.output_names) for v in variants):
        return
    for kind, got, want in (("inputs", inputs, graph.input_names), ("outputs", outputs, graph.output_names)):
        if sorted(got) != sorted(want):
            raise BundleError(
                f"{path}: {kind} {sorted(got)} do not match the {graph.name} spec's {sorted(want)} "
                "(not a pocketsam graph, or exported under another spec version)"
            )
