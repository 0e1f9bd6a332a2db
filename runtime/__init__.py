"""pocketsam's torch-free runtime: graph specs, pre/post-processing, Sessions and the `Predictor` (numpy + pillow).

    from pocketsam.runtime import Predictor
    predictor = Predictor.from_bundle("bundles/mobilesam-onnx")   # or Predictor(encoder_session, decoder_session)
    predictor.set_image(image)                      # HxWx3 uint8 RGB
    masks, scores, low_res = predictor.predict(point_coords=np.array([[x, y]]), point_labels=np.array([1]))
"""

from __future__ import annotations

from . import spec, transforms
from .errors import (
    BackendError,
    BundleError,
    CheckpointError,
    InvalidImageError,
    InvalidPromptError,
    MissingEngineError,
    PocketSamError,
)
from .bundle import Bundle, load_bundle
from .predictor import ImageNotSetError, Predictor
from .mask_generator import MaskGenerator, MaskGeneratorError
from .session import Session
from .transforms import (
    apply_boxes,
    apply_coords,
    get_preprocess_shape,
    postprocess_masks,
    preprocess,
    resize_longest_side,
    threshold,
)

__all__ = [
    "BackendError",
    "Bundle",
    "BundleError",
    "CheckpointError",
    "ImageNotSetError",
    "InvalidImageError",
    "InvalidPromptError",
    "MaskGenerator",
    "MaskGeneratorError",
    "MissingEngineError",
    "PocketSamError",
    "Predictor",
    "Session",
    "apply_boxes",
    "apply_coords",
    "get_preprocess_shape",
    "load_bundle",
    "postprocess_masks",
    "preprocess",
    "resize_longest_side",
    "spec",
    "threshold",
    "transforms",
]
