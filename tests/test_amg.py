"""The numpy pieces of segment-everything (runtime/amg.py), each alone: against pycocotools (RLE), a plain
flood fill (connected components), a plain loop (box NMS) and upstream's definitions (grids, crops, boxes)."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from pocketsam.runtime import amg

RNG = np.random.default_rng(2024)


def random_masks(n: int, h: int, w: int, density: float = 0.5, blobs: bool = False) -> np.ndarray:
    m = RNG.random((n, h, w)) < density
    if blobs:  # smoother shapes: OR of a few rectangles
        m[:] = False
        for i in range(n):
            for _ in range(RNG.integers(1, 5)):
                y0, x0 = RNG.integers(0, h), RNG.integers(0, w)
                m[i, y0:y0 + RNG.integers(1, h), x0:x0 + RNG.integers(1, w)] = True
    return m


# --- grids and crops --------------------------------------------------------------------------------------------


def test_point_grid_is_cell_centres_row_by_row() -> None:
    g = amg.build_point_grid(4)
    assert g.shape == (16, 2)
    np.testing.assert_allclose(g[:4], [[0.125, 0.125], [0.375, 0.125], [0.625, 0.125], [0.875, 0.125]])
    assert [len(x) for x in amg.build_all_layer_point_grids(32, 2, 2)] == [1024, 256, 64]
    assert amg.points_per_layer(5, 2, 3) == [5, 1, 0]


def test_crop_boxes_of_two_layers() -> None:
    boxes, layers = amg.generate_crop_boxes((300, 451), 1, 512 / 1500)
    assert layers == [0, 1, 1, 1, 1]
    # short side 300: overlap int(512/1500 * 300 * 1) = 102; crop w ceil((102 + 451) / 2) = 277, h 201
    assert boxes == [[0, 0, 451, 300], [0, 0, 277, 201], [0, 99, 277, 300], [175, 0, 451, 201],
                     [175, 99, 451, 300]]


# --- masks and boxes ------------------------------------------------------------------------------------------


def test_masks_to_boxes_inclusive_and_empty() -> None:
    m = np.zeros((3, 10, 12), bool)
    m[0, 2:5, 3:9] = True
    m[1, 9, 11] = True
    np.testing.assert_array_equal(amg.masks_to_boxes(m), [[3, 2, 8, 4], [11, 9, 11, 9], [0, 0, 0, 0]])
    for mask in random_masks(20, 17, 23, 0.05):
        ys, xs = np.nonzero(mask)
        want = [xs.min(), ys.min(), xs.max(), ys.max()] if len(xs) else [0, 0, 0, 0]
        np.testing.assert_array_equal(amg.masks_to_boxes(mask[None])[0], want)
    np.testing.assert_array_equal(amg.box_xyxy_to_xywh(np.array([3, 2, 8, 4])), [3, 2, 5, 2])


def test_stability_score() -> None:
    logits = np.array([[[-2.0, -0.5], [0.5, 2.0]], [[3.0, 3.0], [3.0, 3.0]]], np.float32)
    np.testing.assert_allclose(amg.stability_score(logits, 0.0, 1.0), [1 / 3, 1.0])
    assert np.isnan(amg.stability_score(np.full((1, 2, 2), -5.0, np.float32), 0.0, 1.0)[0])  # 0 / 0, as upstream


def test_near_crop_edge() -> None:
    crop, image = [100, 50, 300, 250], [0, 0, 300, 400]
    boxes = np.array([[30, 30, 150, 150],  # inside the crop, > 20 px from its edges: kept
                      [0, 10, 50, 50],  # on the crop's left edge (x0 100 + 0), not the image's: dropped
                      [50, 50, 200, 120]])  # x1 = 300: the crop's right edge is the image's: kept
    np.testing.assert_array_equal(amg.is_box_near_crop_edge(boxes, crop, image), [False, True, False])


def _nms_reference(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> list[int]:
    """torchvision.ops.nms's CPU kernel, literally (stable descending sort, float32)."""
    b, s = boxes.astype(np.float32), scores.astype(np.float32)
    order = sorted(range(len(s)), key=lambda i: -s[i])  # Python's sort is stable
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    suppressed, keep = set(), []
    for pos, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        for j in order[pos + 1:]:
            if j in suppressed:
                continue
            w = max(np.float32(0), min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
            h = max(np.float32(0), min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
            inter = w * h
            with np.errstate(invalid="ignore"):  # 0 / 0 for two empty boxes: NaN, never > thresh
                iou = inter / (area[i] + area[j] - inter)
            if iou > thresh:
                suppressed.add(j)
    return keep


@pytest.mark.parametrize("thresh", [0.0, 0.3, 0.7, 1.0])
def test_box_nms_equals_the_reference_loop_with_ties(thresh: float) -> None:
    xy = RNG.integers(0, 50, (60, 2))
    boxes = np.concatenate([xy, xy + RNG.integers(0, 30, (60, 2))], axis=1)
    boxes[10:15] = boxes[9]  # identical boxes
    scores = RNG.integers(0, 5, 60).astype(np.float32)  # many ties
    assert amg.box_nms(boxes, scores, thresh).tolist() == _nms_reference(boxes, scores, thresh)
    if thresh == 1.0:
        assert sorted(amg.box_nms(boxes, scores, thresh).tolist()) == list(range(60))  # only reordered
    assert amg.box_nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


# --- run-length encodings -------------------------------------------------------------------------------------


def test_rle_roundtrip_and_layout() -> None:
    m = np.array([[[0, 1], [1, 1], [0, 0]]], bool)  # 3x2, column-major: 0 1 0 | 1 1 0
    (rle,) = amg.masks_to_rle(m)
    assert rle == {"size": [3, 2], "counts": [1, 1, 1, 2, 1]}
    assert amg.masks_to_rle(np.ones((1, 2, 2), bool))[0]["counts"] == [0, 4]  # starts with an empty run of zeros
    assert amg.masks_to_rle(np.zeros((1, 2, 2), bool))[0]["counts"] == [4]
    masks = np.concatenate([random_masks(5, 31, 17, 0.5), random_masks(5, 31, 17, blobs=True)])
    for mask, r in zip(masks, amg.masks_to_rle(masks)):
        np.testing.assert_array_equal(amg.rle_to_mask(r), mask)
        assert amg.area_from_rle(r) == mask.sum()


def test_coco_rle_strings_match_pycocotools() -> None:
    mask_utils = pytest.importorskip("pycocotools.mask", reason="pycocotools (the dev extra) checks COCO RLE")
    masks = np.concatenate([random_masks(6, 40, 57, 0.5), random_masks(6, 40, 57, blobs=True),
                            np.zeros((1, 40, 57), bool), np.ones((1, 40, 57), bool)])
    for mask, r in zip(masks, amg.masks_to_rle(masks)):
        ours = amg.coco_encode_rle(r)
        theirs = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert ours["counts"] == theirs["counts"].decode() and ours["size"] == list(theirs["size"])
        np.testing.assert_array_equal(mask_utils.decode({"size": ours["size"], "counts": ours["counts"]}), mask)
        assert amg.coco_rle_counts(ours["counts"]) == r["counts"]
        # upstream's path: pycocotools' frPyObjects of the uncompressed RLE
        assert mask_utils.frPyObjects(r, *r["size"])["counts"].decode() == ours["counts"]


# --- connected components and small regions -------------------------------------------------------------------


def _flood_labels(mask: np.ndarray) -> np.ndarray:
    """8-connected labels 1..K by BFS in row-major order of first pixels (0 = background)."""
    h, w = mask.shape
    labels = np.zeros((h, w), np.int64)
    k = 0
    for y, x in zip(*np.nonzero(mask)):
        if labels[y, x]:
            continue
        k += 1
        labels[y, x] = k
        queue = deque([(y, x)])
        while queue:
            cy, cx = queue.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = k
                        queue.append((ny, nx))
    return labels


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6, 0.9])
def test_components_equal_a_flood_fill(density: float) -> None:
    for mask in random_masks(4, 37, 53, density):
        row, start, end, labels = amg.label_components(mask)
        got = np.zeros(mask.shape, np.int64)
        for r, s, e, lab in zip(row, start, end, labels):
            got[r, s:e] = lab + 1
        np.testing.assert_array_equal(got, _flood_labels(mask))
    diagonal = np.eye(5, dtype=bool)  # 8-connected: one component
    assert amg.label_components(diagonal)[3].tolist() == [0] * 5
    assert amg.label_components(np.zeros((3, 3), bool))[3].size == 0


def _remove_reference(mask: np.ndarray, area: float, mode: str) -> tuple[np.ndarray, bool]:
    """Upstream's remove_small_regions with the flood fill standing in for cv2.connectedComponentsWithStats."""
    holes = mode == "holes"
    regions = _flood_labels(holes ^ mask)
    n = regions.max() + 1
    sizes = np.bincount(regions.ravel(), minlength=n)[1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < area]
    if not small:
        return mask, False
    fill = [0] + small
    if not holes:
        fill = [i for i in range(n) if i not in fill] or [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True


@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("area", [1, 3, 20, 10_000])
def test_remove_small_regions_equals_upstreams_definition(mode: str, area: int) -> None:
    for mask in np.concatenate([random_masks(3, 29, 41, 0.3), random_masks(3, 29, 41, 0.7),
                                random_masks(2, 29, 41, blobs=True), np.zeros((1, 29, 41), bool)]):
        got, changed = amg.remove_small_regions(mask, area, mode)
        want, want_changed = _remove_reference(mask, area, mode)
        np.testing.assert_array_equal(got, want)
        assert changed == want_changed
    with pytest.raises(ValueError, match="mode"):
        amg.remove_small_regions(np.zeros((2, 2), bool), 1, "both")
