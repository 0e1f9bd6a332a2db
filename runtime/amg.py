"""The pieces of segment-everything, each a small numpy function equal to its segment-anything counterpart
(`segment_anything/utils/amg.py`, torchvision's `batched_nms`, OpenCV's connected components): point grids, crop
boxes, stability score, mask boxes, box NMS, run-length encodings (uncompressed and COCO's compressed string),
and the removal of small holes and islands. `MaskGenerator` (mask_generator.py) strings them together.

Frames and conventions are upstream's: masks are HxW bool in (row, column); boxes are XYXY with *inclusive* pixel
indices (x1 = the last column that holds the mask), and XYWH = (x0, y0, x1 - x0, y1 - y0); run lengths count
pixels in column-major (Fortran) order, starting with a run of zeros.
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any

import numpy as np

# --- prompts and crops ----------------------------------------------------------------------------------------


def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n^2)x2 (x, y) points evenly spaced in [0, 1]^2, cell centres, row by row (upstream's; empty for n = 0,
    where upstream divides by zero: `MaskGenerator` refuses such a layer in one line)."""
    if n_per_side == 0:
        return np.zeros((0, 2))
    offset = 1 / (2 * n_per_side)
    one_side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(one_side[None, :], (n_per_side, 1))
    ys = np.tile(one_side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def points_per_layer(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[int]:
    """Points per side in crop layer 0..n_layers: n_per_side / scale_per_layer**i, rounded down (upstream's)."""
    return [int(n_per_side / (scale_per_layer**i)) for i in range(n_layers + 1)]


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One normalized point grid per crop layer (`points_per_layer` points per side)."""
    return [build_point_grid(n) for n in points_per_layer(n_per_side, n_layers, scale_per_layer)]


def generate_crop_boxes(im_size: tuple[int, int], n_layers: int, overlap_ratio: float
                        ) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (XYXY, ints, original frame) and their layer: the whole image (layer 0), then (2^i)^2 overlapping
    crops for layer i = 1..n_layers (upstream's `generate_crop_boxes`). im_size is (h, w)."""
    crop_boxes, layer_idxs = [[0, 0, im_size[1], im_size[0]]], [0]
    im_h, im_w = im_size
    short_side = min(im_h, im_w)

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n_crops_per_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_crops_per_side))
        crop_w = crop_len(im_w, n_crops_per_side, overlap)
        crop_h = crop_len(im_h, n_crops_per_side, overlap)
        crop_box_x0 = [int((crop_w - overlap) * i) for i in range(n_crops_per_side)]
        crop_box_y0 = [int((crop_h - overlap) * i) for i in range(n_crops_per_side)]
        for x0, y0 in product(crop_box_x0, crop_box_y0):
            crop_boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layer_idxs.append(i_layer + 1)
    return crop_boxes, layer_idxs


# --- masks and boxes ------------------------------------------------------------------------------------------


def stability_score(logits: np.ndarray, mask_threshold: float, offset: float) -> np.ndarray:
    """N float32: |logits > t + offset| / |logits > t - offset| per mask of ...xHxW logits (the IoU of the two
    binarizations; one always holds the other). NaN where the lower one is empty, as upstream's 0 / 0."""
    inter = np.count_nonzero(logits > (mask_threshold + offset), axis=(-2, -1))
    union = np.count_nonzero(logits > (mask_threshold - offset), axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (inter / union).astype(np.float32)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """XYXY int64 boxes (inclusive pixel indices) around NxHxW bool masks; [0, 0, 0, 0] for an empty mask
    (upstream's `batched_mask_to_box`)."""
    n, h, w = masks.shape
    rows, cols = masks.any(axis=2), masks.any(axis=1)  # NxH, NxW
    top, left = rows.argmax(axis=1), cols.argmax(axis=1)
    bottom, right = h - 1 - rows[:, ::-1].argmax(axis=1), w - 1 - cols[:, ::-1].argmax(axis=1)
    boxes = np.stack([left, top, right, bottom], axis=1).astype(np.int64)
    boxes[~rows.any(axis=1)] = 0
    return boxes


def box_xyxy_to_xywh(box: np.ndarray) -> np.ndarray:
    """...x4 XYXY -> XYWH (w = x1 - x0, as upstream)."""
    out = np.array(box, copy=True)
    out[..., 2] = out[..., 2] - out[..., 0]
    out[..., 3] = out[..., 3] - out[..., 1]
    return out


def is_box_near_crop_edge(boxes: np.ndarray, crop_box: list[int], orig_box: list[int], atol: float = 20.0
                          ) -> np.ndarray:
    """N bool: the box (XYXY, crop frame) lies within `atol` pixels of an edge of the crop that is not an edge of
    the image (such masks are cut by the crop and come again, whole, from a larger crop)."""
    crop = np.asarray(crop_box, np.float32)
    boxes = (np.asarray(boxes) + np.asarray(crop_box[:2] * 2)).astype(np.float32)
    near_crop = np.abs(boxes - crop[None]) <= atol
    near_image = np.abs(boxes - np.asarray(orig_box, np.float32)[None]) <= atol
    return np.any(near_crop & ~near_image, axis=1)


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression, torchvision's `nms`: indices of the kept boxes, highest score first.

    boxes: Nx4 XYXY (compared in float32, areas (x1 - x0) * (y1 - y0)); scores: N. Boxes are visited in
    descending score, ties in their given order (a stable sort, as torchvision's kernel); a box is dropped when its
    IoU with a kept one is > iou_threshold (so 1.0 keeps everything, only reordered).
    """
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
    x0, y0, x1, y1 = b.T
    areas = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(len(b), bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1:]
        rest = rest[~suppressed[rest]]
        if rest.size == 0:
            continue
        w = np.maximum(np.float32(0), np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        h = np.maximum(np.float32(0), np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou > iou_threshold]] = True
    return np.asarray(keep, dtype=np.int64)


# --- run-length encodings -------------------------------------------------------------------------------------


def masks_to_rle(masks: np.ndarray, compact: bool = False) -> list[dict[str, Any]]:
    """Uncompressed RLEs {"size": [h, w], "counts": [int, ...]} of NxHxW bool masks, column-major, starting with
    a run of zeros (0 when the first pixel is set): upstream's `mask_to_rle_pytorch`, pycocotools' layout.

    `compact`: counts as an int32 array instead of a list (4 bytes a run instead of ~36: a noisy 3 MP mask has
    ~10^5 runs); every function here reads both."""
    n, h, w = masks.shape
    flat = np.ascontiguousarray(masks.transpose(0, 2, 1)).reshape(n, h * w)
    rows, cols = np.nonzero(flat[:, 1:] != flat[:, :-1])
    per_mask = np.split(cols + 1, np.cumsum(np.bincount(rows, minlength=n))[:-1])
    out = []
    for i in range(n):
        edges = np.concatenate([[0] if not flat[i, 0] else [0, 0], per_mask[i], [h * w]])
        counts = np.diff(edges).astype(np.int32)
        out.append({"size": [h, w], "counts": counts if compact else counts.tolist()})
    return out


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """HxW bool mask of an uncompressed RLE (`masks_to_rle`)."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], np.int64)
    values = np.arange(len(counts)) % 2 == 1  # runs alternate 0, 1, 0, ...
    return np.repeat(values, counts).reshape(w, h).T


def area_from_rle(rle: dict[str, Any]) -> int:
    """Pixels set in an uncompressed RLE."""
    return int(np.sum(np.asarray(rle["counts"][1::2], np.int64)))


def coco_rle_string(counts: list[int] | np.ndarray) -> str:
    """COCO's compressed RLE string of uncompressed counts (pycocotools' `rleToString`: each count, from the fourth
    on as the difference to the count two before, in 5-bit groups, low first, with a continuation bit, as chars
    48..111). Vectorized over the counts: one pass per 5-bit group."""
    c = np.asarray(counts, np.int64)
    x = c.copy()
    x[3:] -= c[1:-2]
    chars, active = [], np.ones(len(x), bool)
    while active.any():
        group = x & 0x1F
        x = x >> 5  # arithmetic shift: negative differences end at -1
        more = np.where(group & 0x10, x != -1, x != 0) & active
        chars.append(np.where(more, group | 0x20, group) + 48)
        chars[-1][~active] = 0  # no char for values already written out
        active = more
    table = np.stack(chars, axis=1).ravel()  # value by value, its groups in order
    return table[table > 0].astype(np.uint8).tobytes().decode("ascii")


def coco_rle_counts(text: str, compact: bool = False) -> list[int] | np.ndarray:
    """The uncompressed counts of a COCO RLE string (pycocotools' `rleFrString`), vectorized. `compact`: an int64
    array instead of a list (as `masks_to_rle`)."""
    c = np.frombuffer(text.encode("ascii"), np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64) if compact else []
    last = (c & 0x20) == 0  # a value's final char has no continuation bit
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    k = np.arange(len(c)) - np.repeat(starts, ends - starts + 1)
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    length = ends - starts + 1
    x = np.where(c[ends] & 0x10, x - (np.int64(1) << (5 * length)), x)  # sign-extend negative differences
    out = x.copy()
    if len(x) > 3:  # counts[m] = x[m] + counts[m - 2] from m = 3 on
        out[3::2] = np.cumsum(x[3::2]) + x[1]
    if len(x) > 4:
        out[4::2] = np.cumsum(x[4::2]) + x[2]
    return out if compact else out.tolist()


def coco_encode_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """An uncompressed RLE as COCO's compressed one, {"size": [h, w], "counts": str} (what upstream's
    `coco_encode_rle` returns through pycocotools; pycocotools' `mask.decode` reads it)."""
    return {"size": list(rle["size"]), "counts": coco_rle_string(rle["counts"])}


# --- small regions (OpenCV-free) ------------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True in an HxW bool mask: (row, start, end) int64 arrays, end exclusive, row-major."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past where it ends
    r_start, c_start = np.nonzero(d == 1)
    _, c_end = np.nonzero(d == -1)
    return r_start, c_start, c_end


def label_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of an HxW bool mask, by runs: (row, start, end, label) per horizontal run of True,
    labels 0..K-1 in order of each component's first pixel in row-major order (OpenCV's order, less its background
    label 0). Two runs on neighbouring rows touch when their columns overlap or meet diagonally."""
    row, start, end = _runs(mask)
    n = len(row)
    if n == 0:
        return row, start, end, np.zeros(0, np.int64)
    # For each run b, the runs a on the row above that touch it form a contiguous range (runs on a row are
    # disjoint and sorted): a.end >= b.start and a.start <= b.end (end exclusive, so diagonal contact counts).
    w1 = mask.shape[1] + 2
    key_end, key_start = row * w1 + end, row * w1 + start
    lo = np.searchsorted(key_end, (row - 1) * w1 + start, side="left")
    hi = np.searchsorted(key_start, (row - 1) * w1 + end, side="right")
    row_first = np.searchsorted(row, row - 1, side="left")  # runs of the row above start here
    row_last = np.searchsorted(row, row - 1, side="right")
    lo, hi = np.maximum(lo, row_first), np.minimum(hi, row_last)
    counts = np.maximum(hi - lo, 0)
    b = np.repeat(np.arange(n), counts)
    a = np.repeat(lo, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    parent = np.arange(n)
    while a.size:  # hook every edge's larger root onto its smaller one, then compress paths, until all agree
        pa, pb = parent[a], parent[b]
        np.minimum.at(parent, np.maximum(pa, pb), np.minimum(pa, pb))
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        if np.array_equal(parent[a], parent[b]):
            break
    _, labels = np.unique(parent, return_inverse=True)  # roots are each component's first run: row-major order
    return row, start, end, labels.astype(np.int64)


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes ("holes") or drop islands ("islands") of fewer than `area_thresh` pixels in an HxW bool mask,
    8-connected (upstream's `remove_small_regions` without OpenCV). Islands: if every island is small, the largest
    (the first of equal ones) stays. Returns (mask, whether it changed)."""
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    working = ~mask if holes else mask
    row, start, end, labels = label_components(working)
    sizes = np.bincount(labels, weights=end - start, minlength=labels.max() + 1 if len(labels) else 0)
    small = sizes < area_thresh
    if not small.any():
        return mask, False
    if holes:
        flip = small  # small background regions become foreground
    else:
        flip = small if not small.all() else np.arange(len(sizes)) != int(np.argmax(sizes))
    out = mask.copy()
    for r, s, e in zip(row[flip[labels]], start[flip[labels]], end[flip[labels]]):
        out[r, s:e] = holes
    return out, True
