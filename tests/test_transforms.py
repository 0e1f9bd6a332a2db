"""pocketsam.runtime.transforms against segment-anything's formulas and torch's F.interpolate (tests may use torch;
the runtime may not). Upstream's code is reimplemented here from segment_anything (utils/transforms.py,
modeling/sam.py) so the tests need neither segment-anything nor torchvision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _bad_inputs import BOXES, IMAGE_ARRAYS, MASKS, POINTS  # the catalog of bad inputs (tests/_bad_inputs.py)
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pocketsam.runtime import spec
from pocketsam.runtime import transforms as T
from pocketsam.runtime.errors import InvalidImageError, InvalidPromptError

SIZES = [(2, 2), (3, 7), (300, 451), (1500, 17), (17, 1500), (1024, 1024), (1500, 2000), (4000, 3)]
POSTPROCESS_ATOL = 1e-4  # on logits of magnitude ~10 (float32 matmuls vs torch's two float32 passes)
side = st.integers(2, 4000)


# --- upstream, reimplemented --------------------------------------------------------------------------------


def upstream_preprocess_shape(oldh: int, oldw: int, long_side_length: int = 1024) -> tuple[int, int]:
    scale = long_side_length * 1.0 / max(oldh, oldw)
    newh, neww = oldh * scale, oldw * scale
    return int(newh + 0.5), int(neww + 0.5)


def upstream_apply_coords(coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """ResizeLongestSide.apply_coords, then SamPredictor's torch.as_tensor(..., dtype=torch.float)."""
    old_h, old_w = original_size
    new_h, new_w = upstream_preprocess_shape(old_h, old_w)
    coords = coords.copy().astype(float)
    coords[..., 0] = coords[..., 0] * (new_w / old_w)
    coords[..., 1] = coords[..., 1] * (new_h / old_h)
    return torch.as_tensor(coords, dtype=torch.float).numpy()


def upstream_postprocess(low_res: np.ndarray, input_size, original_size) -> np.ndarray:
    """Sam.postprocess_masks on BxCx256x256."""
    x = F.interpolate(torch.from_numpy(low_res), (1024, 1024), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, original_size, mode="bilinear", align_corners=False).numpy()


def upstream_encoder_input(image: np.ndarray) -> np.ndarray:
    """to_pil_image + resize (PIL bilinear), then Sam.preprocess: normalize, zero-pad bottom/right."""
    h, w = upstream_preprocess_shape(*image.shape[:2])
    resized = np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    x = torch.as_tensor(resized).permute(2, 0, 1)[None].float()
    mean = torch.tensor(spec.PIXEL_MEAN).view(-1, 1, 1)
    std = torch.tensor(spec.PIXEL_STD).view(-1, 1, 1)
    x = (x - mean) / std
    return F.pad(x, (0, 1024 - w, 0, 1024 - h)).numpy()


def graph_normalize(encoder_input: np.ndarray) -> np.ndarray:
    """What the encoder graph does first (spec: normalization is inside the graph)."""
    mean = np.asarray(spec.PIXEL_MEAN, np.float32)[:, None, None]
    std = np.asarray(spec.PIXEL_STD, np.float32)[:, None, None]
    return (encoder_input - mean) / std


def logits(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 10).astype(np.float32)


# --- geometry -----------------------------------------------------------------------------------------------


@given(side, side)
def test_preprocess_shape_matches_upstream_and_long_side_is_image_size(h: int, w: int) -> None:
    new = T.get_preprocess_shape(h, w)
    assert new == upstream_preprocess_shape(h, w)
    assert max(new) == spec.IMAGE_SIZE and min(new) >= 1


@pytest.mark.parametrize("size", SIZES)
def test_coords_and_boxes_bit_exact(size: tuple[int, int]) -> None:
    h, w = size
    rng = np.random.default_rng(h * 10007 + w)
    for coords in (rng.uniform(0, [w, h], (7, 2)), rng.uniform(0, [w, h], (3, 5, 2)).astype(np.float32),
                   rng.integers(0, min(h, w), (4, 2))):
        got = T.apply_coords(coords, size)
        assert got.dtype == np.float32 and got.shape == coords.shape
        np.testing.assert_array_equal(got, upstream_apply_coords(coords, size))
    boxes = np.sort(rng.uniform(0, [w, h, w, h], (6, 4)).reshape(6, 2, 2), axis=1).reshape(6, 4)
    got = T.apply_boxes(boxes, size)
    np.testing.assert_array_equal(got, upstream_apply_coords(boxes.reshape(-1, 2, 2), size).reshape(-1, 4))
    assert T.apply_boxes(boxes[0], size).shape == (1, 4)


def test_apply_coords_does_not_modify_its_input() -> None:
    coords = np.array([[10.0, 20.0]])
    T.apply_coords(coords, (100, 50))
    np.testing.assert_array_equal(coords, [[10.0, 20.0]])


@given(side, side)
def test_apply_coords_maps_corners_to_corners(h: int, w: int) -> None:
    new_h, new_w = T.get_preprocess_shape(h, w)
    out = T.apply_coords(np.array([[0, 0], [w, h]]), (h, w))
    np.testing.assert_array_equal(out[0], [0, 0])
    np.testing.assert_allclose(out[1], [new_w, new_h], rtol=np.finfo(np.float32).eps)


@given(side, side, st.lists(st.floats(0, 1), min_size=2, max_size=20))
def test_apply_coords_is_monotonic(h: int, w: int, fractions: list[float]) -> None:
    f = np.sort(np.asarray(fractions))
    out = T.apply_coords(np.stack([f * w, f * h], axis=-1), (h, w))
    assert (np.diff(out, axis=0) >= 0).all()


# --- image --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(2, 2), (3, 7), (300, 451), (1500, 17), (1024, 1024), (5, 4000)])
def test_resize_equals_pil_bilinear(size: tuple[int, int]) -> None:
    image = np.random.default_rng(size[0]).integers(0, 256, (*size, 3), dtype=np.uint8)
    new_h, new_w = upstream_preprocess_shape(*size)
    want = np.array(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    got = T.resize_longest_side(image)
    assert got.dtype == np.uint8 and got.shape == (new_h, new_w, 3)
    np.testing.assert_array_equal(got, want)
    # a non-contiguous view (a BGR flip) resizes like its copy
    flipped = image[..., ::-1]
    np.testing.assert_array_equal(T.resize_longest_side(flipped), T.resize_longest_side(flipped.copy()))


@pytest.mark.parametrize("size", [(3, 7), (300, 451), (1500, 17), (1024, 1024)])
def test_preprocess_normalizes_like_sam(size: tuple[int, int]) -> None:
    image = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    x, input_size = T.preprocess(image)
    assert x.shape == spec.ENCODER.input("image").concrete_shape() and x.dtype == np.float32
    assert input_size == T.get_preprocess_shape(*size)
    h, w = input_size
    np.testing.assert_array_equal(x[0, :, :h, :w], T.resize_longest_side(image).transpose(2, 0, 1))
    normalized = graph_normalize(x)
    assert (normalized[..., h:, :] == 0).all() and (normalized[..., :, w:] == 0).all()  # exactly, as SAM's pad
    np.testing.assert_allclose(normalized, upstream_encoder_input(image), atol=1e-6)


# --- masks --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_postprocess_matches_torch(size: tuple[int, int]) -> None:
    input_size = T.get_preprocess_shape(*size)
    low_res = logits((2, 3, 256, 256), seed=size[0] + size[1])
    want = upstream_postprocess(low_res, input_size, size)
    got = T.postprocess_masks(low_res, input_size, size)
    assert got.shape == (2, 3, *size) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=POSTPROCESS_ATOL)
    unbatched = T.postprocess_masks(low_res[0], input_size, size)
    np.testing.assert_allclose(unbatched, want[0], rtol=0, atol=POSTPROCESS_ATOL)
    np.testing.assert_array_equal(T.threshold(got), want > spec.MASK_THRESHOLD)


def test_postprocess_matches_torch_on_a_non_contiguous_slice() -> None:
    size = (300, 451)
    input_size = T.get_preprocess_shape(*size)
    low_res = logits((1, 4, 256, 256), seed=3)[:, 1:4]  # how the predictor slices the decoder's output
    want = upstream_postprocess(np.ascontiguousarray(low_res), input_size, size)
    np.testing.assert_allclose(T.postprocess_masks(low_res, input_size, size), want, rtol=0, atol=POSTPROCESS_ATOL)


@settings(max_examples=30, deadline=None)
@given(side, side, st.floats(-50, 50, width=32))
def test_postprocess_of_a_constant_map_is_constant(h: int, w: int, value: float) -> None:
    low_res = np.full((1, 256, 256), value, dtype=np.float32)
    out = T.postprocess_masks(low_res, T.get_preprocess_shape(h, w), (h, w))
    assert out.shape == (1, h, w)
    np.testing.assert_allclose(out, value, rtol=1e-5, atol=1e-5)


def test_threshold_is_strictly_greater_than_the_spec_threshold() -> None:
    t = spec.MASK_THRESHOLD
    np.testing.assert_array_equal(T.threshold(np.array([t - 1, t, t + 1e-3])), [False, False, True])


# --- validation ---------------------------------------------------------------------------------------------

GOOD = np.zeros((8, 8, 3), np.uint8)
@pytest.mark.parametrize("image,fragment", IMAGE_ARRAYS, ids=[f[:30] for _, f in IMAGE_ARRAYS])
def test_bad_images_raise_specific_errors(image: object, fragment: str) -> None:
    with pytest.raises(InvalidImageError, match="expected an HxWx3 uint8 RGB image") as info:
        T.validate_image(image)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidImageError):
        T.preprocess(image)  # type: ignore[arg-type]


def test_good_images_pass() -> None:
    T.validate_image(GOOD)
    T.validate_image(np.zeros((2, 2, 3), np.uint8))
    T.validate_image(np.zeros((2, 4000, 3), np.uint8))


SIZE = (100, 200)  # h, w
@pytest.mark.parametrize("coords,labels,fragment", POINTS, ids=[f[:30] for *_, f in POINTS])
def test_bad_points_raise_specific_errors(coords, labels, fragment: str) -> None:
    with pytest.raises(InvalidPromptError) as info:
        T.validate_points(coords, labels, SIZE)
    assert fragment in str(info.value)


def test_points_on_the_border_pass() -> None:
    c, lab = T.validate_points([[0, 0], [200, 100], [200, 0]], [1, 0, 1], SIZE)
    assert c.shape == (3, 2) and lab.tolist() == [1, 0, 1]
    c, lab = T.validate_points(np.zeros((4, 3, 2)), np.ones((4, 3)), SIZE, batched=True)
    assert c.shape == (4, 3, 2)
    with pytest.raises(InvalidPromptError, match="BxNx2"):
        T.validate_points(np.zeros((3, 2)), np.ones(3), SIZE, batched=True)


@pytest.mark.parametrize("box,fragment", BOXES, ids=[f[:30] for _, f in BOXES])
def test_bad_boxes_raise_specific_errors(box, fragment: str) -> None:
    with pytest.raises(InvalidPromptError) as info:
        T.validate_box(box, SIZE)
    assert fragment in str(info.value)


def test_boxes_pass_and_batched_boxes_are_checked() -> None:
    assert T.validate_box([0, 0, 200, 100], SIZE).shape == (1, 4)
    assert T.validate_box([[5, 5, 5, 5]], SIZE).shape == (1, 4)  # a degenerate box is still a box
    assert T.validate_boxes(np.tile([0, 0, 10, 10], (3, 1)), SIZE).shape == (3, 4)
    with pytest.raises(InvalidPromptError, match="boxes must be Bx4"):
        T.validate_boxes(np.zeros(4), SIZE)


@pytest.mark.parametrize("mask,fragment", MASKS, ids=[f[:30] for _, f in MASKS])
def test_bad_mask_inputs_raise_specific_errors(mask, fragment: str) -> None:
    with pytest.raises(InvalidPromptError) as info:
        T.validate_mask_input(mask)
    assert fragment in str(info.value)


def test_mask_inputs_pass() -> None:
    for m in (np.ones((256, 256)), np.ones((1, 256, 256), np.float32)):
        out = T.validate_mask_input(m)
        assert out.shape == (1, 1, 256, 256) and out.dtype == np.float32
    assert T.validate_mask_input(np.ones((3, 1, 256, 256)), batch=3).shape == (3, 1, 256, 256)
    with pytest.raises(InvalidPromptError, match="mask_inputs must be 2x1x256x256"):
        T.validate_mask_input(np.ones((3, 1, 256, 256)), batch=2)
