"""CoreML weight and activation compression (`coremltools.optimize.coreml`) by recipe (`recipes.py`).

Weights: int8 linear (per channel) or k-means palettes of 6 or 4 bits, on top of fp16 compute. W8A8: int8
activations with ranges calibrated on real photos, then int8 weights. coremltools calibrates activation ranges by *running* the model on the calibration feeds
(`coremltools.optimize.coreml.linear_quantize_activations`), and Core ML runs only on macOS: so W8A8 is exported on
a Mac. Elsewhere the export stops before any work with one error that says so (`w8a8_unavailable`).
"""

from __future__ import annotations

import contextlib
import io
import platform
import tempfile
import warnings
from pathlib import Path

import numpy as np

from pocketsam.runtime.errors import BackendError

from ..core import ExportError
from .recipes import CoreMLRecipe


def quiet() -> contextlib.ExitStack:
    """Silence coremltools' progress bars and warnings during conversion and compression."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def compress(mlmodel, recipe: CoreMLRecipe, calibration: list[dict[str, np.ndarray]] | None = None):
    """Apply the recipe's weight (and activation) compression to a converted fp16 model."""
    import coremltools.optimize.coreml as cto

    with quiet():
        if recipe.compression == "int8":
            config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8", granularity="per_channel"))  # fmt: skip
            return cto.linear_quantize_weights(mlmodel, config)
        if recipe.compression == "palettize":
            # Per-tensor k-means palettes: the granularity iOS 17 runs (grouped-channel palettes need iOS 18).
            config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(
                mode="kmeans", nbits=recipe.nbits, granularity="per_tensor"))  # fmt: skip
            return cto.palettize_weights(mlmodel, config)
        if recipe.compression == "w8a8":
            return quantize_w8a8(mlmodel, calibration or [])
    return mlmodel




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
        raise BackendError(why)
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
