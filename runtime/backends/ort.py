"""ONNX Runtime backend (`pip install pocketsam[onnx]`).

Options: `threads` (intra-op threads; 0 lets ONNX Runtime choose), `providers` (execution providers in priority
order, e.g. ["CUDAExecutionProvider", "CPUExecutionProvider"]; default: CPU), `optimization` ("all", "extended",
"basic", "disabled"), `flush_denormals` (default True: see `open_session`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BackendError, BundleError, MissingEngineError
from ..spec import GraphSpec
from ._io import check_io_names

_LEVELS = ("disabled", "basic", "extended", "all")


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise MissingEngineError(
            "the onnxruntime backend needs ONNX Runtime: pip install 'pocketsam[onnx]'"
        ) from None
    return onnxruntime


class OrtSession:
    """A Session over an `onnxruntime.InferenceSession`."""

    def __init__(self, session, path: Path) -> None:
        self._session = session
        self.path = path
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.providers = session.get_providers()

    def describe_io(self) -> list[tuple[str, str, list, str]]:
        """(kind, name, shape, type) of every input and output, as ONNX Runtime reads them from the file."""
        rows = [("input", i.name, i.shape, i.type) for i in self._session.get_inputs()]
        return rows + [("output", o.name, o.shape, o.type) for o in self._session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._session.run(self.output_names, {k: feeds[k] for k in self.input_names})
        return dict(zip(self.output_names, outputs))


def session_options(threads: int = 0, optimization: str = "all", flush_denormals: bool = True):
    """The `onnxruntime.SessionOptions` pocketsam runs a graph with (`open_session`; the profiler uses the same)."""
    ort = _import_ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    if flush_denormals:
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    return options


def open_session(
    path: Path,
    graph: GraphSpec,
    threads: int = 0,
    providers: Sequence[str] | None = None,
    optimization: str = "all",
    flush_denormals: bool = True,
) -> OrtSession:
    """Load an .onnx file and check its I/O against `graph`.

    `flush_denormals`: treat subnormal floats (|x| < 1.2e-38) as zero, as XNNPACK (LiteRT) does by default. The
    decoder's softmax over 4096 image tokens yields subnormal probabilities, and x86 FMAs on subnormal operands
    take a slow microcode path: the fp32 decoder measured 24.9 -> 21.1 ms with this on (2 threads, interleaved,
    docs/performance.md); outputs move by less than the smallest normal float times the weights.
    """
    ort = _import_ort()
    if optimization not in _LEVELS:
        raise BackendError(f"unknown optimization level {optimization!r} (choose from {', '.join(_LEVELS)})")
    available = ort.get_available_providers()
    providers = list(providers or ["CPUExecutionProvider"])
    missing = [p for p in providers if p not in available]
    if missing:
        raise BackendError(f"execution provider(s) {missing} not in this onnxruntime (available: {available})")
    options = session_options(threads, optimization, flush_denormals)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types; all mean a bad file here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BundleError(f"{path}: ONNX Runtime cannot load this model ({first})") from None
    wrapped = OrtSession(session, path)
    check_io_names(path, graph, wrapped.input_names, wrapped.output_names)
    return wrapped
