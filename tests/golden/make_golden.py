"""Make pocketsam's golden files with the UPSTREAM implementation (run in the reference side env only).

Runs MobileSAM's own `mobile_sam` package (`sam_model_registry["vit_t"]`, `SamPredictor`, `ResizeLongestSide`; the
predictor and transforms are segment-anything's, renamed) with pocketsam's synthetic seed-0 checkpoint, loaded
strictly, on a few scikit-image photos with seeded prompts, and records what upstream did at every stage:

- `images/<name>.png`: the photo, lossless (exactly the uint8 array given to `SamPredictor.set_image`);
- `golden.json`: everything small (sizes, sha256 of `ResizeLongestSide.apply_image`'s uint8 output, coordinate and
  box transforms as float32 exactly as `SamPredictor.predict` casts them, prompts in the original frame, scores,
  versions). Floats are written with Python's `repr`, which round-trips float64 (and so float32) exactly;
- `<name>.npz`: arrays. `embedding` (1x256x64x64) and every `<prompt>.low_res_logits` / `<prompt>.mask_input` are
  float16 (storage only: see README.md for the bound this adds); `embedding_f32_head` is the first
  `EMBED_HEAD_CHANNELS` channels of the embedding in float32, for a strict fp32 check; `<prompt>.masks` are
  `np.packbits` of the bool masks (shape in golden.json).

Usage (see regenerate.sh): python make_golden.py --checkpoint synthetic_seed0_vit_t.pt --out tests/golden
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import platform
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# The upstream packages (mobile_sam, which needs torchvision and timm) and scikit-image are imported inside the
# functions that use them: pocketsam's test imports `state_dict_digest` from this file with the system python.

FORMAT_VERSION = 1
SEED = 20240601  # base seed of the prompts; image i uses default_rng([SEED, i])
EMBED_HEAD_CHANNELS = 16  # channels of the embedding also kept in float32 (256 KiB per image)
N_COORD_PROBES = 64  # random (x, y) per image for the coordinate-transform check, plus the 4 corners and centre


def _photos() -> dict[str, np.ndarray]:
    """Real photos of different aspect ratios (h, w): landscape, square, portrait, and an odd-sized crop whose
    scale factor is not a round number (stresses the rounding of the resized shape and of coordinates)."""
    from skimage import data as skdata

    return {
        "chelsea": skdata.chelsea(),  # 300x451 landscape
        "astronaut": skdata.astronaut(),  # 512x512 square
        "coffee_portrait": np.ascontiguousarray(skdata.coffee().transpose(1, 0, 2)),  # 600x400 portrait
        "rocket_crop": np.ascontiguousarray(skdata.rocket()[47:380, 61:578]),  # 333x517, odd sizes
    }


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def state_dict_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor in name order: identifies the weights independently
    of how `torch.save` serialized them (pocketsam's test recomputes it from `synthetic_state_dict(0)`)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{str(t.dtype).removeprefix('torch.')}|{list(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _f32_list(a: np.ndarray) -> list:
    """float32 values as JSON numbers (float32 -> float64 is exact, and json writes float64 round-trippably)."""
    assert a.dtype == np.float32
    return a.astype(np.float64).tolist()


def _f16_roundtrip(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).astype(np.float16).astype(np.float32)


def _point(rng: np.random.Generator, h: int, w: int) -> list[float]:
    """A point in the central 80% of the image (continuous coordinates: they stress the coordinate math)."""
    return [float(rng.uniform(0.1 * w, 0.9 * w)), float(rng.uniform(0.1 * h, 0.9 * h))]


def _box(rng: np.random.Generator, h: int, w: int) -> list[float]:
    """XYXY, at least 25% of each side, inside the image."""
    bw, bh = rng.uniform(0.25, 0.7) * w, rng.uniform(0.25, 0.7) * h
    x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return [float(x0), float(y0), float(x0 + bw), float(y0 + bh)]


def _prompts(rng: np.random.Generator, h: int, w: int) -> list[dict]:
    """Seeded prompts, in the original frame. `mask_from` names an earlier prompt whose best (highest-score)
    low-res logits, rounded to float16, are fed back as `mask_input`."""
    fg = _point(rng, h, w)
    pts = [_point(rng, h, w), _point(rng, h, w), _point(rng, h, w)]
    box = _box(rng, h, w)
    inside = [float(rng.uniform(box[0], box[2])), float(rng.uniform(box[1], box[3]))]
    return [
        {"name": "point", "point_coords": [fg], "point_labels": [1], "multimask_output": True},
        {"name": "points_fg_bg", "point_coords": pts, "point_labels": [1, 1, 0], "multimask_output": True},
        {"name": "points_fg_bg_single", "point_coords": pts, "point_labels": [1, 1, 0], "multimask_output": False},
        {"name": "box", "box": box, "multimask_output": True},
        {"name": "box_point", "box": box, "point_coords": [inside], "point_labels": [1], "multimask_output": False},
        {"name": "point_mask_refine", "point_coords": [fg], "point_labels": [1], "mask_from": "point",
         "multimask_output": False},  # fmt: skip
        {"name": "mask_only", "mask_from": "box", "multimask_output": True},
    ]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "mobilesam-mirror", "segment-anything", "timm", "numpy", "pillow",
                 "scikit-image"):  # fmt: skip
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def make(checkpoint: Path, out_dir: Path) -> dict:
    """Run upstream on the photos and prompts with the weights in `checkpoint`; write the golden files."""
    with warnings.catch_warnings():  # timm's deprecation and registry-overwrite warnings
        warnings.simplefilter("ignore")
        from mobile_sam import SamPredictor, sam_model_registry
        from mobile_sam.utils.transforms import ResizeLongestSide

    torch.manual_seed(0)
    # Upstream's builder loads with `load_state_dict(state_dict)`, strict by default; load again explicitly with
    # strict=True so a key mismatch can never pass silently whatever the builder does.
    sam = sam_model_registry["vit_t"](checkpoint=str(checkpoint))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    sam.load_state_dict(state, strict=True)
    sam.eval()
    predictor = SamPredictor(sam)
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)

    doc: dict = {
        "format_version": FORMAT_VERSION,
        "made_by": "tests/golden/make_golden.py (upstream mobile_sam SamPredictor), see README.md",
        "checkpoint": {
            "description": "pocketsam synthetic weights: synthetic_state_dict(seed=0, config='vit_t')",
            "state_dict_sha256": state_dict_digest(state),
        },
        "versions": _versions(),
        "prompt_seed": SEED,
        "float16_arrays": ["embedding", "*.low_res_logits", "*.mask_input"],
        "embed_head_channels": EMBED_HEAD_CHANNELS,
        "images": [],
    }
    for index, (name, image) in enumerate(_photos().items()):
        h, w = image.shape[:2]
        png = out_dir / "images" / f"{name}.png"
        Image.fromarray(image).save(png, optimize=True)
        assert np.array_equal(np.asarray(Image.open(png).convert("RGB")), image), "PNG must be lossless"
        rng = np.random.default_rng([SEED, index])

        resized = transform.apply_image(image)
        probes = np.concatenate(
            [
                np.array([[0, 0], [w, 0], [0, h], [w, h], [w / 2, h / 2]], dtype=np.float64),
                np.stack([rng.uniform(0, w, N_COORD_PROBES), rng.uniform(0, h, N_COORD_PROBES)], axis=1),
            ]
        )
        probe_boxes = np.array([_box(rng, h, w) for _ in range(8)] + [[0, 0, w, h]], dtype=np.float64)
        # Exactly as SamPredictor.predict casts them: torch.as_tensor(..., dtype=torch.float).
        probes_t = torch.as_tensor(transform.apply_coords(probes, (h, w)), dtype=torch.float).numpy()
        boxes_t = torch.as_tensor(transform.apply_boxes(probe_boxes, (h, w)), dtype=torch.float).numpy()

        predictor.set_image(image)
        assert tuple(predictor.input_size) == tuple(resized.shape[:2])
        embedding = predictor.get_image_embedding().detach().cpu().numpy().astype(np.float32)
        arrays: dict[str, np.ndarray] = {
            "embedding": embedding.astype(np.float16),
            "embedding_f32_head": np.ascontiguousarray(embedding[:, :EMBED_HEAD_CHANNELS]),
        }
        entry: dict = {
            "name": name,
            "png": f"images/{name}.png",
            "npz": f"{name}.npz",
            "image_sha256": _sha256(image),
            "original_size": [h, w],
            "input_size": [int(s) for s in predictor.input_size],
            "resized_shape": list(resized.shape),
            "resized_sha256": _sha256(resized),
            "coords": {"input": probes.tolist(), "transformed": _f32_list(probes_t)},
            "boxes": {"input": probe_boxes.tolist(), "transformed": _f32_list(boxes_t)},
            "embedding_shape": list(embedding.shape),
            "prompts": [],
        }

        best_low_res: dict[str, np.ndarray] = {}
        for p in _prompts(rng, h, w):
            kwargs: dict = {"multimask_output": p["multimask_output"]}
            record = {k: v for k, v in p.items() if k != "name"}
            record["name"] = p["name"]
            if "point_coords" in p:
                kwargs["point_coords"] = np.array(p["point_coords"], dtype=np.float64)
                kwargs["point_labels"] = np.array(p["point_labels"], dtype=np.int64)
                record["point_coords_transformed"] = _f32_list(
                    torch.as_tensor(transform.apply_coords(kwargs["point_coords"], (h, w)), dtype=torch.float)
                    .numpy()
                )
            if "box" in p:
                kwargs["box"] = np.array(p["box"], dtype=np.float64)
                record["box_transformed"] = _f32_list(
                    torch.as_tensor(transform.apply_boxes(kwargs["box"], (h, w)), dtype=torch.float).numpy()
                )
            if "mask_from" in p:
                # float16-rounded so that what upstream saw is exactly what the npz stores
                mask_input = best_low_res[p["mask_from"]]
                kwargs["mask_input"] = mask_input
                arrays[f"{p['name']}.mask_input"] = mask_input.astype(np.float16)
            masks, scores, low_res = predictor.predict(**kwargs)
            best = int(np.argmax(scores))
            best_low_res[p["name"]] = _f16_roundtrip(low_res[best][None])
            record["best_index"] = best
            record["masks_shape"] = list(masks.shape)
            record["mask_coverage"] = [float(m.mean()) for m in masks]
            record["scores"] = _f32_list(scores.astype(np.float32))
            arrays[f"{p['name']}.masks"] = np.packbits(masks.astype(bool))
            arrays[f"{p['name']}.low_res_logits"] = low_res.astype(np.float16)
            entry["prompts"].append(record)

        # One batched call (SamPredictor.predict_torch): 3 boxes, one decoder run, prompts already transformed.
        boxes = np.array([_box(rng, h, w) for _ in range(3)], dtype=np.float64)
        boxes_torch = torch.as_tensor(transform.apply_boxes(boxes, (h, w)), dtype=torch.float)
        masks_t, scores_t, low_res_t = predictor.predict_torch(None, None, boxes=boxes_torch, multimask_output=True)
        masks_b = masks_t.cpu().numpy()
        arrays["batch_boxes.masks"] = np.packbits(masks_b.astype(bool))
        arrays["batch_boxes.low_res_logits"] = low_res_t.cpu().numpy().astype(np.float16)
        entry["batch"] = {
            "name": "batch_boxes",
            "call": "predict_torch",
            "boxes": boxes.tolist(),
            "boxes_transformed": _f32_list(boxes_torch.numpy()),
            "multimask_output": True,
            "masks_shape": list(masks_b.shape),
            "mask_coverage": [[float(m.mean()) for m in mb] for mb in masks_b],
            "scores": [_f32_list(s) for s in scores_t.cpu().numpy().astype(np.float32)],
        }
        np.savez_compressed(out_dir / f"{name}.npz", **arrays)
        doc["images"].append(entry)
        print(f"{name}: {h}x{w} -> input {entry['input_size']}, {len(entry['prompts'])} prompts + 1 batch")

    (out_dir / "golden.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="state dict .pt (pocketsam's synthetic seed 0)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="golden folder")
    args = ap.parse_args()
    make(args.checkpoint, args.out)


if __name__ == "__main__":
    main()
