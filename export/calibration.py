"""Real photos for calibration, probes and demos: scikit-image's sample photos by default, or a folder of the user's.

Calibration is a tiny iterator of HxWx3 uint8 RGB images; the quantizers turn it into feeds (see `quantize`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from pocketsam.runtime.image import IMAGE_SUFFIXES, PROBE_PHOTO, SAMPLE_PHOTOS, named_images, sample_photo
from pocketsam.runtime.predictor import Predictor
from pocketsam.runtime.session import RecordingSession, Session
from pocketsam.runtime.transforms import preprocess

__all__ = ["IMAGE_SUFFIXES", "PROBE_PHOTO", "SAMPLE_PHOTOS", "calibration_images", "decoder_calibration",
           "encoder_calibration", "sample_photo"]


def calibration_images(directory: Path | None = None, limit: int = 8) -> Iterator[np.ndarray]:
    """Up to `limit` HxWx3 uint8 RGB images: every image file of `directory` (sorted), or the sample photos."""
    return (image for _, image in named_images(directory, limit))


def decoder_calibration(encoder: Session, decoder: Session, images: Iterable[np.ndarray], seed: int) -> list[dict]:
    """Decoder feeds on real embeddings with seeded prompts of every kind (clicks, boxes, box + click)."""
    rng = np.random.default_rng(seed)
    recorder = RecordingSession(decoder)
    predictor = Predictor(encoder, recorder)
    for image in images:
        predictor.set_image(image)
        h, w = predictor.original_size
        for _ in range(3):
            pts = rng.uniform([0, 0], [w, h], size=(int(rng.integers(1, 4)), 2)).astype(np.float32)
            labels = rng.integers(0, 2, size=len(pts)).astype(np.float32)
            labels[0] = 1
            x0, y0 = rng.uniform([0, 0], [w / 2, h / 2])
            box = np.array([x0, y0, x0 + rng.uniform(w / 8, w / 2), y0 + rng.uniform(h / 8, h / 2)], np.float32)
            predictor.predict(pts, labels)
            predictor.predict(box=box)
            predictor.predict(pts[:1], labels[:1], box=box)
    return recorder.feeds


def encoder_calibration(images: Iterable[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Encoder feeds: each image preprocessed exactly as the runtime does (resize, pad with the pixel mean)."""
    return [{"image": preprocess(img)[0]} for img in images]
