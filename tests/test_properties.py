"""Property-based tests (hypothesis): any image or prompt a caller can pass gives a valid result or a
`PocketSamError`, never another exception; the coordinate transforms keep their geometry for every image size."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pocketsam.runtime import spec
from pocketsam.runtime import transforms as T
from pocketsam.runtime.errors import InvalidImageError, InvalidPromptError, PocketSamError
from pocketsam.runtime.predictor import Predictor

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DTYPES = st.sampled_from([np.uint8, np.int8, np.uint16, np.int32, np.int64, np.float16, np.float32, np.float64,
                          np.complex64, np.bool_, np.object_, np.str_])


def arrays(max_dims: int = 4, max_side: int = 6):
    """Small arrays of any dtype, rank 0..max_dims, values anything the dtype holds (NaN, inf, huge, strings)."""
    return DTYPES.flatmap(lambda dt: hnp.arrays(
        dt, hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side),
        elements=st.text(max_size=3) if dt is np.str_ else (st.none() | st.integers() | st.floats())
        if dt is np.object_ else None))


ANYTHING = arrays() | st.none() | st.integers() | st.floats() | st.text(max_size=5) | st.complex_numbers() | \
    st.lists(st.floats(allow_nan=True), max_size=6) | st.lists(st.lists(st.integers(), max_size=3), max_size=3)


class ConstantEncoder:
    input_names = spec.ENCODER.input_names
    output_names = spec.ENCODER.output_names

    def run(self, feeds):
        return {"image_embeddings": np.zeros(spec.ENCODER.output("image_embeddings").concrete_shape(), np.float32)}


class RampDecoder:
    """Valid outputs of the spec's shapes for any valid feeds (a logit ramp, so masks are non-trivial)."""

    input_names = spec.DECODER.input_names
    output_names = spec.DECODER.output_names

    def run(self, feeds):
        batch = feeds["point_coords"].shape[0]
        s = spec.LOW_RES_MASK_SIZE
        low = np.broadcast_to(np.arange(s, dtype=np.float32) - s / 2, (batch, spec.NUM_MASK_OUTPUTS, s, s))
        return {"low_res_masks": low.copy(), "iou_predictions": np.zeros((batch, spec.NUM_MASK_OUTPUTS), np.float32)}


def _predictor(size=(30, 45)) -> Predictor:
    p = Predictor(ConstantEncoder(), RampDecoder())
    p.set_image(np.zeros((*size, 3), np.uint8))
    return p


PREDICTOR = _predictor()


def _quietly(fn, *args, **kwargs):
    """Run with every warning an error: a conversion that warns (ComplexWarning, overflow) must be refused instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


@SETTINGS
@given(ANYTHING)
def test_any_image_is_valid_or_an_image_error(image):
    try:
        _quietly(T.validate_image, image)
    except InvalidImageError:
        return
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@SETTINGS
@given(ANYTHING, ANYTHING, st.booleans())
def test_any_points_are_valid_or_a_prompt_error(coords, labels, batched):
    try:
        c, lab = _quietly(T.validate_points, coords, labels, (100, 200), batched=batched)
    except InvalidPromptError:
        return
    assert c.dtype == np.float64 and np.isfinite(c).all() and c.shape[:-1] == lab.shape and c.shape[-1] == 2
    assert ((c[..., 0] >= 0) & (c[..., 0] <= 200) & (c[..., 1] >= 0) & (c[..., 1] <= 100)).all()


@SETTINGS
@given(ANYTHING)
def test_any_box_is_valid_or_a_prompt_error(box):
    try:
        b = _quietly(T.validate_box, box, (100, 200))
    except InvalidPromptError:
        return
    assert b.shape == (1, 4) and (b[:, :2] <= b[:, 2:]).all()


@SETTINGS
@given(ANYTHING | hnp.arrays(np.float64, (256, 256), elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_any_mask_input_is_valid_or_a_prompt_error(mask):
    try:
        m = _quietly(T.validate_mask_input, mask)
    except InvalidPromptError:
        return
    assert m.shape == (1, 1, 256, 256) and m.dtype == np.float32 and np.isfinite(m).all()


@SETTINGS
@given(coords=ANYTHING, labels=ANYTHING, box=ANYTHING, mask=ANYTHING | st.none(), multimask=st.booleans())
def test_predict_returns_masks_or_a_pocketsam_error(coords, labels, box, mask, multimask):
    try:
        masks, scores, low = _quietly(PREDICTOR.predict, coords, labels, box, mask, multimask)
    except PocketSamError:
        return
    n = 3 if multimask else 1
    assert masks.shape == (n, 30, 45) and masks.dtype == bool and scores.shape == (n,) and low.shape == (n, 256, 256)


SIZES = st.tuples(st.integers(2, 4000), st.integers(2, 4000)).filter(
    lambda hw: min(T.get_preprocess_shape(*hw)) >= 1)


@SETTINGS
@given(SIZES, st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=8))
def test_coordinates_stay_inside_the_resized_image(size, fractions):
    h, w = size
    new_h, new_w = T.get_preprocess_shape(h, w)
    assert max(new_h, new_w) == spec.IMAGE_SIZE
    pts = np.array([[fx * w, fy * h] for fx, fy in fractions])
    out = T.apply_coords(pts, size)
    assert out.dtype == np.float32 and out.shape == pts.shape
    tol = 1e-3 * spec.IMAGE_SIZE  # one float32 rounding of values up to 1024
    assert (out[:, 0] >= -tol).all() and (out[:, 0] <= new_w + tol).all()
    assert (out[:, 1] >= -tol).all() and (out[:, 1] <= new_h + tol).all()
    back = out.astype(np.float64) * np.array([w / new_w, h / new_h])
    np.testing.assert_allclose(back, pts, atol=max(w, h) * 1e-5 + 1e-4)


@SETTINGS
@given(SIZES, st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)))
def test_boxes_keep_their_corner_order(size, f):
    h, w = size
    x0, x1 = sorted((f[0] * w, f[1] * w))
    y0, y1 = sorted((f[2] * h, f[3] * h))
    out = T.apply_boxes(np.array([[x0, y0, x1, y1]]), size)
    assume(np.isfinite(out).all())
    assert out[0, 0] <= out[0, 2] and out[0, 1] <= out[0, 3]


@SETTINGS
@given(SIZES)
def test_postprocessed_masks_have_the_original_size(size):
    h, w = size
    assume(h * w <= 1_000_000)  # keeps the example fast; the geometry does not depend on the area
    low = np.random.default_rng(h * 4001 + w).normal(size=(1, 1, 256, 256)).astype(np.float32)
    out = T.postprocess_masks(low, T.get_preprocess_shape(h, w), size)
    assert out.shape == (1, 1, h, w) and out.dtype == np.float32 and np.isfinite(out).all()
