"""`Predictor`: segment-anything's `SamPredictor` over any pair of Sessions (numpy in, numpy out, no torch).

The encoder runs once per image (`set_image`); every click (`predict`) runs only the decoder plus the cached
post-processing. A decoder with the image cache (`spec.DECODER_CACHED`, the ONNX export) returns the image-only
part of its work on the first click and is handed it back on every later click of that image without a mask
input. Prompts reach the decoder graph exactly as upstream's PromptEncoder would see them: the points,
then the box corners (labels 2 and 3); when points come without a box, one (0, 0) point labelled -1 (upstream's
`pad`) is appended; a mask-only prompt has no point tokens at all.

Threads: everything one image needs (embedding, sizes, the decoder's image cache) lives in one `_ImageState` that
`set_image` replaces as a whole; a click reads the state once when it starts and works on it alone. So a click
racing a `set_image` on another thread returns the masks of the image it started on, and a cache computed for one
image can never reach another. Clicks on one image run in parallel (no lock around the decoder).

Memory: `predict_batch` runs large batches in chunks sized by `memory_budget_mb` (the decoder's working memory
grows with the batch, `DECODER_BYTES_PER_PROMPT`), and the image cache is computed once per image, never once per
prompt of a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InvalidImageError, InvalidPromptError, PocketSamError
from .memory import release_free_memory
from .session import Session
from .spec import (
    CACHED_INPUT_PREFIX,
    DECODER,
    ENCODER,
    IMAGE_CACHE,
    USE_IMAGE_CACHE,
    LABEL_BOX_BOTTOM_RIGHT,
    LABEL_BOX_TOP_LEFT,
    LABEL_PAD,
    LOW_RES_MASK_SIZE,
    MULTIMASK_SLICE,
    SINGLE_MASK_SLICE,
    has_image_cache,
)
from .transforms import (
    Size,
    apply_boxes,
    apply_coords,
    pad_points,
    postprocess_masks,
    preprocess,
    threshold,
    validate_box,
    validate_boxes,
    validate_image,
    validate_mask_input,
    validate_points,
    warm_postprocess,
)

# Graph I/O names, by position in the spec (unpacking fails loudly if the spec's arity ever changes).
(_ENC_IMAGE,) = ENCODER.input_names
(_ENC_EMBEDDINGS,) = ENCODER.output_names
_DEC_EMBEDDINGS, _DEC_COORDS, _DEC_LABELS, _DEC_MASK, _DEC_HAS_MASK = DECODER.input_names
_DEC_LOW_RES, _DEC_IOU = DECODER.output_names

_BOX_LABELS = np.array([LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT], dtype=np.float32)
# The image cache's feeds when there is none to give: empty along the batch axis, and the flag off.
_NO_CACHE = {CACHED_INPUT_PREFIX + t.name: np.zeros((0, *t.shape[1:]), dtype=np.float32) for t in IMAGE_CACHE}
_USE_CACHE = {True: np.ones((1,), np.float32), False: np.zeros((1,), np.float32)}
for _shared in (*_NO_CACHE.values(), *_USE_CACHE.values()):  # fed on every call, never to be written to
    _shared.flags.writeable = False


def image_cache_feeds(cache: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """The image-cache inputs of a `spec.DECODER_CACHED` decoder: `cache` (the `cached_*` arrays kept from an
    earlier call, see `kept_image_cache`) with use_image_cache 1, or, with None, empty arrays and the flag 0."""
    return {**(cache if cache is not None else _NO_CACHE), USE_IMAGE_CACHE.name: _USE_CACHE[cache is not None]}


def kept_image_cache(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The `cached_*` inputs for later calls, from the outputs of a call that computed the cache without a mask
    input (every prompt of its batch computed the same cache: one row is kept)."""
    return {CACHED_INPUT_PREFIX + t.name: np.ascontiguousarray(outputs[t.name][:1]) for t in IMAGE_CACHE}


class ImageNotSetError(PocketSamError, RuntimeError):
    """`predict` or `get_image_embedding` before `set_image` (a RuntimeError, as in SamPredictor)."""


# --- memory budget of batched prompts ------------------------------------------------------------------------------

MiB = 2**20
# Working memory of one prompt inside one decoder run, upper bounds measured on the fp32 vit_t ONNX decoder (2
# threads, peak RSS rise of one run over batches of 1..64, arena off): 17 MiB per prompt that reads the image
# cache (image tokens of that prompt, 4096 x 256 float32, a few times over, and its 256 x 256 upscaling maps), 30 MiB
# per prompt with a mask input or without an image cache (the decoder computes one per prompt). Other engines and
# precisions need less; these bounds are what chunks are sized by.
DECODER_BYTES_PER_PROMPT = 32 * MiB
DECODER_BYTES_PER_CACHED_PROMPT = 18 * MiB
# The default budget of a batched call's working memory (decoder chunks + post-processing chunks), on top of what
# it returns. 256 MiB: 14 prompts that read the image cache per decoder run (8 with mask inputs), and a 2 GB board
# keeps room for the models (~130 MiB) and the encoder's transient (~200 MiB). Larger decoder runs are not faster on
# a quiet machine (docs/performance.md section 8.2).
DEFAULT_MEMORY_BUDGET_MB = 256.0
# Post-processing chunks are far smaller than the budget: the banded matmuls loop over masks anyway, and a chunk
# that stays in cache and under glibc's largest mmap threshold (32 MiB) reuses the heap's pages, where a large one
# faults fresh pages in on every call (several times slower per mask, docs/performance.md section 8.3).
POSTPROCESS_CHUNK_BYTES = 8 * MiB


def chunk_size(budget_mb: float, bytes_per_item: int, multiple: int = 1) -> int:
    """How many items of `bytes_per_item` working memory fit in `budget_mb` MiB: at least 1, and rounded down to a
    multiple of `multiple` when at least one multiple fits (a fixed-batch decoder runs whole batches)."""
    n = max(1, int(budget_mb * MiB // max(1, bytes_per_item)))
    return n - n % multiple if n >= multiple else n


def _check_budget(memory_budget_mb: float) -> float:
    if not isinstance(memory_budget_mb, (int, float)) or not memory_budget_mb > 0:
        raise InvalidPromptError(f"memory_budget_mb must be a positive number of MiB, got {memory_budget_mb!r}")
    return float(memory_budget_mb)


@dataclass(eq=False)
class _ImageState:
    """Everything the clicks on one image read: replaced as a whole by `set_image`, never changed in place except
    for `cache`, which the image's first click fills (and which belongs to this image only)."""

    features: np.ndarray  # 1x256x64x64 float32
    original_size: Size
    input_size: Size
    cache: dict[str, np.ndarray] | None = None  # the decoder's image cache (`kept_image_cache`)


class Predictor:
    """Set an image once, then predict masks for many prompts, with `SamPredictor`'s API and results.

    Args:
        encoder: Session of the encoder graph (`spec.ENCODER`).
        decoder: Session of the decoder graph (`spec.DECODER`).
        decoder_points: for decoders exported with a fixed number of prompt points (TFLite, `--decoder-points`):
            every prompt is padded to this many points with (0, 0) points labelled -1. Results equal upstream's
            only when the prompt needs exactly this many (a click + the pad point, or a box, need 2); extra pad
            tokens are real tokens to the decoder and shift the masks slightly. None: send the exact token count.

    Attributes (as SamPredictor, read-only): `original_size` (h, w) of the image, `input_size` (h, w) of the resized
    image inside the 1024 input frame, `features` (1x256x64x64 float32 embedding), `is_image_set`.
    """

    def __init__(self, encoder: Session, decoder: Session, *, decoder_points: int | None = None) -> None:
        if decoder_points is not None and (int(decoder_points) != decoder_points or decoder_points < 1):
            raise ValueError(f"decoder_points must be a positive int or None, got {decoder_points!r}")
        self.encoder = encoder
        self.decoder = decoder
        self.decoder_points = None if decoder_points is None else int(decoder_points)
        self.bundle = None  # the Bundle when made by from_bundle
        self._image: _ImageState | None = None

    @classmethod
    def from_bundle(cls, path, backend: str | None = None, **options) -> "Predictor":
        """A Predictor over a bundle folder, opened with `backend` (default: the format's usual engine).

        `options` go to the backend (e.g. `threads=2`, `providers=[...]` for onnxruntime). The bundle's hashes,
        spec version and encoder/decoder pairing are checked before any engine sees a file.
        """
        from .loading import open_bundle

        bundle, encoder, decoder = open_bundle(path, backend, **options)
        predictor = cls(encoder, decoder, decoder_points=bundle.decoder_points)
        predictor.bundle = bundle
        return predictor

    # --- image ----------------------------------------------------------------------------------------------

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Run the encoder on `image` (HxWx3 uint8, 0..255) and keep its embedding for `predict`.

        `image_format` is "RGB" or "BGR" (BGR, e.g. from OpenCV, is flipped to RGB first, as upstream does).
        """
        if image_format not in ("RGB", "BGR"):
            raise InvalidImageError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        validate_image(image)
        if image_format == "BGR":
            image = image[..., ::-1]
        self.reset_image()  # as upstream: a failing encoder leaves no stale embedding behind
        encoder_input, input_size = preprocess(image)
        features = self.encoder.run({_ENC_IMAGE: encoder_input})[_ENC_EMBEDDINGS]
        del encoder_input
        original_size = (int(image.shape[0]), int(image.shape[1]))
        warm_postprocess(input_size, original_size)  # so the first click does not pay for it
        self._image = _ImageState(np.ascontiguousarray(features, dtype=np.float32), original_size, input_size)
        release_free_memory()  # the encoder's transient working memory, back to the OS (see memory.py)

    def get_image_embedding(self) -> np.ndarray:
        """The current image's embedding, float32 1x256x64x64 (on the 64x64 grid of the input frame)."""
        return self._require_image("to get its embedding").features

    def reset_image(self) -> None:
        """Forget the current image (its embedding and the decoder's image cache)."""
        self._image = None

    @property
    def is_image_set(self) -> bool:
        return self._image is not None

    @property
    def features(self) -> np.ndarray | None:
        image = self._image
        return None if image is None else image.features

    @property
    def original_size(self) -> Size | None:
        image = self._image
        return None if image is None else image.original_size

    @property
    def input_size(self) -> Size | None:
        image = self._image
        return None if image is None else image.input_size

    @property
    def _image_cache(self) -> dict[str, np.ndarray] | None:
        image = self._image
        return None if image is None else image.cache

    @property
    def decoder_batches(self) -> list[int] | None:
        """The batch sizes a fixed-batch decoder offers (TFLite: 1, and N with `--decoder-batch N`); None when the
        decoder takes any batch (ONNX, CoreML flexible shapes)."""
        batches = getattr(self.decoder, "batches", None)
        return None if not batches else sorted(int(b) for b in batches)

    # --- prompts --------------------------------------------------------------------------------------------

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt on the current image (SamPredictor.predict).

        Args:
            point_coords: Nx2 (x, y) pixels in the original frame, inside [0, W] x [0, H].
            point_labels: N labels, 1 foreground, 0 background.
            box: length 4, XYXY pixels in the original frame.
            mask_input: 1x256x256 (or 256x256) low-res logits from an earlier prediction, in the input frame.
            multimask_output: three masks (outputs 1..3) instead of one (output 0).
            return_logits: float32 logits instead of bool masks.

        Returns:
            masks: CxHxW bool (float32 logits with `return_logits`), original frame; C is 3 or 1.
            scores: C float32, the predicted IoU of each mask.
            low_res_logits: Cx256x256 float32, input frame; pass one as `mask_input` to refine.
        """
        image = self._require_image("before mask prediction")
        size = image.original_size
        coords = labels = boxes = masks_in = None
        if point_coords is not None or point_labels is not None:
            c, lab = validate_points(point_coords, point_labels, size)
            coords, labels = apply_coords(c, size)[None], lab.astype(np.float32)[None]
        if box is not None:
            boxes = apply_boxes(validate_box(box, size), size)
        if mask_input is not None:
            masks_in = validate_mask_input(mask_input)
        scores, low_res = self._decode(image, coords, labels, boxes, masks_in, multimask_output)
        masks = self._postprocess(image, low_res, return_logits, DEFAULT_MEMORY_BUDGET_MB)
        return masks[0], scores[0], low_res[0]

    def predict_batch(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        *,
        memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for B prompts on the current image (SamPredictor.predict_torch, numpy in).

        Every prompt in a batch has the same number of tokens: B prompts of N points each (BxNx2 / BxN), and/or
        one box each (Bx4); to mix prompt kinds, call once per kind. Result b equals `predict` on prompt b.

        Memory: the decoder runs the batch in chunks, and post-processing works a few masks at a time, so the
        working memory stays within `memory_budget_mb` MiB (`DEFAULT_MEMORY_BUDGET_MB`, sized from
        `DECODER_BYTES_PER_PROMPT`) whatever B is. What is returned comes on top: the masks are BxCxHxW bool (B*C*H*W
        bytes; 4x that with `return_logits`) and the low-res logits BxCx256x256 float32 (256 KiB per mask).

        Args:
            point_coords: BxNx2 (x, y) pixels in the original frame, or None.
            point_labels: BxN labels (1 foreground, 0 background), or None.
            boxes: Bx4 XYXY pixels in the original frame, or None.
            mask_input: Bx1x256x256 low-res logits, or None.
            memory_budget_mb: working memory to size chunks by, in MiB (a chunk holds at least one prompt).

        Returns:
            masks BxCxHxW (bool, or float32 logits), scores BxC float32, low_res_logits BxCx256x256 float32.
        """
        budget = _check_budget(memory_budget_mb)
        image = self._require_image("before mask prediction")
        prompts = self._batch_prompts(image, point_coords, point_labels, boxes, mask_input)
        scores, low_res = self._decode(image, *prompts, multimask_output, budget)
        return self._postprocess(image, low_res, return_logits, budget), scores, low_res

    def predict_batch_low_res(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        *,
        memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`predict_batch` without the post-processing: (scores BxC float32, low_res_logits BxCx256x256 float32,
        input frame). For callers that filter on the scores before paying for full-size masks (`MaskGenerator`);
        `upsample_logits` finishes the survivors exactly as `predict_batch` would."""
        budget = _check_budget(memory_budget_mb)
        image = self._require_image("before mask prediction")
        prompts = self._batch_prompts(image, point_coords, point_labels, boxes, mask_input)
        return self._decode(image, *prompts, multimask_output, budget)

    def upsample_logits(self, low_res_logits: np.ndarray) -> np.ndarray:
        """Low-res logits (...x256x256, input frame) of the current image -> float32 logits ...xHxW in its original
        frame (`transforms.postprocess_masks`; threshold with `transforms.threshold`)."""
        image = self._require_image("before post-processing masks")
        return postprocess_masks(low_res_logits, image.input_size, image.original_size)

    # --- internals ------------------------------------------------------------------------------------------

    def _require_image(self, what: str) -> _ImageState:
        image = self._image  # read once: another thread's set_image may replace it at any time
        if image is None:
            raise ImageNotSetError(f"An image must be set with .set_image(...) {what}.")
        return image

    @staticmethod
    def _batch_prompts(
        image: _ImageState, point_coords, point_labels, boxes, mask_input
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """Validated batched prompts in the input frame: coords BxNx2, labels BxN, boxes Bx4, masks Bx1x256x256."""
        size = image.original_size
        coords = labels = boxes_in = masks_in = None
        batch = None
        if point_coords is not None or point_labels is not None:
            c, lab = validate_points(point_coords, point_labels, size, batched=True)
            coords, labels = apply_coords(c, size), lab.astype(np.float32)
            batch = c.shape[0]
        if boxes is not None:
            b = validate_boxes(boxes, size)
            if batch is not None and b.shape[0] != batch:
                raise InvalidPromptError(f"boxes must be {batch}x4 (one per point prompt), got shape {b.shape}")
            boxes_in, batch = apply_boxes(b, size), b.shape[0]
        if mask_input is not None:
            masks_in = validate_mask_input(mask_input, batch=batch if batch is not None else len(mask_input))
        return coords, labels, boxes_in, masks_in

    def _tokens(
        self, coords: np.ndarray | None, labels: np.ndarray | None, boxes: np.ndarray | None, batch: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The decoder's point_coords (BxTx2) and point_labels (BxT), input frame, as upstream's PromptEncoder
        builds its sparse tokens: points, then box corners; the pad point only for points without a box."""
        parts_xy: list[np.ndarray] = [np.zeros((batch, 0, 2), np.float32)]  # a mask-only prompt has no tokens
        parts_lab: list[np.ndarray] = [np.zeros((batch, 0), np.float32)]
        if coords is not None:
            parts_xy.append(coords)
            parts_lab.append(labels)  # type: ignore[arg-type]
        if boxes is not None:
            parts_xy.append(boxes.reshape(batch, 2, 2))
            parts_lab.append(np.broadcast_to(_BOX_LABELS, (batch, 2)))
        if coords is not None and boxes is None:
            # Upstream's one pad point, (0, 0) with label -1; the graph zeroes its positional encoding.
            parts_xy.append(np.zeros((batch, 1, 2), dtype=np.float32))
            parts_lab.append(np.full((batch, 1), LABEL_PAD, dtype=np.float32))
        point_coords, point_labels = np.concatenate(parts_xy, axis=1), np.concatenate(parts_lab, axis=1)
        if self.decoder_points is None:
            return point_coords, point_labels
        detail = f"{coords.shape[1]} point(s)" if coords is not None else "no points"
        detail += " + 2 box corners" if boxes is not None else " + 1 pad point"
        return pad_points(point_coords, point_labels, self.decoder_points, detail=detail)

    def _decode(
        self,
        image: _ImageState,
        coords: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
        masks_in: np.ndarray | None,
        multimask_output: bool,
        memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decoder runs on prompts already in the input frame (float32 BxNx2, BxN, Bx4, Bx1x256x256), in chunks of
        the memory budget. Returns (scores BxC, low_res BxCx256x256) of the selected outputs (C = 3 or 1).

        A decoder with the image cache that has none for this image yet gets the first prompt alone: that call
        computes the cache (kept on `image`), and every other prompt reads it. A batch would otherwise compute
        the same cache once per prompt (16 MiB each, and the time of a full first click each).
        """
        if coords is None and boxes is None and masks_in is None:
            raise InvalidPromptError("give a prompt: point_coords with point_labels, a box, or a mask_input")
        batch = next(a.shape[0] for a in (coords, boxes, masks_in) if a is not None)
        point_coords, point_labels = self._tokens(coords, labels, boxes, batch)
        lo, hi = MULTIMASK_SLICE if multimask_output else SINGLE_MASK_SLICE
        scores = np.empty((batch, hi - lo), np.float32)
        low_res = np.empty((batch, hi - lo, LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE), np.float32)
        # The decoder is looked at on every call, not once: benchmarks and calibration swap it for a wrapper.
        decoder = self.decoder
        cached_io = has_image_cache(decoder.input_names)
        fixed = self.decoder_batches
        per_prompt = DECODER_BYTES_PER_CACHED_PROMPT if cached_io and masks_in is None else DECODER_BYTES_PER_PROMPT
        step = chunk_size(memory_budget_mb, per_prompt, multiple=fixed[-1] if fixed else 1)
        start = 0
        if cached_io and masks_in is None and image.cache is None:
            start = self._run(decoder, image, point_coords, point_labels, None, 0, 1, scores, low_res, lo, hi)
        for s in range(start, batch, step):
            e = min(s + step, batch)
            self._run(decoder, image, point_coords, point_labels, masks_in, s, e, scores, low_res, lo, hi)
        return scores, low_res

    @staticmethod
    def _run(
        decoder: Session,
        image: _ImageState,
        point_coords: np.ndarray,
        point_labels: np.ndarray,
        masks_in: np.ndarray | None,
        s: int,
        e: int,
        scores: np.ndarray,
        low_res: np.ndarray,
        lo: int,
        hi: int,
    ) -> int:
        """One decoder run on prompts [s, e), written into scores[s:e] and low_res[s:e]; returns e."""
        n = e - s
        size = LOW_RES_MASK_SIZE
        feeds = {
            _DEC_EMBEDDINGS: image.features,
            _DEC_COORDS: point_coords[s:e],
            _DEC_LABELS: point_labels[s:e],
            _DEC_MASK: masks_in[s:e] if masks_in is not None else np.zeros((n, 1, size, size), dtype=np.float32),
            _DEC_HAS_MASK: np.full((n,), 0.0 if masks_in is None else 1.0, dtype=np.float32),
        }
        cached_io = has_image_cache(decoder.input_names)
        cache = image.cache  # read once: a concurrent first click may fill it meanwhile (with the same values)
        use_cache = cached_io and masks_in is None and cache is not None
        if cached_io:
            feeds.update(image_cache_feeds(cache if use_cache else None))
        out = decoder.run(feeds)
        if cached_io and not use_cache and masks_in is None:
            image.cache = kept_image_cache(out)  # this image's own: a new image is a new _ImageState
        scores[s:e] = out[_DEC_IOU][:, lo:hi]
        low_res[s:e] = out[_DEC_LOW_RES][:, lo:hi]
        return e

    @staticmethod
    def _postprocess(image: _ImageState, low_res: np.ndarray, return_logits: bool, budget_mb: float) -> np.ndarray:
        """BxCx256x256 low-res logits -> BxCxHxW bool masks (float32 logits with `return_logits`), a few masks at
        a time so the float32 full-size logits of the whole batch never exist at once."""
        h, w = image.original_size
        b, c = low_res.shape[:2]
        out = np.empty((b * c, h, w), np.float32 if return_logits else bool)
        flat = low_res.reshape(b * c, *low_res.shape[2:])
        # per mask: its float32 logits and the row pass's Hx256 intermediate
        step = chunk_size(min(budget_mb, POSTPROCESS_CHUNK_BYTES / MiB), 4 * h * (w + LOW_RES_MASK_SIZE))
        for s in range(0, b * c, step):
            logits = postprocess_masks(flat[s:s + step], image.input_size, image.original_size)
            out[s:s + step] = logits if return_logits else threshold(logits)
        return out.reshape(b, c, h, w)
