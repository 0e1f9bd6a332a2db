"""Reading image files into the HxWx3 uint8 RGB arrays the Predictor takes (pillow only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InvalidImageError


def load_image(path: str | Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB. Grayscale, palette and 16-bit files are converted; RGBA drops alpha."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InvalidImageError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                # 16-bit or float grayscale: scale the used range into 0..255 rather than clip it
                a = np.asarray(im, dtype=np.float64)
                lo, hi = float(a.min()), float(a.max())
                a = np.zeros_like(a) if hi == lo else (a - lo) * (255.0 / (hi - lo))
                rgb = np.repeat(a.round().astype(np.uint8)[..., None], 3, axis=2)
            else:
                rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise InvalidImageError(f"{path}: not a readable image ({e})") from None
    return np.ascontiguousarray(rgb)


def save_mask_png(mask: np.ndarray, path: str | Path) -> None:
    """Write an HxW bool mask as an 8-bit PNG (255 = foreground)."""
    from PIL import Image

    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)


def overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (30, 144, 255), alpha: float = 0.5,
            points: np.ndarray | None = None, labels: np.ndarray | None = None, box: np.ndarray | None = None):
    """The image with the mask blended in `color` and the prompts drawn: a PIL image (HxW, RGB)."""
    from PIL import Image, ImageDraw

    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)
    pil = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    r = max(3, round(max(image.shape[:2]) / 100))
    if points is not None:
        for (x, y), lab in zip(points, labels if labels is not None else [1] * len(points)):
            fill = (0, 200, 0) if lab == 1 else (220, 0, 0)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(255, 255, 255), width=max(1, r // 3))
    if box is not None:
        draw.rectangle([float(v) for v in box], outline=(0, 200, 0), width=max(2, r // 2))
    return pil
