"""Real photos for calibration, probes and demos: scikit-image's sample photos by default, or a folder of the user's.

Calibration is a tiny iterator of HxWx3 uint8 RGB images; the quantizers turn it into feeds (see `quantize`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from pocketsam.runtime.errors import InvalidImageError
from pocketsam.runtime.image import load_image
from pocketsam.runtime.predictor import Predictor
from pocketsam.runtime.session import RecordingSession, Session
from pocketsam.runtime.transforms import preprocess

# scikit-image ships these colour photos inside its wheel (no download). Ordered so the first few already span
# aspect ratios: square, landscape, wide, and a microscope image unlike any street photo.
SAMPLE_PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "immunohistochemistry", "stereo_motorcycle", "hubble_deep_field")
PROBE_PHOTO = "chelsea"  # 300 x 451: small, so probe.npz stays small; a clear subject in the middle
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def sample_photo(name: str) -> np.ndarray:
    """One of scikit-image's sample photos as HxWx3 uint8 RGB."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo pairs: take the left view
        img = img[0]
    return np.ascontiguousarray(img[..., :3])


def calibration_images(directory: Path | None = None, limit: int = 8) -> Iterator[np.ndarray]:
    """Up to `limit` HxWx3 uint8 RGB images: every image file of `directory` (sorted), or the sample photos."""
    if directory is None:
        for name in SAMPLE_PHOTOS[:limit]:
            yield sample_photo(name)
        return
    directory = Path(directory)
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if directory.is_dir() else []
    if not files:
        raise InvalidImageError(f"{directory}: no images ({', '.join(IMAGE_SUFFIXES)}) to calibrate on")
    for path in files[:limit]:
        yield load_image(path)


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
