"""Engine backends: one small module per engine, each `open_session(path, spec, **options) -> Session`.

A plain dict is the registry. Engines are imported only when a session is opened, so a missing engine is an error
that names the pip extra to install, and installing `pocketsam[onnx]` alone never needs the other engines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import BackendError
from ..session import Session
from ..spec import GraphSpec
from . import coreml, litert, ort

Opener = Callable[..., Session]

BACKENDS: dict[str, Opener] = {
    "onnxruntime": ort.open_session,
    "litert": litert.open_session,
    "coreml": coreml.open_session,
}

# The backend used for a bundle format when the user names none.
DEFAULT_BACKEND: dict[str, str] = {"onnx": "onnxruntime", "tflite": "litert", "coreml": "coreml"}

# Which formats each backend reads.
BACKEND_FORMATS: dict[str, tuple[str, ...]] = {"onnxruntime": ("onnx",), "litert": ("tflite",), "coreml": ("coreml",)}


def open_session(backend: str, path: Path, graph: GraphSpec, **options: Any) -> Session:
    """Open `path` with the named backend; options are the backend's own (threads, providers, delegates…)."""
    if backend not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise BackendError(f"unknown backend {backend!r} (available: {known})")
    return BACKENDS[backend](Path(path), graph, **options)
