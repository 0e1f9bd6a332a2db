"""Predictor with fake numpy Sessions: what the decoder is fed (SamPredictor's prompt semantics), how its outputs
are selected and post-processed, batching, fixed-point decoders, image state, and that the runtime never imports
torch."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from pocketsam.runtime import spec
from pocketsam.runtime import transforms as T
from pocketsam.runtime.errors import InvalidImageError, InvalidPromptError, PocketSamError
from pocketsam.runtime.predictor import ImageNotSetError, Predictor

H, W = 300, 451  # an odd size: input_size (681, 1024), so the crop matters
S = spec.LOW_RES_MASK_SIZE
X_RAMP = np.arange(S, dtype=np.float32) - S / 2  # a logit ramp along x, so thresholded masks are non-trivial


class FakeEncoder:
    """Records its feeds; the embedding is a deterministic function of the image."""

    input_names = spec.ENCODER.input_names
    output_names = spec.ENCODER.output_names

    def __init__(self) -> None:
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.feeds.append({k: v.copy() for k, v in feeds.items()})
        (x,) = feeds.values()
        emb = np.full(spec.ENCODER.output("image_embeddings").concrete_shape(), x.mean() / 255, np.float32)
        return {"image_embeddings": emb}


class FakeDecoder:
    """Records its feeds; output k of prompt b is a ramp shifted by k and by a digest of that prompt's feeds, so
    every prompt, mask index and mask input gives different logits."""

    input_names = spec.DECODER.input_names
    output_names = spec.DECODER.output_names

    def __init__(self) -> None:
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.feeds.append({k: v.copy() for k, v in feeds.items()})
        coords, labels = feeds["point_coords"], feeds["point_labels"]
        batch = coords.shape[0]
        digest = (coords.sum(axis=(1, 2)) * 0.01 + labels.sum(axis=1) + 3 * feeds["has_mask_input"]
                  + feeds["mask_input"].mean(axis=(1, 2, 3)) + feeds["image_embeddings"].mean())
        k = np.arange(spec.NUM_MASK_OUTPUTS, dtype=np.float32)
        low = (X_RAMP[None, None, None, :] + 20 * k[None, :, None, None] + digest[:, None, None, None]
               + np.zeros((batch, 4, S, 1), np.float32))
        iou = k[None, :] / 10 + digest[:, None]
        return {"low_res_masks": low.astype(np.float32), "iou_predictions": iou.astype(np.float32)}


class FakeCachingDecoder(FakeDecoder):
    """A decoder with the image cache (spec.DECODER_CACHED): use_image_cache 0 returns a cache derived from the
    embedding and the dense input (one row per prompt); 1 checks the fed cache is the one it returned."""

    input_names = spec.DECODER_CACHED.input_names
    output_names = spec.DECODER_CACHED.output_names

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super().run(feeds)
        batch = feeds["point_coords"].shape[0]
        use = float(feeds[spec.USE_IMAGE_CACHE.name][0])
        for t in spec.IMAGE_CACHE:
            cached = feeds[spec.CACHED_INPUT_PREFIX + t.name]
            if use:
                assert cached.shape == (1, *t.shape[1:]) and cached.flat[0] == feeds["image_embeddings"].mean()
                out[t.name] = np.zeros((0, *t.shape[1:]), np.float32)
            else:
                assert cached.shape == (0, *t.shape[1:])
                value = feeds["image_embeddings"].mean() + feeds["has_mask_input"].reshape(-1, *[1] * (len(t.shape) - 1))
                out[t.name] = np.broadcast_to(value, (batch, *t.shape[1:])).astype(np.float32)
        return out


def image(seed: int = 0, size: tuple[int, int] = (H, W)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


@pytest.fixture
def predictor() -> Predictor:
    p = Predictor(FakeEncoder(), FakeDecoder())
    p.set_image(image())
    return p


def last_feeds(p: Predictor) -> dict[str, np.ndarray]:
    return p.decoder.feeds[-1]  # type: ignore[attr-defined]


def check_feed_spec(feeds: dict[str, np.ndarray], batch: int, num_points: int) -> None:
    assert list(feeds) == spec.DECODER.input_names
    for t in spec.DECODER.inputs:
        assert feeds[t.name].dtype == np.float32, t.name
        assert feeds[t.name].shape == t.concrete_shape(batch=batch, num_points=num_points), t.name


# --- what the decoder is fed --------------------------------------------------------------------------------


def _use(p: Predictor) -> float:
    return float(last_feeds(p)[spec.USE_IMAGE_CACHE.name][0])


def test_image_cache_is_computed_once_per_image_and_fed_back() -> None:
    """The first click of an image computes the cache (use 0, empty inputs), later ones read it (use 1); a mask
    input computes it again without keeping that one; a batched first call computes it from its first prompt
    alone; a new image starts over."""
    p = Predictor(FakeEncoder(), FakeCachingDecoder())
    p.set_image(image())
    click = (np.array([[10.0, 20.0]]), np.array([1]))
    p.predict(*click)
    assert _use(p) == 0.0 and list(last_feeds(p)) == spec.DECODER_CACHED.input_names
    first = p.predict(*click)
    assert _use(p) == 1.0
    _, _, low_res = p.predict(*click, mask_input=first[2][:1])
    assert _use(p) == 0.0
    p.predict(*click)
    assert _use(p) == 1.0  # the masked call's cache (dense embedding of the mask) was not kept
    p.predict_batch(np.array([[[1.0, 2.0]], [[3.0, 4.0]]]), np.ones((2, 1)))
    assert _use(p) == 1.0 and last_feeds(p)["cached_image_tokens"].shape[0] == 1
    p.set_image(image(seed=1))
    n = len(p.decoder.feeds)  # type: ignore[attr-defined]
    p.predict_batch(np.array([[[1.0, 2.0]], [[3.0, 4.0]], [[5.0, 6.0]]]), np.ones((3, 1)))
    # a batched first call computes the cache once (its first prompt alone), not once per prompt
    runs = p.decoder.feeds[n:]  # type: ignore[attr-defined]
    assert [(float(f[spec.USE_IMAGE_CACHE.name][0]), len(f["point_coords"])) for f in runs] == [(0.0, 1), (1.0, 2)]
    p.predict(*click)
    assert _use(p) == 1.0  # the first prompt's cache was kept
    p.reset_image()
    assert p._image_cache is None



def test_click_without_box_appends_one_pad_point(predictor: Predictor) -> None:
    pts, labels = np.array([[100.0, 50.0], [10, 290]]), np.array([1, 0])
    predictor.predict(pts, labels)
    f = last_feeds(predictor)
    check_feed_spec(f, batch=1, num_points=3)
    np.testing.assert_array_equal(f["point_coords"][0, :2], T.apply_coords(pts, (H, W)))
    np.testing.assert_array_equal(f["point_coords"][0, 2], [0, 0])
    np.testing.assert_array_equal(f["point_labels"][0], [1, 0, spec.LABEL_PAD])
    np.testing.assert_array_equal(f["has_mask_input"], [0])
    assert not f["mask_input"].any()
    np.testing.assert_array_equal(f["image_embeddings"], predictor.features)


def test_box_only_feeds_two_corners_and_no_pad(predictor: Predictor) -> None:
    box = np.array([10, 20, 300, 250])
    predictor.predict(box=box)
    f = last_feeds(predictor)
    check_feed_spec(f, batch=1, num_points=2)
    np.testing.assert_array_equal(f["point_coords"][0], T.apply_boxes(box, (H, W)).reshape(2, 2))
    np.testing.assert_array_equal(f["point_labels"][0], [spec.LABEL_BOX_TOP_LEFT, spec.LABEL_BOX_BOTTOM_RIGHT])


def test_points_then_box_corners(predictor: Predictor) -> None:
    pts, labels, box = np.array([[100.0, 50.0]]), np.array([0]), np.array([0, 0, W, H])
    predictor.predict(pts, labels, box=box)
    f = last_feeds(predictor)
    check_feed_spec(f, batch=1, num_points=3)
    np.testing.assert_array_equal(f["point_coords"][0, 0], T.apply_coords(pts, (H, W))[0])
    np.testing.assert_array_equal(f["point_coords"][0, 1:], [[0, 0], list(predictor.input_size[::-1])])
    np.testing.assert_array_equal(f["point_labels"][0], [0, 2, 3])


@pytest.mark.parametrize("shape", [(1, S, S), (S, S)])
def test_mask_input_sets_has_mask_input(predictor: Predictor, shape: tuple[int, ...]) -> None:
    mask = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    predictor.predict(np.array([[5, 5]]), np.array([1]), mask_input=mask)
    f = last_feeds(predictor)
    np.testing.assert_array_equal(f["has_mask_input"], [1])
    np.testing.assert_array_equal(f["mask_input"], mask.reshape(1, 1, S, S))


def test_refining_with_the_previous_low_res_logits(predictor: Predictor) -> None:
    _, scores, low_res = predictor.predict(np.array([[5, 5]]), np.array([1]))
    best = low_res[np.argmax(scores)][None]  # SamPredictor's documented refinement loop
    predictor.predict(np.array([[5, 5], [50, 50]]), np.array([1, 0]), mask_input=best, multimask_output=False)
    np.testing.assert_array_equal(last_feeds(predictor)["mask_input"][0], best)


def test_mask_only_prompt_has_no_point_tokens_as_upstream(predictor: Predictor) -> None:
    predictor.predict(mask_input=np.ones((1, S, S), np.float32))
    f = last_feeds(predictor)
    assert f["point_coords"].shape == (1, 0, 2) and f["point_labels"].shape == (1, 0)


def test_an_empty_prompt_is_an_error(predictor: Predictor) -> None:
    with pytest.raises(InvalidPromptError, match="give a prompt"):
        predictor.predict()


def test_bad_prompts_are_rejected_before_the_decoder_runs(predictor: Predictor) -> None:
    n = len(predictor.decoder.feeds)  # type: ignore[attr-defined]
    with pytest.raises(InvalidPromptError, match="inside the 300x451 image"):
        predictor.predict(np.array([[452, 0]]), np.array([1]))
    with pytest.raises(InvalidPromptError, match="point_labels must be 0 or 1"):
        predictor.predict(np.array([[1, 1]]), np.array([3]))
    with pytest.raises(InvalidPromptError, match="x0 <= x1"):
        predictor.predict(box=np.array([50, 0, 10, 10]))
    with pytest.raises(InvalidPromptError, match="mask_input must be"):
        predictor.predict(np.array([[1, 1]]), np.array([1]), mask_input=np.zeros((64, 64)))
    assert len(predictor.decoder.feeds) == n  # type: ignore[attr-defined]


# --- outputs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("multimask", [True, False])
def test_mask_selection_and_postprocessing(predictor: Predictor, multimask: bool) -> None:
    masks, scores, low_res = predictor.predict(np.array([[100, 50]]), np.array([1]), multimask_output=multimask)
    out = predictor.decoder.run(last_feeds(predictor))  # type: ignore[attr-defined]
    lo, hi = spec.MULTIMASK_SLICE if multimask else spec.SINGLE_MASK_SLICE
    c = hi - lo
    assert masks.shape == (c, H, W) and masks.dtype == bool
    assert scores.shape == (c,) and scores.dtype == np.float32
    assert low_res.shape == (c, S, S) and low_res.dtype == np.float32
    np.testing.assert_array_equal(low_res, out["low_res_masks"][0, lo:hi])
    np.testing.assert_array_equal(scores, out["iou_predictions"][0, lo:hi])
    np.testing.assert_array_equal(masks, T.threshold(T.postprocess_masks(low_res, predictor.input_size, (H, W))))
    assert masks.any() and not masks.all()


def test_return_logits(predictor: Predictor) -> None:
    pts, labels = np.array([[100, 50]]), np.array([1])
    logits, _, low_res = predictor.predict(pts, labels, return_logits=True)
    masks, _, _ = predictor.predict(pts, labels)
    assert logits.dtype == np.float32 and logits.shape == (3, H, W)
    np.testing.assert_array_equal(logits, T.postprocess_masks(low_res, predictor.input_size, (H, W)))
    np.testing.assert_array_equal(masks, logits > spec.MASK_THRESHOLD)


# --- batches ------------------------------------------------------------------------------------------------


def batch_prompts(b: int = 4, n: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    coords = rng.uniform(0, [W, H], (b, n, 2))
    labels = rng.integers(0, 2, (b, n))
    corners = np.sort(rng.uniform(0, [W, H], (b, 2, 2)), axis=1)
    masks = rng.standard_normal((b, 1, S, S)).astype(np.float32)
    return coords, labels, corners.reshape(b, 4), masks


@pytest.mark.parametrize("kinds", ["points", "boxes", "points+boxes", "points+masks", "masks"])
@pytest.mark.parametrize("multimask", [True, False])
def test_predict_batch_equals_looping_predict(predictor: Predictor, kinds: str, multimask: bool) -> None:
    coords, labels, boxes, masks = batch_prompts()
    use = {kind: kind in kinds for kind in ("points", "boxes", "masks")}
    n_runs = len(predictor.decoder.feeds)  # type: ignore[attr-defined]
    got = predictor.predict_batch(
        coords if use["points"] else None, labels if use["points"] else None,
        boxes if use["boxes"] else None, masks if use["masks"] else None, multimask_output=multimask,
        return_logits=True,
    )
    assert len(predictor.decoder.feeds) == n_runs + 1  # type: ignore[attr-defined]  # one decoder run
    c = 3 if multimask else 1
    assert got[0].shape == (4, c, H, W) and got[1].shape == (4, c) and got[2].shape == (4, c, S, S)
    for b in range(4):
        want = predictor.predict(
            coords[b] if use["points"] else None, labels[b] if use["points"] else None,
            boxes[b] if use["boxes"] else None, masks[b] if use["masks"] else None, multimask_output=multimask,
            return_logits=True,
        )
        for g, w in zip(got, want):
            np.testing.assert_allclose(g[b], w, rtol=0, atol=1e-5)


def test_predict_batch_rejects_mismatched_batches(predictor: Predictor) -> None:
    coords, labels, boxes, _ = batch_prompts()
    with pytest.raises(InvalidPromptError, match="boxes must be 4x4"):
        predictor.predict_batch(coords, labels, boxes[:3])
    with pytest.raises(InvalidPromptError, match="point_labels must have shape"):
        predictor.predict_batch(coords, labels[:3])
    with pytest.raises(InvalidPromptError, match="mask_inputs must be 4x1x256x256"):
        predictor.predict_batch(coords, labels, mask_input=np.zeros((3, 1, S, S)))


# --- fixed-shape decoders -----------------------------------------------------------------------------------


def test_decoder_points_pads_every_prompt() -> None:
    p = Predictor(FakeEncoder(), FakeDecoder(), decoder_points=5)
    p.set_image(image())
    p.predict(np.array([[100, 50]]), np.array([1]))
    f = last_feeds(p)
    check_feed_spec(f, batch=1, num_points=5)
    np.testing.assert_array_equal(f["point_labels"][0], [1, -1, -1, -1, -1])
    assert not f["point_coords"][0, 1:].any()
    p.predict(np.array([[100, 50]]), np.array([0]), box=np.array([0, 0, 10, 10]))
    np.testing.assert_array_equal(last_feeds(p)["point_labels"][0], [0, 2, 3, -1, -1])
    coords, labels, boxes, _ = batch_prompts(b=3, n=2)
    p.predict_batch(coords, labels, boxes)
    check_feed_spec(last_feeds(p), batch=3, num_points=5)
    np.testing.assert_array_equal(last_feeds(p)["point_labels"][:, 2:], np.tile([2, 3, -1], (3, 1)))


def test_decoder_points_exact_fit_equals_the_unpadded_prompt() -> None:
    fixed, free = Predictor(FakeEncoder(), FakeDecoder(), decoder_points=2), Predictor(FakeEncoder(), FakeDecoder())
    for p in (fixed, free):
        p.set_image(image())
    click = dict(point_coords=np.array([[3, 4]]), point_labels=np.array([1]))
    for prompt in (click, dict(box=np.array([1, 2, 30, 40]))):
        for g, w in zip(fixed.predict(**prompt), free.predict(**prompt)):
            np.testing.assert_array_equal(g, w)


def test_decoder_points_too_small_names_the_export_option() -> None:
    p = Predictor(FakeEncoder(), FakeDecoder(), decoder_points=2)
    p.set_image(image())
    with pytest.raises(InvalidPromptError, match="--decoder-points 3") as info:
        p.predict(np.array([[1, 1]]), np.array([1]), box=np.array([0, 0, 5, 5]))
    assert "1 point(s) + 2 box corners" in str(info.value)
    with pytest.raises(InvalidPromptError, match=r"needs 3 decoder points \(2 point\(s\) \+ 1 pad point\)"):
        p.predict(np.array([[1, 1], [2, 2]]), np.array([1, 0]))


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_decoder_points_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="decoder_points"):
        Predictor(FakeEncoder(), FakeDecoder(), decoder_points=bad)  # type: ignore[arg-type]


# --- image state --------------------------------------------------------------------------------------------


def test_set_image_feeds_the_encoder_and_sets_attributes() -> None:
    enc = FakeEncoder()
    p = Predictor(enc, FakeDecoder())
    img = image()
    p.set_image(img)
    want, input_size = T.preprocess(img)
    np.testing.assert_array_equal(enc.feeds[-1]["image"], want)
    assert p.original_size == (H, W) and p.input_size == input_size == (681, 1024)
    assert p.is_image_set
    assert p.get_image_embedding() is p.features
    assert p.features.shape == (1, spec.EMBED_DIM, spec.EMBED_SIZE, spec.EMBED_SIZE)


def test_bgr_images_are_flipped_to_rgb() -> None:
    enc = FakeEncoder()
    p = Predictor(enc, FakeDecoder())
    img = image()
    p.set_image(img)
    p.set_image(np.ascontiguousarray(img[..., ::-1]), image_format="BGR")
    np.testing.assert_array_equal(enc.feeds[0]["image"], enc.feeds[1]["image"])
    with pytest.raises(InvalidImageError, match="image_format must be 'RGB' or 'BGR', got 'rgb'"):
        p.set_image(img, image_format="rgb")


def test_set_image_rejects_bad_images_and_keeps_nothing_stale() -> None:
    p = Predictor(FakeEncoder(), FakeDecoder())
    p.set_image(image())
    with pytest.raises(InvalidImageError, match="2-D \\(grayscale\\)"):
        p.set_image(np.zeros((64, 64), np.uint8))

    class Failing(FakeEncoder):
        def run(self, feeds):  # type: ignore[override]
            raise RuntimeError("engine failed")

    p.encoder = Failing()
    with pytest.raises(RuntimeError, match="engine failed"):
        p.set_image(image(1))
    assert not p.is_image_set and p.features is None  # no embedding of the previous image survives


def test_reset_image_and_predict_before_set_image() -> None:
    p = Predictor(FakeEncoder(), FakeDecoder())
    for call in (lambda: p.predict(np.array([[1, 1]]), np.array([1])), p.get_image_embedding,
                 lambda: p.predict_batch(boxes=np.array([[0, 0, 1, 1]]))):
        with pytest.raises(ImageNotSetError, match=r"An image must be set with \.set_image\(\.\.\.\)") as info:
            call()
        assert isinstance(info.value, RuntimeError) and isinstance(info.value, PocketSamError)
    p.set_image(image())
    p.reset_image()
    assert not p.is_image_set and p.features is None and p.original_size is None and p.input_size is None
    with pytest.raises(ImageNotSetError):
        p.predict(np.array([[1, 1]]), np.array([1]))


def test_a_new_image_changes_sizes_and_postprocessing() -> None:
    p = Predictor(FakeEncoder(), FakeDecoder())
    for size in [(H, W), (1500, 17), (64, 64)]:
        p.set_image(image(size=size))
        masks, _, _ = p.predict(np.array([[1, 1]]), np.array([1]))
        assert masks.shape == (3, *size) and p.original_size == size


# --- threads ------------------------------------------------------------------------------------------------


class GatedCachingDecoder(FakeCachingDecoder):
    """A caching decoder whose runs wait at a gate: `entered` is set once `waiting` runs are inside `run` at the
    same time, and they all leave when `release` is set (so a test can act while a click is in flight)."""

    def __init__(self, waiting: int = 1) -> None:
        super().__init__()
        self.waiting, self.inside = waiting, 0
        self.lock = threading.Lock()
        self.entered, self.release = threading.Event(), threading.Event()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock:
            self.inside += 1
            if self.inside >= self.waiting:
                self.entered.set()
        assert self.release.wait(timeout=10), "the test never opened the gate"
        return super().run(feeds)


def _in_thread(fn) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            box["error"] = e

    t = threading.Thread(target=target)
    t.start()
    return t, box


def _reference_click(img: np.ndarray, click) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = Predictor(FakeEncoder(), FakeCachingDecoder())
    p.set_image(img)
    return p.predict(*click)


def test_set_image_during_a_first_click_keeps_images_apart() -> None:
    """Issue #11.4: a first click in flight while another thread sets a new image returns the masks of the image
    it started on, and its image cache never reaches the new image (the decoder checks every cache it is fed)."""
    old, new = image(0), image(1, size=(200, 333))
    click = (np.array([[10.0, 20.0]]), np.array([1]))
    decoder = GatedCachingDecoder()
    p = Predictor(FakeEncoder(), decoder)
    p.set_image(old)
    t, box = _in_thread(lambda: p.predict(*click))
    assert decoder.entered.wait(timeout=10)
    p.set_image(new)  # while the click on `old` is inside the decoder
    decoder.release.set()
    t.join(timeout=10)
    assert "error" not in box, box.get("error")
    for got, want in zip(box["result"], _reference_click(old, click)):
        np.testing.assert_array_equal(got, want)
    assert p.original_size == (200, 333)
    for _ in range(2):  # the new image's first click computes its own cache, the second reads it
        for got, want in zip(p.predict(*click), _reference_click(new, click)):
            np.testing.assert_array_equal(got, want)


def test_a_click_during_set_image_is_a_clear_error_or_the_old_image() -> None:
    """A click that starts while set_image's encoder runs has no image: ImageNotSetError, not a TypeError."""

    class GatedEncoder(FakeEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.entered, self.release = threading.Event(), threading.Event()

        def run(self, feeds):  # type: ignore[override]
            if len(self.feeds) >= 1:  # the second image's encoder run waits at the gate
                self.entered.set()
                assert self.release.wait(timeout=10)
            return super().run(feeds)

    encoder = GatedEncoder()
    p = Predictor(encoder, FakeCachingDecoder())
    p.set_image(image(0))
    t, box = _in_thread(lambda: p.set_image(image(1, size=(64, 64))))
    assert encoder.entered.wait(timeout=10)
    with pytest.raises(ImageNotSetError):
        p.predict(np.array([[1.0, 1.0]]), np.array([1]))
    encoder.release.set()
    t.join(timeout=10)
    assert "error" not in box and p.predict(np.array([[1.0, 1.0]]), np.array([1]))[0].shape == (3, 64, 64)


def test_clicks_on_one_image_run_in_parallel() -> None:
    """Two clicks on one image are inside the decoder at the same time (no lock around decoder runs)."""
    decoder = GatedCachingDecoder(waiting=2)
    p = Predictor(FakeEncoder(), decoder)
    p.set_image(image())
    clicks = [(np.array([[10.0 * k, 20.0]]), np.array([1])) for k in (1, 2)]
    threads = [_in_thread(lambda c=c: p.predict(*c)) for c in clicks]
    assert decoder.entered.wait(timeout=10), "the second click waited for the first: decoder runs are serialized"
    decoder.release.set()
    for (t, box), c in zip(threads, clicks):
        t.join(timeout=10)
        for got, want in zip(box["result"], _reference_click(image(), c)):
            np.testing.assert_array_equal(got, want)


# --- the runtime stays torch-free ---------------------------------------------------------------------------


def test_runtime_never_imports_torch() -> None:
    code = (
        "import sys; import pocketsam.runtime, pocketsam.runtime.predictor, pocketsam.runtime.transforms; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
