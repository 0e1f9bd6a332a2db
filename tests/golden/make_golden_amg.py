"""Golden files of segment-everything, made by the UPSTREAM `SamAutomaticMaskGenerator` (run in the reference env).

MobileSAM's `mobile_sam.SamAutomaticMaskGenerator` (segment-anything's, renamed) over `sam_model_registry["vit_t"]`
loaded strictly with pocketsam's synthetic seed-0 checkpoint, on two of the golden photos, with `output_mode =
"coco_rle"` (pycocotools) and, for `min_mask_region_area`, OpenCV: upstream's own encodings and region removal.

Why these settings: on synthetic weights upstream's default thresholds keep nothing (predicted IoU and stability
sit far below 0.88 / 0.95), and every mask is a fine lattice spread over the whole image, so every box is (nearly)
the whole image and box NMS below 1.0 leaves 1-3 masks. So: `nms_off` (box NMS 1.0) keeps 20+ masks through real
IoU and stability filters; `nms_on` runs upstream's NMS thresholds (it suppresses ~99 % of the candidates: the
tie order and the kept mask are what it pins); both with and without `crop_n_layers=1`; `small_regions` runs
OpenCV's hole and island removal. An 8 x 8 grid keeps upstream's run time at minutes.

Writes `amg.json.gz` into --out: {"checkpoint": {state_dict_sha256}, "versions": ..., "cases": [{"photo", "name",
"params", "seconds", "records": [upstream's records, segmentation as COCO RLE]}]}.

Usage (see regenerate.sh): python make_golden_amg.py --checkpoint synthetic_seed0_vit_t.pt --out tests/golden
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from make_golden import _versions, state_dict_digest

# Thresholds per photo, chosen (with pocketsam's runtime) to keep 30-60 of the 192 candidate masks with NMS off.
PHOTOS = {"chelsea": {"pred_iou_thresh": 1.2, "stability_score_thresh": 0.08},
          "astronaut": {"pred_iou_thresh": 1.0, "stability_score_thresh": 0.05}}
BASE = {"points_per_side": 8, "output_mode": "coco_rle"}
CASES = {
    "nms_off": {**BASE, "box_nms_thresh": 1.0, "crop_nms_thresh": 1.0},
    "nms_off_crops": {**BASE, "box_nms_thresh": 1.0, "crop_nms_thresh": 1.0, "crop_n_layers": 1},
    "nms_on": {**BASE},
    "nms_on_crops": {**BASE, "crop_n_layers": 1},
    "small_regions": {**BASE, "box_nms_thresh": 1.0, "crop_nms_thresh": 1.0, "min_mask_region_area": 60},
}


def make(checkpoint: Path, out_dir: Path) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mobile_sam import SamAutomaticMaskGenerator, sam_model_registry

    torch.manual_seed(0)
    torch.set_num_threads(2)
    sam = sam_model_registry["vit_t"](checkpoint=str(checkpoint))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    sam.load_state_dict(state, strict=True)
    sam.eval()
    doc: dict = {"format": 1, "checkpoint": {"state_dict_sha256": state_dict_digest(state)},
                 "versions": _versions(), "cases": []}
    for photo, thresholds in PHOTOS.items():
        image = np.asarray(Image.open(out_dir / "images" / f"{photo}.png").convert("RGB"))
        for name, case in CASES.items():
            params = {**case, **thresholds}
            generator = SamAutomaticMaskGenerator(sam, **params)
            t0 = time.perf_counter()
            records = generator.generate(image)
            seconds = time.perf_counter() - t0
            doc["cases"].append({"photo": photo, "name": name, "params": params, "seconds": round(seconds, 1),
                                 "records": records})
            print(f"{photo} {name}: {len(records)} masks in {seconds:.0f} s", flush=True)
    with gzip.open(out_dir / "amg.json.gz", "wt") as f:
        json.dump(doc, f)
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="state dict .pt (pocketsam's synthetic seed 0)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="golden folder")
    args = ap.parse_args()
    make(args.checkpoint, args.out)


if __name__ == "__main__":
    main()
