"""CoreML backend (`pip install 'pocketsam[coreml]'`, prediction on macOS only).

Options: `compute_units`, one of "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL" (default "ALL": Core ML picks
the Neural Engine where it can). `threads` is accepted and ignored (Core ML schedules its own threads), so the
CLI's `--threads` does not break CoreML bundles.

The package is checked before Core ML sees it (`pocketsam.runtime.coreml_structure`): a damaged .mlpackage or one
whose I/O is not the spec's is a BundleError naming the problem. Off macOS, opening a session is one BackendError
saying prediction needs macOS; `pocketsam info` and `pocketsam verify --structure` still work there.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from ..coreml_structure import check_structure, import_coremltools
from ..errors import BackendError, BundleError
from ..spec import GraphSpec

COMPUTE_UNITS = ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")


def prediction_unavailable() -> str | None:
    """Why Core ML prediction cannot run here (None on macOS)."""
    if platform.system() != "Darwin":
        return (f"CoreML prediction needs macOS (this is {platform.system()}); here `pocketsam info` and "
                "`pocketsam verify --structure` check CoreML bundles without running them")  # fmt: skip
    return None


class CoreMLSession:
    """A Session over a `coremltools.models.MLModel`."""

    def __init__(self, model, path: Path, compute_units: str) -> None:
        self._model = model
        self.path = path
        self.compute_units = compute_units
        desc = model.get_spec().description
        self.input_names = [i.name for i in desc.input]
        self.output_names = [o.name for o in desc.output]

    def describe_io(self) -> list[tuple[str, str, list, str]]:
        from ..coreml_structure import read_structure

        s = read_structure(self.path)
        return [("input", t.name, list(t.shape), t.dtype) for t in s.inputs] + [
            ("output", t.name, list(t.shape), t.dtype) for t in s.outputs
        ]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self._model.predict({k: np.ascontiguousarray(feeds[k], dtype=np.float32) for k in self.input_names})
        return {k: np.asarray(out[k], dtype=np.float32) for k in self.output_names}


def open_session(path: Path, graph: GraphSpec, compute_units: str = "ALL", threads: int | None = None) -> CoreMLSession:
    """Check an .mlpackage against `graph`, then load it with Core ML on the given compute units."""
    del threads  # Core ML has no thread option
    if not isinstance(compute_units, str) or compute_units.upper() not in COMPUTE_UNITS:
        raise BackendError(f"unknown compute units {compute_units!r} (choose from {', '.join(COMPUTE_UNITS)})")
    compute_units = compute_units.upper()
    ct = import_coremltools()
    check_structure(path, graph)  # damaged package, wrong I/O: a BundleError before Core ML sees the file
    why = prediction_unavailable()
    if why is not None:
        raise BackendError(why)
    try:
        model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
    except Exception as e:  # Core ML's compile errors come as RuntimeError/ValueError with long texts
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BundleError(f"{path}: Core ML cannot load this model ({first})") from None
    return CoreMLSession(model, Path(path), compute_units)
