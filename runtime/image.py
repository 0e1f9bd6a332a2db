"""Reading images into the HxWx3 uint8 RGB arrays the Predictor takes (pillow only), and writing masks.

Files are read as viewers show them: the EXIF orientation tag of phone photos is applied, so point coordinates,
masks and overlays are all in the displayed frame.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InvalidImageError, MissingExtraError

# Image files pocketsam reads from a folder (calibration, `verify --images`, the fp16 audit).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# Pillow's own decompression-bomb limit (~89.5 Mpx, 0.27 GB as RGB): images above it are refused unless the caller
# raises the limit. Decoding costs about BYTES_PER_PIXEL bytes per pixel at the peak (pillow's decoded copy, then
# the RGB array).
DEFAULT_MAX_PIXELS = 89_478_485
BYTES_PER_PIXEL = 7

# scikit-image ships these colour photos inside its wheel (no download). Ordered so the first few already span
# aspect ratios: square, landscape, wide, and a microscope image unlike any street photo.
SAMPLE_PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "immunohistochemistry", "stereo_motorcycle", "hubble_deep_field")
SAMPLE_PREFIX = "sample:"
PROBE_PHOTO = "chelsea"  # the photo every bundle's probe records (300 x 451: a small probe.npz, a clear subject)

_PIL_LIMIT = threading.Lock()  # pillow's bomb limit is a module global: changed only under this lock


def _to_rgb(im) -> np.ndarray:
    """A loaded pillow image as HxWx3 uint8 RGB: 16-bit/float grayscale scaled by its used range, RGBA drops alpha."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit or float grayscale: scale the used range into 0..255 rather than clip it
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = np.zeros_like(a) if hi == lo else (a - lo) * (255.0 / (hi - lo))
        return np.repeat(a.round().astype(np.uint8)[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def load_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB in its displayed orientation (EXIF orientation applied).

    Grayscale, palette and 16-bit files are converted; RGBA drops alpha. `max_pixels` (width x height, checked from
    the header before anything is decoded) guards against decompression bombs; None lifts the guard (decoding then
    takes about `BYTES_PER_PIXEL` bytes per pixel).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise InvalidImageError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise InvalidImageError(f"{path}: no such image file")
    with _PIL_LIMIT:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # pocketsam checks the size itself, with a message that says what to do
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(path)
        except (UnidentifiedImageError, OSError) as e:
            raise InvalidImageError(f"{path}: not a readable image ({e})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    with im:
        w, h = im.size
        if max_pixels is not None and w * h > max_pixels:
            raise InvalidImageError(
                f"{path}: {w}x{h} is {w * h / 1e6:.3g} Mpx, over the {max_pixels / 1e6:.3g} Mpx limit that guards "
                f"against decompression bombs; decoding it takes ~{w * h * BYTES_PER_PIXEL / 2**30:.1f} GiB: "
                "pass --max-pixels N (Python: load_image(path, max_pixels=N or None)) to open it anyway"
            )
        try:
            im.load()
            rgb = _to_rgb(ImageOps.exif_transpose(im))
        except (OSError, ValueError, SyntaxError) as e:  # truncated data, bad EXIF, a broken decoder state
            raise InvalidImageError(f"{path}: not a readable image ({e})") from None
    return np.ascontiguousarray(rgb)


def image_files(directory: str | Path) -> list[Path]:
    """The image files (by `IMAGE_SUFFIXES`) directly inside `directory`, sorted by name; an error when none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidImageError(f"{directory}: not a folder")
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InvalidImageError(f"{directory}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def sample_photo(name: str) -> np.ndarray:
    """One of scikit-image's sample photos (`SAMPLE_PHOTOS`) as HxWx3 uint8 RGB."""
    if name not in SAMPLE_PHOTOS:
        raise InvalidImageError(f"unknown sample photo {name!r} (choose from {', '.join(SAMPLE_PHOTOS)})")
    try:
        import skimage.data
    except ImportError:
        raise MissingExtraError(
            f"sample photos come from scikit-image, which is not installed (pip install scikit-image, or "
            f"pocketsam[export]); or give an image file instead of {SAMPLE_PREFIX}{name}"
        ) from None
    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo pairs: take the left view
        img = img[0]
    return np.ascontiguousarray(img[..., :3])


def named_images(directory: str | Path | None, limit: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Up to `limit` (all when None) (name, HxWx3 uint8 RGB) pairs: the image files of `directory`, or the sample
    photos."""
    if directory is None:
        for name in SAMPLE_PHOTOS[:limit]:
            yield name, sample_photo(name)
        return
    for path in image_files(directory)[:limit]:
        yield path.name, load_image(path)


def read_image(source: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file, or `sample:NAME` for one of scikit-image's sample photos (e.g. sample:chelsea)."""
    text = str(source)
    if text.startswith(SAMPLE_PREFIX):
        return sample_photo(text[len(SAMPLE_PREFIX):])
    return load_image(source, max_pixels)


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
