"""W8A8 for CoreML: int8 activations with ranges calibrated on real photos, then int8 weights.

coremltools calibrates activation ranges by *running* the model on the calibration feeds
(`coremltools.optimize.coreml.linear_quantize_activations`), and Core ML runs only on macOS: so W8A8 is exported on
a Mac. Elsewhere the export stops before any work with one error that says so (`w8a8_unavailable`).
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path

import numpy as np

from .onnx import ExportError


def w8a8_unavailable() -> str | None:
    """Why W8A8 cannot be exported here (None on macOS)."""
    if platform.system() != "Darwin":
        return (f"coreml w8a8 needs macOS to export (this is {platform.system()}): coremltools calibrates "
                "activation ranges by running the model with Core ML; export fp16, int8 or palettized-6/-4 here, "
                "or run the same command on a Mac")  # fmt: skip
    return None


def quantize_w8a8(mlmodel, calibration: list[dict[str, np.ndarray]]):
    """int8 activations (linear symmetric, ranges from `calibration`, feeds of real photos) + int8 weights."""
    why = w8a8_unavailable()
    if why is not None:
        raise ExportError(why)
    if not calibration:
        raise ExportError("coreml w8a8 needs calibration feeds (real photos)")
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    with tempfile.TemporaryDirectory() as tmp:
        if getattr(mlmodel, "__proxy__", None) is None:  # converted with skip_model_load: load it to calibrate
            path = Path(tmp) / "fp16.mlpackage"
            mlmodel.save(str(path))
            mlmodel = ct.models.MLModel(str(path))
        names = [i.name for i in mlmodel.get_spec().description.input]
        samples = [{k: np.ascontiguousarray(f[k], dtype=np.float32) for k in names} for f in calibration]
        act = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"))
        a8 = cto.linear_quantize_activations(mlmodel, act, samples)
        w8 = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel"))  # fmt: skip
        return cto.linear_quantize_weights(a8, w8)
