"""`MaskGenerator`: segment everything in an image, equal to segment-anything's `SamAutomaticMaskGenerator`.

A grid of single-point prompts covers the image (and, with `crop_n_layers`, overlapping crops of it); each point's
three masks are filtered by their predicted IoU, their stability under a shifted threshold, and box NMS, and the
survivors come back as upstream's records. The decoder runs the points in batches through the Predictor
(`predict_batch_low_res`: the image cache once per image, chunks within a memory budget); the pieces are the
numpy functions of `amg.py`.

Exact shortcuts (results unchanged against upstream's order of work):
- the predicted-IoU filter runs on the decoder's scores *before* any mask is upsampled: upstream upsamples all
  3 x points_per_batch masks of a batch to full size first, though the filter does not read them;
- the survivors are upsampled a few at a time (memory bounded by `memory_budget_mb`), the stability score and the
  binary mask are read from those logits, and only the run-length encoding of each kept mask is stored (as its
  COCO RLE string: a byte or so per run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import amg
from .errors import PocketSamError
from .predictor import DEFAULT_MEMORY_BUDGET_MB, POSTPROCESS_CHUNK_BYTES, MiB, Predictor, chunk_size
from .spec import LOW_RES_MASK_SIZE, MASK_THRESHOLD
from .transforms import threshold, validate_image


class MaskGeneratorError(PocketSamError, ValueError):
    """A MaskGenerator setting that cannot work (one line saying which and why)."""


# Output modes, and the package each needs beyond the runtime's (None: none; COCO's RLE strings are encoded here,
# pycocotools reads them back).
OUTPUT_MODES: dict[str, str | None] = {"binary_mask": None, "uncompressed_rle": None, "coco_rle": None}
MAX_POINTS_PER_SIDE = 256  # 65,536 prompts per crop: more is a mistake (a 4096-pixel image has 16 pixels per point)

# Presets: named sets of parameters (a caller's explicit values win). `fast` keeps upstream's thresholds and cuts
# the decoder's work, whose cost is per prompt (the decoder is most of the full mode's time): every third point of
# the full grid in each direction, 11 x 11 = 121 prompts instead of 1024, so each of its masks is one the full mode
# computes too (before NMS). Its time and agreement with the full mode: docs/performance.md section 8.3.
PRESETS: dict[str, dict[str, Any]] = {"fast": {"grid_stride": 3}}


@dataclass
class _Found:
    """The masks kept so far, in upstream's MaskData layout (one entry per mask)."""

    rles: list[dict[str, Any]] = field(default_factory=list)  # `_pack`ed: COCO RLE string + area
    boxes: list[np.ndarray] = field(default_factory=list)  # XYXY int64
    iou: list[np.ndarray] = field(default_factory=list)
    stability: list[np.ndarray] = field(default_factory=list)
    points: list[np.ndarray] = field(default_factory=list)  # (x, y) float64
    crop_boxes: list[np.ndarray] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        def cat(parts: list[np.ndarray], shape: tuple[int, ...], dtype) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(shape, dtype)

        return (cat(self.boxes, (0, 4), np.int64), cat(self.iou, (0,), np.float32),
                cat(self.stability, (0,), np.float32), cat(self.points, (0, 2), np.float64),
                cat(self.crop_boxes, (0, 4), np.int64))

    def take(self, keep: np.ndarray) -> "_Found":
        boxes, iou, stability, points, crops = self.arrays()
        return _Found([self.rles[i] for i in keep], [boxes[keep]], [iou[keep]], [stability[keep]], [points[keep]],
                      [crops[keep]] if len(crops) else [])  # crop boxes are set once a crop is done

    def extend(self, other: "_Found") -> None:
        for name in ("rles", "boxes", "iou", "stability", "points", "crop_boxes"):
            getattr(self, name).extend(getattr(other, name))


class MaskGenerator:
    """Masks for everything in an image: `SamAutomaticMaskGenerator`'s parameters, defaults and records.

    Args:
        predictor: a `Predictor`, or a bundle folder (opened with `Predictor.from_bundle(path, **backend_options)`).
        points_per_side .. output_mode: as upstream (see its docstring); `min_mask_region_area` needs no OpenCV
            here, and every output mode works without extra packages.
        memory_budget_mb: working memory of the decoder's chunks and of post-processing (`Predictor.predict_batch`);
            the records returned come on top.

    `generate(image)` returns a list of records {segmentation, area, bbox (XYWH), predicted_iou, point_coords,
    stability_score, crop_box (XYWH)}. `timings` holds the last call's split: encoder, decoder and post-processing
    seconds. One `generate` at a time per generator (it sets images on its Predictor).
    """

    def __init__(
        self,
        predictor: Predictor | str | Path,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        *,
        memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
        **backend_options: Any,
    ) -> None:
        self.preset: str | None = None
        if (points_per_side is None) == (point_grids is None):
            raise MaskGeneratorError("give exactly one of points_per_side and point_grids")
        if points_per_side is not None:
            _check_int("points_per_side", points_per_side, 1, MAX_POINTS_PER_SIDE,
                       "a grid finer than one prompt per 16 pixels of a 4096-pixel side")
        _check_int("points_per_batch", points_per_batch, 1, None)
        _check_int("crop_n_layers", crop_n_layers, 0, None)
        _check_int("crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1, None)
        _check_int("min_mask_region_area", min_mask_region_area, 0, None)
        for name, value in (("pred_iou_thresh", pred_iou_thresh), ("stability_score_thresh", stability_score_thresh),
                            ("stability_score_offset", stability_score_offset), ("box_nms_thresh", box_nms_thresh),
                            ("crop_nms_thresh", crop_nms_thresh)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise MaskGeneratorError(f"{name} must be a finite number, got {value!r}")
        if not 0 <= crop_overlap_ratio < 1:
            raise MaskGeneratorError(f"crop_overlap_ratio must be in [0, 1), got {crop_overlap_ratio!r}")
        if output_mode not in OUTPUT_MODES:
            raise MaskGeneratorError(f"unknown output_mode {output_mode!r} (choose from {', '.join(OUTPUT_MODES)})")
        _require_package(output_mode)
        if not isinstance(memory_budget_mb, (int, float)) or not memory_budget_mb > 0:
            raise MaskGeneratorError(f"memory_budget_mb must be a positive number of MiB, got {memory_budget_mb!r}")
        if point_grids is not None:
            point_grids = [_check_grid(i, g) for i, g in enumerate(point_grids)]
            if len(point_grids) != crop_n_layers + 1:
                raise MaskGeneratorError(f"point_grids holds {len(point_grids)} grid(s); crop_n_layers "
                                         f"{crop_n_layers} needs one per layer: {crop_n_layers + 1}")
        self.predictor = predictor if isinstance(predictor, Predictor) else Predictor.from_bundle(
            predictor, **backend_options)
        batches = self.predictor.decoder_batches
        if batches is not None and points_per_batch > batches[-1]:
            raise MaskGeneratorError(
                f"points_per_batch {points_per_batch} is larger than the largest batch this decoder offers "
                f"({batches[-1]}; a fixed-batch TFLite decoder): pass points_per_batch={batches[-1]}, or re-export "
                f"with --decoder-batch {points_per_batch}")
        self.points_per_side = points_per_side
        self.point_grids = point_grids if point_grids is not None else amg.build_all_layer_point_grids(
            points_per_side, crop_n_layers, crop_n_points_downscale_factor)  # type: ignore[arg-type]
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.memory_budget_mb = float(memory_budget_mb)
        self.timings: dict[str, float] = {}

    @classmethod
    def from_preset(cls, predictor: Predictor | str | Path, preset: str, **parameters: Any) -> "MaskGenerator":
        """A generator with the preset's parameters (`PRESETS`), `parameters` given here winning over them."""
        if preset not in PRESETS:
            raise MaskGeneratorError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
        settings = dict(PRESETS[preset])
        stride = settings.pop("grid_stride", None)
        if stride is not None and "point_grids" not in parameters:
            per_side = parameters.pop("points_per_side", 32)
            parameters["point_grids"] = strided_grids(per_side, parameters.get("crop_n_layers", 0),
                                                      parameters.get("crop_n_points_downscale_factor", 1), stride)
            parameters["points_per_side"] = None
        elif "point_grids" in parameters:
            parameters.setdefault("points_per_side", None)
        generator = cls(predictor, **{**settings, **parameters})
        generator.preset = preset
        return generator

    # --- the public call --------------------------------------------------------------------------------------

    def generate(self, image: np.ndarray, on_batch: Callable[[int, int], None] | None = None) -> list[dict]:
        """Records of every mask found in `image` (HxWx3 uint8 RGB), upstream's keys and order.

        `on_batch(done, total)` is called once before the first batch of point prompts (done = 0) and after each
        batch (progress bars)."""
        validate_image(image)
        orig_size = (int(image.shape[0]), int(image.shape[1]))
        crop_boxes, layer_idxs = amg.generate_crop_boxes(orig_size, self.crop_n_layers, self.crop_overlap_ratio)
        self._check_crops(orig_size, crop_boxes, layer_idxs)
        self.timings = {"encoder_s": 0.0, "decoder_s": 0.0, "postprocess_s": 0.0}
        total = sum(-(-len(self.point_grids[i]) // self.points_per_batch) for i in layer_idxs)
        progress = [0, total, on_batch]
        if on_batch is not None:
            on_batch(0, total)
        found = _Found()
        for crop_box, layer in zip(crop_boxes, layer_idxs):
            found.extend(self._process_crop(image, crop_box, layer, orig_size, progress))
        t0 = time.perf_counter()
        if len(crop_boxes) > 1:  # duplicates between crops: the smaller crop's mask wins (score 1 / crop area)
            boxes, _, _, _, crops = found.arrays()
            area = ((crops[:, 2] - crops[:, 0]) * (crops[:, 3] - crops[:, 1])).astype(np.float32)
            found = found.take(amg.box_nms(boxes, 1 / area, self.crop_nms_thresh))
        if self.min_mask_region_area > 0:
            found = self._remove_small_regions(found)
        records = self._records(found)
        self.timings["postprocess_s"] += time.perf_counter() - t0
        return records

    # --- one crop ---------------------------------------------------------------------------------------------

    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer: int, orig_size: tuple[int, int],
                      progress: list) -> _Found:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1, :]
        t0 = time.perf_counter()
        self.predictor.set_image(crop)
        self.timings["encoder_s"] += time.perf_counter() - t0
        points_for_image = self.point_grids[layer] * np.array(crop.shape[:2])[None, ::-1]
        found = _Found()
        for start in range(0, len(points_for_image), self.points_per_batch):
            found.extend(self._process_batch(points_for_image[start:start + self.points_per_batch], crop_box,
                                             orig_size))
            progress[0] += 1
            if progress[2] is not None:
                progress[2](progress[0], progress[1])
        self.predictor.reset_image()
        t0 = time.perf_counter()
        boxes, iou, _, _, _ = found.arrays()
        found = found.take(amg.box_nms(boxes, iou, self.box_nms_thresh))  # duplicates within this crop
        offset = np.array([x0, y0], np.int64)
        found.boxes = [b + np.tile(offset, 2) for b in found.boxes]  # back to the original frame
        found.points = [p + offset for p in found.points]
        found.crop_boxes = [np.tile(np.asarray(crop_box, np.int64), (len(found.rles), 1))]
        self.timings["postprocess_s"] += time.perf_counter() - t0
        return found

    def _process_batch(self, points: np.ndarray, crop_box: list[int], orig_size: tuple[int, int]) -> _Found:
        """One batch of point prompts (Nx2, crop frame): decode, filter, upsample the survivors, encode."""
        t0 = time.perf_counter()
        scores, low_res = self.predictor.predict_batch_low_res(
            points[:, None, :], np.ones((len(points), 1)), multimask_output=True,
            memory_budget_mb=self.memory_budget_mb)
        t1 = time.perf_counter()
        self.timings["decoder_s"] += t1 - t0
        c = scores.shape[1]
        iou = scores.reshape(-1)
        low_res = low_res.reshape(-1, LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE)
        pts = np.repeat(points, c, axis=0)
        keep = np.flatnonzero(iou > self.pred_iou_thresh) if self.pred_iou_thresh > 0.0 else np.arange(len(iou))
        found = _Found()
        h, w = self.predictor.original_size  # type: ignore[misc]
        step = chunk_size(min(self.memory_budget_mb, POSTPROCESS_CHUNK_BYTES / MiB),
                          4 * h * (w + LOW_RES_MASK_SIZE) + h * w)
        orig_h, orig_w = orig_size
        for s in range(0, len(keep), step):
            idx = keep[s:s + step]
            logits = self.predictor.upsample_logits(low_res[idx])
            stability = amg.stability_score(logits, MASK_THRESHOLD, self.stability_score_offset)
            ok = stability >= self.stability_score_thresh if self.stability_score_thresh > 0.0 else \
                np.ones(len(idx), bool)
            masks = threshold(logits[ok])
            del logits
            idx, stability = idx[ok], stability[ok]
            boxes = amg.masks_to_boxes(masks)
            inside = ~amg.is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_w, orig_h])
            masks, boxes, idx, stability = masks[inside], boxes[inside], idx[inside], stability[inside]
            found.rles.extend(_pack(r) for r in amg.masks_to_rle(_uncrop(masks, crop_box, orig_h, orig_w),
                                                                    compact=True))
            found.boxes.append(boxes)
            found.iou.append(iou[idx])
            found.stability.append(stability)
            found.points.append(pts[idx])
        self.timings["postprocess_s"] += time.perf_counter() - t1
        return found

    # --- after all crops --------------------------------------------------------------------------------------

    def _remove_small_regions(self, found: _Found) -> _Found:
        """Fill small holes, drop small islands (`min_mask_region_area`), then box NMS again, preferring masks this
        did not change (upstream's `postprocess_small_regions`)."""
        if not found.rles:
            return found
        masks, unchanged = [], []
        for rle in found.rles:
            mask, changed_holes = amg.remove_small_regions(_unpack_mask(rle), self.min_mask_region_area, "holes")
            mask, changed_islands = amg.remove_small_regions(mask, self.min_mask_region_area, "islands")
            masks.append(mask)
            unchanged.append(not (changed_holes or changed_islands))
        new_boxes = np.concatenate([amg.masks_to_boxes(m[None]) for m in masks])
        scores = np.asarray(unchanged, np.float32)
        keep = amg.box_nms(new_boxes, scores, max(self.box_nms_thresh, self.crop_nms_thresh))
        boxes = found.arrays()[0].copy()
        for i in keep:
            if not unchanged[i]:
                found.rles[i] = _pack(amg.masks_to_rle(masks[i][None], compact=True)[0])
                boxes[i] = new_boxes[i]
        found.boxes = [boxes]
        return found.take(keep)

    def _records(self, found: _Found) -> list[dict]:
        boxes, iou, stability, points, crops = found.arrays()
        records = []
        for i, rle in enumerate(found.rles):
            found.rles[i] = None  # each run-length encoding is dropped once its record holds the output's own
            if self.output_mode == "coco_rle":
                segmentation: Any = {"size": rle["size"], "counts": rle["counts"]}
            elif self.output_mode == "binary_mask":
                segmentation = _unpack_mask(rle)
            else:
                segmentation = {"size": rle["size"], "counts": amg.coco_rle_counts(rle["counts"])}
            records.append({
                "segmentation": segmentation,
                "area": rle["area"],
                "bbox": amg.box_xyxy_to_xywh(boxes[i]).tolist(),
                "predicted_iou": float(iou[i]),
                "point_coords": [points[i].tolist()],
                "stability_score": float(stability[i]),
                "crop_box": amg.box_xyxy_to_xywh(crops[i]).tolist(),
            })
        return records

    def _check_crops(self, orig_size: tuple[int, int], crop_boxes: list[list[int]], layer_idxs: list[int]) -> None:
        """Crops too fine for this image: a layer without points, or crops (layers >= 1) with fewer pixels per side
        than the points sampled across them (every extra point prompts a pixel already prompted)."""
        for box, layer in zip(crop_boxes, layer_idxs):
            n = int(round(np.sqrt(len(self.point_grids[layer]))))
            cw, ch = box[2] - box[0], box[3] - box[1]
            if len(self.point_grids[layer]) == 0:
                raise MaskGeneratorError(
                    f"crop layer {layer} gets no points (points_per_side {self.points_per_side} / "
                    f"crop_n_points_downscale_factor {self.crop_n_points_downscale_factor}^{layer} < 1): use fewer "
                    "crop layers or a smaller downscale factor")
            if layer > 0 and min(cw, ch) < max(2, n):
                raise MaskGeneratorError(
                    f"crop_n_layers {self.crop_n_layers} is too fine for this {orig_size[0]}x{orig_size[1]} image: "
                    f"layer {layer} crops are {ch}x{cw} pixels for {n} points per side; use fewer crop layers, a "
                    "larger crop_n_points_downscale_factor or fewer points_per_side")


def strided_grids(points_per_side: int, n_layers: int, scale_per_layer: int, stride: int) -> list[np.ndarray]:
    """Upstream's point grids (`amg.build_all_layer_point_grids`) keeping every `stride`-th point in each direction,
    the kept rows and columns centred in the grid: a coarser grid whose points are all points of the full one."""
    grids = []
    for n in amg.points_per_layer(points_per_side, n_layers, scale_per_layer):
        grid = amg.build_point_grid(n).reshape(n, n, 2)
        first = (n - 1 - stride * ((n - 1) // stride)) // 2
        grids.append(grid[first::stride, first::stride].reshape(-1, 2))
    return grids


def _pack(rle: dict[str, Any]) -> dict[str, Any]:
    """A kept mask as it is held until the records are written: its COCO RLE string (about a byte a run, where the
    int32 counts take four: a noisy 3 Mpx mask has ~2·10^5 runs) and its area."""
    return {"size": rle["size"], "counts": amg.coco_rle_string(rle["counts"]), "area": amg.area_from_rle(rle)}


def _unpack_mask(packed: dict[str, Any]) -> np.ndarray:
    return amg.rle_to_mask({"size": packed["size"], "counts": amg.coco_rle_counts(packed["counts"], compact=True)})


def _uncrop(masks: np.ndarray, crop_box: list[int], orig_h: int, orig_w: int) -> np.ndarray:
    """NxHcxWc crop masks placed into NxHxW masks of the original frame (zeros outside the crop)."""
    x0, y0, x1, y1 = crop_box
    if x0 == 0 and y0 == 0 and x1 == orig_w and y1 == orig_h:
        return masks
    out = np.zeros((len(masks), orig_h, orig_w), bool)
    out[:, y0:y1, x0:x1] = masks
    return out


def _check_int(name: str, value: Any, lo: int, hi: int | None, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise MaskGeneratorError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise MaskGeneratorError(f"{name} must be {bound}, got {value}" + (f" ({why})" if why and value > lo else ""))


def _check_grid(i: int, grid: Any) -> np.ndarray:
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 2 or g.shape[1] != 2 or len(g) == 0 or not np.all((g >= 0) & (g <= 1)):
        raise MaskGeneratorError(f"point_grids[{i}] must be Nx2 (x, y) points in [0, 1], got shape {g.shape}")
    return g


def _require_package(output_mode: str) -> None:
    package = OUTPUT_MODES[output_mode]
    if package is not None:
        import importlib.util

        if importlib.util.find_spec(package) is None:
            raise MaskGeneratorError(f"output_mode {output_mode!r} needs {package}: pip install {package}")


# --- outputs: COCO-style JSON and an overlay ------------------------------------------------------------------


def coco_document(records: list[dict], image_size: tuple[int, int], file_name: str, info: dict | None = None
                  ) -> dict:
    """`generate`'s records (output_mode "coco_rle" or "uncompressed_rle") as a COCO-style document: one image, one
    category ("object"), one annotation per mask with COCO's keys (segmentation, area, bbox XYWH, iscrowd, score =
    predicted IoU) and upstream's own (predicted_iou, stability_score, point_coords, crop_box). pycocotools'
    `COCO` reads it (`mask.decode` takes each segmentation)."""
    h, w = image_size
    annotations = []
    for i, r in enumerate(records):
        if isinstance(r["segmentation"], np.ndarray):
            raise MaskGeneratorError("a COCO document holds run-length encodings: generate with output_mode "
                                     "'coco_rle' or 'uncompressed_rle', not 'binary_mask'")
        annotations.append({"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "score": r["predicted_iou"],
                            **r})
    return {"info": info or {}, "images": [{"id": 1, "file_name": file_name, "height": h, "width": w}],
            "categories": [{"id": 1, "name": "object"}], "annotations": annotations}


def overlay_masks(image: np.ndarray, records: list[dict], alpha: float = 0.35, seed: int = 0):
    """A PIL image of `image` (HxWx3 uint8) with every mask of `records` filled in its own random colour at `alpha`,
    the largest first so small masks stay visible on top (as segment-anything's notebooks `show_anns`)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = image.astype(np.float32)
    for r in sorted(records, key=lambda r: r["area"], reverse=True):
        seg = r["segmentation"]
        if isinstance(seg, np.ndarray):
            mask = seg
        else:
            counts = seg["counts"]
            counts = amg.coco_rle_counts(counts, compact=True) if isinstance(counts, str) else counts
            mask = amg.rle_to_mask({"size": seg["size"], "counts": counts})
        color = rng.random(3).astype(np.float32) * 255
        out[mask] = (1 - alpha) * out[mask] + alpha * color
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
