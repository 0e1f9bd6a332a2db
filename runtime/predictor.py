"""`Predictor`: segment-anything's `SamPredictor` over any pair of Sessions (numpy in, numpy out, no torch).

The encoder runs once per image (`set_image`); every click (`predict`) runs only the decoder plus the cached
post-processing. A decoder with the image cache (`spec.DECODER_CACHED`, the ONNX export) returns the image-only
part of its work on the first click and is handed it back on every later click of that image without a mask
input. Prompts reach the decoder graph exactly as upstream's PromptEncoder would see them: the points,
then the box corners (labels 2 and 3); when points come without a box, one (0, 0) point labelled -1 (upstream's
`pad`) is appended; a mask-only prompt has no point tokens at all.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidImageError, InvalidPromptError, PocketSamError
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


class Predictor:
    """Set an image once, then predict masks for many prompts, with `SamPredictor`'s API and results.

    Args:
        encoder: Session of the encoder graph (`spec.ENCODER`).
        decoder: Session of the decoder graph (`spec.DECODER`).
        decoder_points: for decoders exported with a fixed number of prompt points (TFLite, `--decoder-points`):
            every prompt is padded to this many points with (0, 0) points labelled -1. Results equal upstream's
            only when the prompt needs exactly this many (a click + the pad point, or a box, need 2); extra pad
            tokens are real tokens to the decoder and shift the masks slightly. None: send the exact token count.

    Attributes (as SamPredictor): `original_size` (h, w) of the image, `input_size` (h, w) of the resized image
    inside the 1024 input frame, `features` (1x256x64x64 float32 embedding), `is_image_set`.
    """

    def __init__(self, encoder: Session, decoder: Session, *, decoder_points: int | None = None) -> None:
        if decoder_points is not None and (int(decoder_points) != decoder_points or decoder_points < 1):
            raise ValueError(f"decoder_points must be a positive int or None, got {decoder_points!r}")
        self.encoder = encoder
        self.decoder = decoder
        self.decoder_points = None if decoder_points is None else int(decoder_points)
        self.bundle = None  # the Bundle when made by from_bundle
        self.reset_image()

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
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.original_size = (int(image.shape[0]), int(image.shape[1]))
        self.input_size = input_size
        self.is_image_set = True
        warm_postprocess(input_size, self.original_size)  # so the first click does not pay for it

    def get_image_embedding(self) -> np.ndarray:
        """The current image's embedding, float32 1x256x64x64 (on the 64x64 grid of the input frame)."""
        self._require_image("to get its embedding")
        return self.features  # type: ignore[return-value]

    def reset_image(self) -> None:
        """Forget the current image (and its embedding)."""
        self.is_image_set = False
        self.features: np.ndarray | None = None
        self._image_cache: dict[str, np.ndarray] | None = None  # the decoder's, filled by an image's first click
        self.original_size: Size | None = None
        self.input_size: Size | None = None

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
        self._require_image("before mask prediction")
        size = self.original_size
        coords = labels = boxes = masks_in = None
        if point_coords is not None or point_labels is not None:
            c, lab = validate_points(point_coords, point_labels, size)  # type: ignore[arg-type]
            coords, labels = apply_coords(c, size)[None], lab.astype(np.float32)[None]  # type: ignore[arg-type]
        if box is not None:
            boxes = apply_boxes(validate_box(box, size), size)  # type: ignore[arg-type]
        if mask_input is not None:
            masks_in = validate_mask_input(mask_input)
        masks, scores, low_res = self._decode(coords, labels, boxes, masks_in, multimask_output, return_logits)
        return masks[0], scores[0], low_res[0]

    def predict_batch(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for B prompts on the current image in ONE decoder run (SamPredictor.predict_torch, numpy in).

        Every prompt in a batch has the same number of tokens: B prompts of N points each (BxNx2 / BxN), and/or
        one box each (Bx4); to mix prompt kinds, call once per kind. Result b equals `predict` on prompt b.
        Memory: the returned masks are BxCxHxW at the original size.

        Args:
            point_coords: BxNx2 (x, y) pixels in the original frame, or None.
            point_labels: BxN labels (1 foreground, 0 background), or None.
            boxes: Bx4 XYXY pixels in the original frame, or None.
            mask_input: Bx1x256x256 low-res logits, or None.

        Returns:
            masks BxCxHxW (bool, or float32 logits), scores BxC float32, low_res_logits BxCx256x256 float32.
        """
        self._require_image("before mask prediction")
        size = self.original_size
        coords = labels = boxes_in = masks_in = None
        batch = None
        if point_coords is not None or point_labels is not None:
            c, lab = validate_points(point_coords, point_labels, size, batched=True)  # type: ignore[arg-type]
            coords, labels = apply_coords(c, size), lab.astype(np.float32)  # type: ignore[arg-type]
            batch = c.shape[0]
        if boxes is not None:
            b = validate_boxes(boxes, size)  # type: ignore[arg-type]
            if batch is not None and b.shape[0] != batch:
                raise InvalidPromptError(f"boxes must be {batch}x4 (one per point prompt), got shape {b.shape}")
            boxes_in, batch = apply_boxes(b, size), b.shape[0]  # type: ignore[arg-type]
        if mask_input is not None:
            masks_in = validate_mask_input(mask_input, batch=batch if batch is not None else len(mask_input))
        return self._decode(coords, labels, boxes_in, masks_in, multimask_output, return_logits)

    # --- internals ------------------------------------------------------------------------------------------

    def _require_image(self, what: str) -> None:
        if not self.is_image_set:
            raise ImageNotSetError(f"An image must be set with .set_image(...) {what}.")

    def _tokens(
        self, coords: np.ndarray | None, labels: np.ndarray | None, boxes: np.ndarray | None, batch: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The decoder's point_coords (BxTx2) and point_labels (BxT), input frame, as upstream's PromptEncoder
        builds its sparse tokens: points, then box corners; the pad point only for points without a box."""
        parts_xy: list[np.ndarray] = []
        parts_lab: list[np.ndarray] = []
        if coords is not None:
            parts_xy.append(coords)
            parts_lab.append(labels)  # type: ignore[arg-type]
        if boxes is not None:
            parts_xy.append(boxes.reshape(batch, 2, 2))
            parts_lab.append(np.broadcast_to(_BOX_LABELS, (batch, 2)))
        n_pad = 1 if coords is not None and boxes is None else 0
        n_user = sum(p.shape[1] for p in parts_xy)
        if self.decoder_points is not None:
            need = n_user + n_pad
            if need > self.decoder_points:
                what = f"{coords.shape[1]} point(s)" if coords is not None else "no points"
                what += " + 2 box corners" if boxes is not None else " + 1 pad point"
                raise InvalidPromptError(
                    f"this prompt needs {need} decoder points ({what}) but the decoder takes "
                    f"{self.decoder_points}: re-export with --decoder-points {need} (or more), or give fewer points"
                )
            n_pad = self.decoder_points - n_user
        # Pad points are (0, 0) with label -1 (upstream's `pad`); the graph zeroes their positional encoding.
        parts_xy.append(np.zeros((batch, n_pad, 2), dtype=np.float32))
        parts_lab.append(np.full((batch, n_pad), LABEL_PAD, dtype=np.float32))
        return np.concatenate(parts_xy, axis=1), np.concatenate(parts_lab, axis=1)

    def _decode(
        self,
        coords: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
        masks_in: np.ndarray | None,
        multimask_output: bool,
        return_logits: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One decoder run on prompts already in the input frame (float32 BxNx2, BxN, Bx4, Bx1x256x256)."""
        if coords is None and boxes is None and masks_in is None:
            raise InvalidPromptError("give a prompt: point_coords with point_labels, a box, or a mask_input")
        batch = next(a.shape[0] for a in (coords, boxes, masks_in) if a is not None)
        point_coords, point_labels = self._tokens(coords, labels, boxes, batch)
        s = LOW_RES_MASK_SIZE
        feeds = {
            _DEC_EMBEDDINGS: self.features,
            _DEC_COORDS: point_coords,
            _DEC_LABELS: point_labels,
            _DEC_MASK: masks_in if masks_in is not None else np.zeros((batch, 1, s, s), dtype=np.float32),
            _DEC_HAS_MASK: np.full((batch,), 0.0 if masks_in is None else 1.0, dtype=np.float32),
        }
        # The decoder is looked at on every call, not once: benchmarks and calibration swap it for a wrapper.
        cached_io = has_image_cache(self.decoder.input_names)
        use_cache = cached_io and masks_in is None and self._image_cache is not None
        if cached_io:
            feeds.update(image_cache_feeds(self._image_cache if use_cache else None))
        out = self.decoder.run(feeds)
        if cached_io and not use_cache and masks_in is None:
            self._image_cache = kept_image_cache(out)
        lo, hi = MULTIMASK_SLICE if multimask_output else SINGLE_MASK_SLICE
        low_res = np.asarray(out[_DEC_LOW_RES], dtype=np.float32)[:, lo:hi]
        scores = np.asarray(out[_DEC_IOU], dtype=np.float32)[:, lo:hi]
        masks = postprocess_masks(low_res, self.input_size, self.original_size)  # type: ignore[arg-type]
        return (masks if return_logits else threshold(masks)), scores, low_res
