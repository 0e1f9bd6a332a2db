"""The single source of truth for pocketsam's two graphs and for the pre/post-processing contract.

Every exporter, backend, benchmark, test and golden-vector writer reads these names; nothing retypes them. The
Kotlin and Swift demos read the same values from `tests/golden/contract.json`, which `write_contract` produces
from this module (a test fails when the two drift).

Coordinate frames used throughout pocketsam:
- *original frame*: pixels of the user's image, (x, y) with x along the width, origin at the top-left corner.
- *input frame* (1024 frame): the image resized so its longest side is `IMAGE_SIZE`, then padded at the bottom and
  the right up to `IMAGE_SIZE` x `IMAGE_SIZE`. Prompts enter the decoder graph in this frame.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Union

# Bumped whenever a graph's I/O or a pre/post constant changes: a bundle written under another version is refused.
# 2: decoders may carry the image cache (IMAGE_CACHE, DECODER_CACHED).
SPEC_VERSION = "2"

# --- pre-processing (segment-anything's Sam defaults; MobileSAM keeps them) ---------------------------------
IMAGE_SIZE = 1024  # longest side after ResizeLongestSide; the encoder sees IMAGE_SIZE x IMAGE_SIZE
PIXEL_MEAN = (123.675, 116.28, 103.53)  # RGB, on the 0..255 scale
PIXEL_STD = (58.395, 57.12, 57.375)
# SAM pads *after* normalizing, with zeros. The encoder graph normalizes inside, so a host that pads raw pixels
# must pad with the pixel mean (which normalizes to exactly 0): that is why the encoder input is float, not uint8.
PAD_VALUE_RAW = PIXEL_MEAN
RESIZE_INTERPOLATION = "bilinear"  # PIL bilinear on uint8, as torchvision's to_pil_image + resize in SAM

# --- embeddings and masks -------------------------------------------------------------------------------------
EMBED_DIM = 256
EMBED_SIZE = 64  # IMAGE_SIZE / 16 (the encoder's total stride)
LOW_RES_MASK_SIZE = 256  # the decoder's logits, 4 x EMBED_SIZE
NUM_MASK_OUTPUTS = 4  # index 0: the single-mask output; 1..3: the multimask outputs (SamPredictor's slices)
MULTIMASK_SLICE = (1, 4)
SINGLE_MASK_SLICE = (0, 1)
MASK_THRESHOLD = 0.0  # logits > threshold are foreground

# --- prompt label codes (SAM's) -------------------------------------------------------------------------------
LABEL_PAD = -1  # not a point: padding. SamPredictor appends one (0, 0) pad point when no box is given
LABEL_BACKGROUND = 0
LABEL_FOREGROUND = 1
LABEL_BOX_TOP_LEFT = 2
LABEL_BOX_BOTTOM_RIGHT = 3
USER_POINT_LABELS = (LABEL_BACKGROUND, LABEL_FOREGROUND)  # what a user may pass to predict()

# --- fixed-shape decoders (LiteRT) ----------------------------------------------------------------------------
# LiteRT graphs have static shapes, so the decoder is exported with a fixed number of prompt points; Predictor pads
# every prompt with (0, 0) points labelled LABEL_PAD. 6 covers a box (2 corners) + 4 clicks, or 5 clicks + SAM's
# one pad point: what interactive use needs, while extra pad tokens stay cheap (the decoder's cost is dominated by
# its 4096 image positions, not its few tokens). Pad tokens are real tokens to the decoder, so masks differ slightly
# from upstream's exact-count prompt (docs/tflite.md measures it). More: --decoder-points N.
DECODER_FIXED_POINTS = 6

Dim = Union[int, str]  # a str is a symbolic axis ("batch", "num_points")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, shape (ints, or names for symbolic axes), numpy dtype and meaning."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str
    description: str

    def concrete_shape(self, **axes: int) -> tuple[int, ...]:
        """The shape with symbolic axes replaced by `axes` (e.g. batch=1, num_points=2)."""
        return tuple(axes[d] if isinstance(d, str) else d for d in self.shape)


@dataclass(frozen=True)
class GraphSpec:
    """The I/O contract of one exported graph (ordered inputs and outputs)."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)

    def output(self, name: str) -> TensorSpec:
        return next(t for t in self.outputs if t.name == name)


ENCODER = GraphSpec(
    name="encoder",
    inputs=(
        TensorSpec(
            "image",
            (1, 3, IMAGE_SIZE, IMAGE_SIZE),
            "float32",
            "RGB, NCHW, raw pixel values 0..255 resized so the longest side is 1024, padded bottom/right with "
            "PIXEL_MEAN; the graph normalizes with PIXEL_MEAN/PIXEL_STD",
        ),
    ),
    outputs=(
        TensorSpec(
            "image_embeddings",
            (1, EMBED_DIM, EMBED_SIZE, EMBED_SIZE),
            "float32",
            "NCHW image embedding on the 64x64 grid of the 1024 input frame",
        ),
    ),
)

DECODER = GraphSpec(
    name="decoder",
    inputs=(
        TensorSpec("image_embeddings", (1, EMBED_DIM, EMBED_SIZE, EMBED_SIZE), "float32", "the encoder's output"),
        TensorSpec(
            "point_coords",
            ("batch", "num_points", 2),
            "float32",
            "(x, y) in the 1024 input frame; box corners are points with labels 2 (top-left) and 3 (bottom-right)",
        ),
        TensorSpec(
            "point_labels",
            ("batch", "num_points"),
            "float32",
            "-1 pad, 0 background, 1 foreground, 2 box top-left, 3 box bottom-right (float so the graph handles "
            "labels by arithmetic)",
        ),
        TensorSpec(
            "mask_input",
            ("batch", 1, LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE),
            "float32",
            "low-res logits of an earlier prediction, in the padded 1024 frame scaled to 256x256; zeros if unused",
        ),
        TensorSpec("has_mask_input", ("batch",), "float32", "1.0 where mask_input is used, else 0.0"),
    ),
    outputs=(
        TensorSpec(
            "low_res_masks",
            ("batch", NUM_MASK_OUTPUTS, LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE),
            "float32",
            "mask logits in the padded 1024 frame at 256x256; index 0 single-mask, 1..3 multimask",
        ),
        TensorSpec("iou_predictions", ("batch", NUM_MASK_OUTPUTS), "float32", "predicted IoU of each mask"),
    ),
)

# --- the decoder's image cache (optional decoder I/O) -----------------------------------------------------------
# Part of the decoder's first layer depends on the image alone (export/decoder_rewrite.py, `ImageCache`). A decoder
# exported with the cache (ONNX) returns that part as extra outputs and takes it back as inputs: the Predictor keeps
# it per image, so the first click on an image computes it (use_image_cache 0: the outputs are filled) and every
# later click without a mask input reads it (use_image_cache 1: the outputs are empty, axis 0 of length 0). A mask
# input changes the dense embedding the cache holds, so such a click computes it again (and it is not kept).
# MobileSAM's cross attentions: 8 heads of 16 channels (256 / downsample rate 2); the exporter checks the model.
DECODER_ATTENTION_HEADS = 8
DECODER_ATTENTION_HEAD_DIM = 16
_TOKENS = EMBED_SIZE * EMBED_SIZE
IMAGE_CACHE = (
    TensorSpec("image_tokens", ("cache_batch", _TOKENS, EMBED_DIM), "float32",
               "image embedding + dense prompt embedding as row-major (y, x) tokens"),
    TensorSpec("t2i_keys", ("cache_batch", DECODER_ATTENTION_HEADS, DECODER_ATTENTION_HEAD_DIM, _TOKENS), "float32",
               "first layer's token->image key projection of tokens + positional encoding, per head, transposed"),
    TensorSpec("t2i_values", ("cache_batch", DECODER_ATTENTION_HEADS, _TOKENS, DECODER_ATTENTION_HEAD_DIM), "float32",
               "first layer's token->image value projection of the tokens, per head"),
    TensorSpec("i2t_queries", ("cache_batch", _TOKENS, DECODER_ATTENTION_HEADS * DECODER_ATTENTION_HEAD_DIM),
               "float32", "first layer's image->token query projection of tokens + positional encoding, scaled"),
)
CACHED_INPUT_PREFIX = "cached_"  # the cache fed back: input `cached_<name>` for output `<name>`
USE_IMAGE_CACHE = TensorSpec("use_image_cache", (1,), "float32",
                             "1.0: read the cached_* inputs (outputs empty); 0.0: compute the cache and return it")
DECODER_CACHED = GraphSpec(
    name="decoder",
    inputs=DECODER.inputs
    + tuple(TensorSpec(CACHED_INPUT_PREFIX + t.name, t.shape, t.dtype, "an earlier call's " + t.name)
            for t in IMAGE_CACHE)
    + (USE_IMAGE_CACHE,),
    outputs=DECODER.outputs + IMAGE_CACHE,
)

GRAPHS: dict[str, GraphSpec] = {"encoder": ENCODER, "decoder": DECODER}
# Every I/O a model file of each part may have (the first is the part's spec; check_io_names accepts any).
IO_VARIANTS: dict[str, tuple[GraphSpec, ...]] = {"encoder": (ENCODER,), "decoder": (DECODER, DECODER_CACHED)}


def has_image_cache(input_names: list[str]) -> bool:
    """Whether a decoder with these inputs takes the image cache (`DECODER_CACHED`)."""
    return USE_IMAGE_CACHE.name in input_names

# Bundle layout: one file per part, named <part><extension>, beside manifest.json and probe.npz.
FORMAT_EXTENSIONS: dict[str, str] = {"onnx": ".onnx", "tflite": ".tflite", "coreml": ".mlpackage"}
MANIFEST_NAME = "manifest.json"
PROBE_NAME = "probe.npz"


def constants() -> dict[str, object]:
    """The pre/post constants, as recorded in every manifest and in `tests/golden/contract.json`."""
    return {
        "spec_version": SPEC_VERSION,
        "image_size": IMAGE_SIZE,
        "pixel_mean": list(PIXEL_MEAN),
        "pixel_std": list(PIXEL_STD),
        "pad_value_raw": list(PAD_VALUE_RAW),
        "resize_interpolation": RESIZE_INTERPOLATION,
        "embed_dim": EMBED_DIM,
        "embed_size": EMBED_SIZE,
        "low_res_mask_size": LOW_RES_MASK_SIZE,
        "num_mask_outputs": NUM_MASK_OUTPUTS,
        "multimask_slice": list(MULTIMASK_SLICE),
        "single_mask_slice": list(SINGLE_MASK_SLICE),
        "mask_threshold": MASK_THRESHOLD,
        "labels": {
            "pad": LABEL_PAD,
            "background": LABEL_BACKGROUND,
            "foreground": LABEL_FOREGROUND,
            "box_top_left": LABEL_BOX_TOP_LEFT,
            "box_bottom_right": LABEL_BOX_BOTTOM_RIGHT,
        },
    }


def graphs_as_dict() -> dict[str, object]:
    """Both graph specs as plain JSON-able dicts (for manifests and the demos' contract file), and the decoder's
    optional image-cache form."""
    return {**{name: asdict(g) for name, g in GRAPHS.items()}, "decoder_cached": asdict(DECODER_CACHED)}


def bundle_layout() -> dict[str, object]:
    """How a bundle folder is laid out, for the demos' bundle readers: the manifest's and the probe's file names,
    the parts (each a graph of `GRAPHS`, named in the manifest's `parts`) and each format's part-file extension."""
    return {"manifest": MANIFEST_NAME, "probe": PROBE_NAME, "parts": list(GRAPHS),
            "format_extensions": dict(FORMAT_EXTENSIONS)}


def write_contract(path: Path) -> None:
    """Write the constants, the graph I/O and the bundle layout as JSON for the Kotlin and Swift demos."""
    doc = {"constants": constants(), "graphs": graphs_as_dict(), "bundle": bundle_layout()}
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")
