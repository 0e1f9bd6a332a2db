"""Pre- and post-processing, in numpy and pillow, equal to segment-anything's `SamPredictor` path.

Upstream pieces mirrored here (segment_anything/utils/transforms.py, predictor.py, modeling/sam.py):
- `ResizeLongestSide.get_preprocess_shape / apply_image / apply_coords / apply_boxes`
- `Sam.preprocess` (normalize then zero-pad), moved into the encoder graph: here we only pad raw pixels with
  `PAD_VALUE_RAW` (the pixel mean, which the graph normalizes to exactly 0).
- `Sam.postprocess_masks` (bilinear to 1024², crop the padding, bilinear to the original size), done as two small
  banded matmuls with cached separable interpolation matrices.

Frames (see `spec`): the *original frame* is the user's image, (x, y) pixels; the *input frame* is the image
resized so its longest side is `IMAGE_SIZE`, padded bottom/right to `IMAGE_SIZE` x `IMAGE_SIZE`.
Sizes are always (h, w), coordinates always (x, y).

Validation lives here too (`validate_*`): every bad input raises `InvalidImageError` / `InvalidPromptError` with a
one-line message saying what was received and what is expected.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

import numpy as np
from PIL import Image

from .errors import InvalidImageError, InvalidPromptError
from .spec import IMAGE_SIZE, LABEL_PAD, LOW_RES_MASK_SIZE, MASK_THRESHOLD, PAD_VALUE_RAW, USER_POINT_LABELS

Size = tuple[int, int]  # (h, w)

__all__ = [
    "apply_boxes",
    "apply_coords",
    "get_preprocess_shape",
    "postprocess_masks",
    "preprocess",
    "resize_longest_side",
    "threshold",
    "validate_box",
    "validate_boxes",
    "pad_points",
    "validate_image",
    "validate_mask_input",
    "validate_points",
    "warm_postprocess",
]


# --- geometry ---------------------------------------------------------------------------------------------------


def get_preprocess_shape(h: int, w: int, long_side: int = IMAGE_SIZE) -> Size:
    """(newh, neww) of an (h, w) image resized so its longest side is `long_side` (upstream's rounding)."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def apply_coords(coords: np.ndarray, original_size: Size) -> np.ndarray:
    """Map (x, y) points, shape ...x2, from the original frame to the input frame. Returns float32, same shape.

    Bit-exact with upstream: the scaling happens in float64 (upstream's `astype(float)`), then the cast to float32
    that `SamPredictor.predict` does with `torch.as_tensor(..., dtype=torch.float)`.
    """
    old_h, old_w = original_size
    new_h, new_w = get_preprocess_shape(old_h, old_w)
    out = np.array(coords, dtype=np.float64)  # a copy: the caller's array is never modified
    out[..., 0] = out[..., 0] * (new_w / old_w)
    out[..., 1] = out[..., 1] * (new_h / old_h)
    return out.astype(np.float32)


def apply_boxes(boxes: np.ndarray, original_size: Size) -> np.ndarray:
    """Map XYXY boxes, shape Bx4 (or 4), from the original frame to the input frame. Returns float32 Bx4."""
    return apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)


# --- image ------------------------------------------------------------------------------------------------------


def resize_longest_side(image: np.ndarray) -> np.ndarray:
    """Resize a uint8 HxWx3 image so its longest side is `IMAGE_SIZE`; returns uint8 newh x neww x 3.

    PIL bilinear, which is what upstream's `resize(to_pil_image(image), size)` runs on a PIL image (PIL's filter
    widens its support when downscaling, i.e. it antialiases).
    """
    new_h, new_w = get_preprocess_shape(image.shape[0], image.shape[1])
    pil = Image.fromarray(np.ascontiguousarray(image))
    return np.asarray(pil.resize((new_w, new_h), Image.BILINEAR))


def preprocess(image: np.ndarray) -> tuple[np.ndarray, Size]:
    """The encoder's input for an RGB uint8 HxWx3 image, and the resized size (h, w) inside it (`input_size`).

    Returns float32 1x3xIMAGE_SIZExIMAGE_SIZE, raw 0..255 values, padded bottom/right with `PAD_VALUE_RAW`
    (the graph normalizes, and (mean - mean) / std is exactly 0, like SAM's zero padding after normalizing).
    """
    validate_image(image)
    resized = resize_longest_side(image)
    h, w = resized.shape[:2]
    out = np.empty((1, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    out[0] = np.asarray(PAD_VALUE_RAW, dtype=np.float32)[:, None, None]
    out[0, :, :h, :w] = resized.transpose(2, 0, 1)
    return out, (h, w)


# --- masks ------------------------------------------------------------------------------------------------------


def _bilinear(out_size: int, rows: np.ndarray) -> np.ndarray:
    """Resample the rows of `rows` (in_size x k, float64) to out_size x k as torch's `F.interpolate(bilinear,
    align_corners=False)` does along one axis: src = (dst + 0.5) * in/out - 0.5 clamped at 0, taps floor(src) and
    floor(src) + 1 (clamped to the last row). Applied to an identity, it gives the interpolation matrix.

    The source index and weights are computed as torch's CPU kernel does: in float32 (its `opmath_t`), with
    `scale * (dst + 0.5) - 0.5` rounded once (a fused multiply-add; the product is exact in float64). Plain
    float32 or float64 index math moves a weight by an ulp of the index (3e-5 near 512): up to 1e-3 on noisy
    logits of magnitude 10.
    """
    f32, in_size = np.float32, rows.shape[0]
    scale = f32(in_size) / f32(out_size)
    src = (float(scale) * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5).astype(f32)
    src = np.maximum(src, f32(0.0))
    i0 = src.astype(np.int64)  # floor, src >= 0
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = src - i0.astype(f32)
    w0 = f32(1.0) - w1
    return w0[:, None].astype(np.float64) * rows[i0] + w1[:, None].astype(np.float64) * rows[i1]


# A block of the banded matmuls covers enough outputs to read about this many low-res rows: wide enough for BLAS to
# be efficient, narrow enough that the block is mostly non-zero. Small outputs want narrow blocks, large ones wide
# blocks (measured with fixed widths: docs/performance.md).
_BAND_READS = 32
_BAND_WIDTHS = (32, 64, 128, 256)

# One block of a banded matmul: outputs [o0, o1) read low-res rows (or columns) [k0, k1) through `block`.
_Band = tuple[int, int, int, int, np.ndarray]


def _band_width(m: np.ndarray) -> int:
    """Outputs per block for a 256 x N resampling matrix: the width in `_BAND_WIDTHS` whose blocks read closest
    to `_BAND_READS` low-res rows."""
    reads_per_output = np.count_nonzero(m.any(axis=1)) / m.shape[1]
    return min(_BAND_WIDTHS, key=lambda width: abs(np.log(width * reads_per_output / _BAND_READS)))


def _banded(m: np.ndarray, transpose: bool) -> tuple[_Band, ...]:
    """Cut a 256 x N resampling matrix (float64; column n = the weights output n reads) into blocks of outputs
    (`_band_width`), each keeping only the low-res rows its outputs read. Blocks are float32, read-only, and
    transposed (outputs x low-res) when `transpose`, so that they left-multiply."""
    bands, width = [], _band_width(m)
    for o0 in range(0, m.shape[1], width):
        o1 = min(o0 + width, m.shape[1])
        used = np.flatnonzero(m[:, o0:o1].any(axis=1))
        k0, k1 = int(used[0]), int(used[-1]) + 1
        block = m[k0:k1, o0:o1]
        block = np.ascontiguousarray(block.T if transpose else block, np.float32)
        block.flags.writeable = False  # shared by every later call
        bands.append((o0, o1, k0, k1, block))
    return tuple(bands)


@lru_cache(maxsize=16)
def _postprocess_matrices(input_size: Size, original_size: Size) -> tuple[tuple[_Band, ...], tuple[_Band, ...]]:
    """(row bands, column bands), with logits_original = A @ low_res @ Bt for one 256x256 map.

    A = R(H <- h) @ U[:h], where U = R(1024 <- 256) is the upsampling and [:h] the crop of the padding; Bt is the
    same for the columns, transposed. Both are banded (each output row or column reads at most 4 low-res ones), so
    they are kept as dense blocks of outputs with only the low-res rows/columns each block reads (~32 of the 256),
    so the matmuls do a fraction of the dense work. Cached: computed once per image
    size, never per click.
    """
    up = _bilinear(IMAGE_SIZE, np.eye(LOW_RES_MASK_SIZE))  # 1024 x 256
    (h, w), (big_h, big_w) = input_size, original_size
    return _banded(_bilinear(big_h, up[:h]).T, transpose=True), _banded(_bilinear(big_w, up[:w]).T, transpose=False)


def _single_threaded_blas():
    """A context in which numpy's BLAS runs on one thread (a no-op without threadpoolctl).

    Post-processing runs right after an engine call, while the engine's worker threads still spin on the cores:
    BLAS threads then fight them: one thread measured faster up to HD outputs, about equal beyond
    (docs/performance.md).
    """
    controller = _blas_controller()
    return controller.limit(limits=1, user_api="blas") if controller is not None else contextlib.nullcontext()


@lru_cache(maxsize=1)
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def postprocess_masks(low_res: np.ndarray, input_size: Size, original_size: Size) -> np.ndarray:
    """Low-res logits (...x256x256, input frame) -> float32 logits ...xHxW in the original frame.

    Equal (to float32 rounding) to upstream's `Sam.postprocess_masks`: bilinear to 1024², crop to `input_size`,
    bilinear to `original_size` (both align_corners=False), done as banded row and column matmuls with cached
    matrices (max abs diff vs torch ~6e-6 on logits of magnitude 10).
    """
    row_bands, col_bands = _postprocess_matrices(tuple(input_size), tuple(original_size))
    low_res = np.asarray(low_res, dtype=np.float32)
    rows = np.empty(low_res.shape[:-2] + (original_size[0], low_res.shape[-1]), dtype=np.float32)  # ...xHx256
    out = np.empty(low_res.shape[:-2] + tuple(original_size), dtype=np.float32)
    with _single_threaded_blas():
        for r0, r1, k0, k1, block in row_bands:
            np.matmul(block, low_res[..., k0:k1, :], out=rows[..., r0:r1, :])
        for c0, c1, k0, k1, block in col_bands:
            np.matmul(rows[..., k0:k1], block, out=out[..., c0:c1])
    return out


def warm_postprocess(input_size: Size, original_size: Size) -> None:
    """Build and cache `postprocess_masks`' matrices for these sizes now (`Predictor.set_image` calls it)."""
    _postprocess_matrices(tuple(input_size), tuple(original_size))


def threshold(logits: np.ndarray) -> np.ndarray:
    """Binary masks: logits > `MASK_THRESHOLD` (bool, same shape)."""
    return logits > MASK_THRESHOLD


# --- prompts for fixed-shape decoders -------------------------------------------------------------------------


def pad_points(coords: np.ndarray, labels: np.ndarray, points: int,
               what: str = "the decoder", detail: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Pad decoder prompt tokens (float32 BxNx2 input-frame coordinates, BxN labels) to `points` tokens with (0, 0)
    points labelled `LABEL_PAD`, as a fixed-shape decoder (TFLite `--decoder-points`) takes them; upstream's
    prompt encoder zeroes a pad point's positional encoding. More than `points` tokens is an InvalidPromptError
    naming the export option (`what` names the decoder, `detail` what the tokens are). Returns new arrays (or the
    same ones when N == points)."""
    n = labels.shape[-1]
    if n > points:
        raise InvalidPromptError(
            f"this prompt needs {n} decoder points{f' ({detail})' if detail else ''} but {what} takes {points}: "
            f"re-export with --decoder-points {n} (or more), or give fewer points"
        )
    if n == points:
        return coords, labels
    b, pad = labels.shape[0], points - n
    return (np.concatenate([coords, np.zeros((b, pad, 2), np.float32)], axis=1),
            np.concatenate([labels, np.full((b, pad), LABEL_PAD, np.float32)], axis=1))


# --- validation -------------------------------------------------------------------------------------------------

_IMAGE_EXPECTED = "expected an HxWx3 uint8 RGB image"


def validate_image(image: object) -> None:
    """Raise `InvalidImageError` unless `image` is a uint8 HxWx3 array of at least 2x2 pixels."""
    if not isinstance(image, np.ndarray):
        hint = "np.asarray(pil_image.convert('RGB'))" if isinstance(image, Image.Image) else "np.asarray(...)"
        raise InvalidImageError(f"{_IMAGE_EXPECTED}, got a {type(image).__name__}: convert with {hint}")
    shape = image.shape
    if image.size == 0:
        raise InvalidImageError(f"{_IMAGE_EXPECTED}, got an empty array of shape {shape}")
    if image.ndim == 2:
        raise InvalidImageError(
            f"{_IMAGE_EXPECTED}, got a 2-D (grayscale) array of shape {shape}: convert with np.stack([img]*3, -1)"
        )
    if image.ndim == 3 and shape[2] == 1:
        raise InvalidImageError(
            f"{_IMAGE_EXPECTED}, got a single-channel array of shape {shape}: convert with np.repeat(img, 3, -1)"
        )
    if image.ndim == 3 and shape[2] == 4:
        raise InvalidImageError(
            f"{_IMAGE_EXPECTED}, got a 4-channel (RGBA) array of shape {shape}: drop alpha with img[..., :3]"
        )
    if image.ndim != 3 or shape[2] != 3:
        raise InvalidImageError(f"{_IMAGE_EXPECTED}, got an array of shape {shape}")
    if image.dtype == np.uint16:
        raise InvalidImageError(
            f"{_IMAGE_EXPECTED}, got uint16 (16-bit) pixels: convert with (img >> 8).astype(np.uint8)"
        )
    if np.issubdtype(image.dtype, np.floating):
        raise InvalidImageError(
            f"{_IMAGE_EXPECTED}, got {image.dtype} pixels: convert 0..255 floats with "
            f"np.clip(img, 0, 255).astype(np.uint8) (multiply 0..1 floats by 255 first)"
        )
    if image.dtype != np.uint8:
        raise InvalidImageError(f"{_IMAGE_EXPECTED}, got {image.dtype} pixels: convert to uint8 0..255")
    if shape[0] < 2 or shape[1] < 2:
        raise InvalidImageError(f"{_IMAGE_EXPECTED} of at least 2x2 pixels, got {shape[0]}x{shape[1]}")
    if min(get_preprocess_shape(shape[0], shape[1])) < 1:
        raise InvalidImageError(
            f"{_IMAGE_EXPECTED}, got {shape[0]}x{shape[1]}: its short side would shrink to 0 pixels when the long "
            f"side is resized to {IMAGE_SIZE}; crop or pad it to a less extreme aspect ratio"
        )


def _as_float_array(value: object, name: str) -> np.ndarray:
    """`value` as float64, refused (one line) unless it is real numbers, all finite."""
    try:
        if np.iscomplexobj(value):  # float64 conversion would drop the imaginary part with only a warning
            raise InvalidPromptError(f"{name} must be real numbers, got complex values")
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        if isinstance(e, InvalidPromptError):
            raise
        raise InvalidPromptError(f"{name} must be numbers, got {type(value).__name__}") from None
    if not np.all(np.isfinite(arr)):
        raise InvalidPromptError(f"{name} must be finite, got NaN or inf")
    return arr


def _check_inside(xy: np.ndarray, original_size: Size, name: str) -> None:
    """xy ...x2 (x, y) must lie in [0, W] x [0, H] (the border included, as pixel-corner coordinates)."""
    h, w = original_size
    bad = (xy[..., 0] < 0) | (xy[..., 0] > w) | (xy[..., 1] < 0) | (xy[..., 1] > h)
    if bad.any():
        first = xy.reshape(-1, 2)[np.flatnonzero(bad.reshape(-1))[0]]
        raise InvalidPromptError(
            f"{name} must lie inside the {h}x{w} image, x in [0, {w}] and y in [0, {h}], got (x, y) = "
            f"({first[0]:g}, {first[1]:g})"
        )


def validate_points(
    coords: object, labels: object, original_size: Size, batched: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Check point prompts; return them as float64 arrays, coords Nx2 (x, y) and labels N (or BxNx2 and BxN
    when `batched`). Labels must be in `USER_POINT_LABELS` (0 background, 1 foreground)."""
    if coords is None or labels is None:
        raise InvalidPromptError("point_coords and point_labels must be given together")
    c = _as_float_array(coords, "point_coords")
    lab = _as_float_array(labels, "point_labels")
    want = "BxNx2" if batched else "Nx2"
    if c.ndim != (3 if batched else 2) or c.shape[-1] != 2 or c.shape[-2] < 1:
        hint = "; for one point use [[x, y]]" if c.shape == (2,) else ""
        raise InvalidPromptError(f"point_coords must be {want} (x, y) pixels, got shape {c.shape}{hint}")
    if lab.shape != c.shape[:-1]:
        raise InvalidPromptError(
            f"point_labels must have shape {c.shape[:-1]} (one label per point), got shape {lab.shape}"
        )
    if not np.isin(lab, USER_POINT_LABELS).all():
        raise InvalidPromptError(
            f"point_labels must be {' or '.join(map(str, USER_POINT_LABELS))} (background / foreground), got "
            f"{sorted(set(lab[~np.isin(lab, USER_POINT_LABELS)].tolist()))}"
        )
    _check_inside(c, original_size, "point_coords")
    return c, lab


def validate_boxes(boxes: object, original_size: Size) -> np.ndarray:
    """Check XYXY boxes, shape Bx4, in the original frame, x0 <= x1 and y0 <= y1; return float64 Bx4."""
    b = _as_float_array(boxes, "box")
    if b.ndim != 2 or b.shape[1] != 4 or b.shape[0] < 1:
        raise InvalidPromptError(f"boxes must be Bx4 (x0, y0, x1, y1) pixels, got shape {b.shape}")
    if ((b[:, 0] > b[:, 2]) | (b[:, 1] > b[:, 3])).any():
        first = b[(b[:, 0] > b[:, 2]) | (b[:, 1] > b[:, 3])][0]
        raise InvalidPromptError(f"box must be (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1, got {first.tolist()}")
    _check_inside(b.reshape(-1, 2, 2), original_size, "box corners")
    return b


def validate_box(box: object, original_size: Size) -> np.ndarray:
    """Check one XYXY box, length 4 (or 1x4), in the original frame; return float64 1x4."""
    b = _as_float_array(box, "box")
    if b.shape not in ((4,), (1, 4)):
        raise InvalidPromptError(f"box must be length 4 (x0, y0, x1, y1) pixels, got shape {b.shape}")
    return validate_boxes(b.reshape(1, 4), original_size)


def validate_mask_input(mask_input: object, batch: int | None = None) -> np.ndarray:
    """Check low-res mask logits (a previous prediction's, 256x256 in the input frame): 1x256x256 or 256x256, or
    Bx1x256x256 when `batch` is given. Returns float32 Bx1x256x256 (B = 1 when `batch` is None)."""
    m = _as_float_array(mask_input, "mask_input")
    limit = float(np.finfo(np.float32).max)
    if m.size and np.abs(m).max() > limit:  # would become inf in float32, then NaN scores and empty masks
        raise InvalidPromptError(f"mask_input must be float32 logits, |x| <= {limit:.3g}; got {np.abs(m).max():.3g}")
    s = LOW_RES_MASK_SIZE
    if batch is None:
        if m.shape not in ((s, s), (1, s, s)):
            raise InvalidPromptError(f"mask_input must be 1x{s}x{s} (or {s}x{s}) logits, got shape {m.shape}")
        return m.reshape(1, 1, s, s).astype(np.float32)
    if m.shape != (batch, 1, s, s):
        raise InvalidPromptError(f"mask_inputs must be {batch}x1x{s}x{s} logits, got shape {m.shape}")
    return m.astype(np.float32)
