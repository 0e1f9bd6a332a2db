"""Numerical parity of pocketsam's model with upstream MobileSAM, given the same state dict.

Not a CI test: upstream `mobile_sam` needs torchvision/timm, which live only in the side environment
(/work/shared/tools/make-reference-env.sh). Two steps, three commands:

  # 1. (system python, pocketsam installed) write the synthetic checkpoint and our outputs
  python3 tests/golden/compare_upstream_model.py ours --seed 0 --out /tmp/parity
  # 2. (side env) load that checkpoint strictly into upstream vit_t, run the same inputs, save upstream outputs
  /work/refenv/bin/python tests/golden/compare_upstream_model.py upstream --out /tmp/parity
  # 3. (either) compare: prints the max abs diff per output and exits 1 above the tolerance
  python3 tests/golden/compare_upstream_model.py compare --out /tmp/parity

Inputs (fixed, seeded): skimage's astronaut resized to 1024 on its longest side, padded (the encoder input,
normalized and zero-padded as SAM's `preprocess`); prompts in the 1024 frame: (a) one foreground point + SAM's pad
point, (b) a box (labels 2/3) + a background point, (c) a batch of 3 single points with a mask input.
Upstream path: `image_encoder(preprocess(x))`, `prompt_encoder(points, boxes, masks)` (boolean-indexed labels),
`mask_decoder.predict_masks` (all 4 masks). Ours: `EncoderGraph` and `DecoderGraph` (label arithmetic).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

TOL_EMBED = 1e-4
TOL_MASKS = 1e-3  # logits of order 1-10 after two transformers: fp32 reassociation noise stays far below this
TOL_IOU = 1e-4


def _image() -> np.ndarray:
    import skimage.data
    from PIL import Image

    img = skimage.data.astronaut()  # 512x512
    h, w = img.shape[:2]
    s = 1024 / max(h, w)
    nh, nw = int(h * s + 0.5), int(w * s + 0.5)
    r = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR)).astype(np.float32)
    return r  # HxWx3 float, 0..255, not padded


def _prompts() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    return {
        "a_coords": np.array([[[500.0, 375.0]]], np.float32),
        "a_labels": np.array([[1.0]], np.float32),
        "b_coords": np.array([[[600.0, 200.0]]], np.float32),
        "b_labels": np.array([[0.0]], np.float32),
        "b_box": np.array([[300.0, 150.0, 800.0, 900.0]], np.float32),
        "c_coords": rng.uniform(0, 1023, size=(3, 1, 2)).astype(np.float32),
        "c_labels": np.ones((3, 1), np.float32),
        "c_mask": rng.normal(0, 3, size=(3, 1, 256, 256)).astype(np.float32),
    }


def run_ours(seed: int, out: Path) -> None:
    import torch

    from pocketsam.export.checkpoint import synthetic_state_dict
    from pocketsam.export.graphs import DecoderGraph, EncoderGraph
    from pocketsam.export.model import build_mobile_sam
    from pocketsam.runtime import spec

    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / f"synth_seed{seed}.pt"
    torch.save(synthetic_state_dict(seed), ckpt)
    model = build_mobile_sam(ckpt)
    enc, dec = EncoderGraph(model).eval(), DecoderGraph(model).eval()
    img = _image()
    x = np.empty((1024, 1024, 3), np.float32)
    x[:] = spec.PAD_VALUE_RAW
    x[: img.shape[0], : img.shape[1]] = img
    p = _prompts()
    res = {}
    with torch.no_grad():
        emb = enc(torch.from_numpy(x).permute(2, 0, 1)[None])
        res["embeddings"] = emb.numpy()
        pad = np.zeros((1, 1, 2), np.float32)
        cases = {
            "a": (np.concatenate([p["a_coords"], pad], 1), np.concatenate([p["a_labels"], [[-1.0]]], 1), None),
            "b": (np.concatenate([p["b_coords"], p["b_box"].reshape(1, 2, 2)], 1),
                  np.concatenate([p["b_labels"], [[2.0, 3.0]]], 1), None),  # fmt: skip
            "c": (np.concatenate([p["c_coords"], np.zeros((3, 1, 2), np.float32)], 1),
                  np.concatenate([p["c_labels"], -np.ones((3, 1), np.float32)], 1), p["c_mask"]),  # fmt: skip
        }
        for k, (c, l, m) in cases.items():
            b = c.shape[0]
            mask = torch.zeros(b, 1, 256, 256) if m is None else torch.from_numpy(m)
            has = torch.zeros(b) if m is None else torch.ones(b)
            masks, iou = dec(emb, torch.from_numpy(c), torch.from_numpy(l.astype(np.float32)), mask, has)
            res[f"{k}_masks"], res[f"{k}_iou"] = masks.numpy(), iou.numpy()
    np.savez(out / "ours.npz", **res)
    print(f"wrote {ckpt} and {out / 'ours.npz'}")


def run_upstream(out: Path) -> None:
    import warnings

    warnings.simplefilter("ignore")
    import torch
    from mobile_sam import sam_model_registry

    model = sam_model_registry["vit_t"]()
    ckpt = sorted(out.glob("synth_seed*.pt"))[0]
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True), strict=True)
    model.eval()  # rebuilds TinyViT's cached attention bias from the loaded parameters
    img = _image()
    p = _prompts()
    res = {}
    with torch.no_grad():
        x = model.preprocess(torch.from_numpy(img).permute(2, 0, 1)[None])
        emb = model.image_encoder(x)
        res["embeddings"] = emb.numpy()
        pe_img = model.prompt_encoder.get_dense_pe()
        t = torch.from_numpy
        cases = {
            "a": ((t(p["a_coords"]), t(p["a_labels"])), None, None),
            "b": ((t(p["b_coords"]), t(p["b_labels"])), t(p["b_box"]), None),
            "c": ((t(p["c_coords"]), t(p["c_labels"])), None, t(p["c_mask"])),
        }
        for k, (pts, box, mask) in cases.items():
            sparse, dense = model.prompt_encoder(points=pts, boxes=box, masks=mask)
            masks, iou = model.mask_decoder.predict_masks(emb, pe_img, sparse, dense)
            res[f"{k}_masks"], res[f"{k}_iou"] = masks.numpy(), iou.numpy()
    np.savez(out / "upstream.npz", **res)
    print(f"upstream torch {torch.__version__}: wrote {out / 'upstream.npz'}")


def compare(out: Path) -> int:
    ours, up = np.load(out / "ours.npz"), np.load(out / "upstream.npz")
    ok = True
    for k in sorted(up.files):
        tol = TOL_EMBED if k == "embeddings" else TOL_IOU if k.endswith("iou") else TOL_MASKS
        d = float(np.abs(ours[k] - up[k]).max())
        scale = float(np.abs(up[k]).max())
        agree = ""
        if k.endswith("masks"):
            agree = f"  sign agreement {float(((ours[k] > 0) == (up[k] > 0)).mean()):.6f}"
        good = d <= tol and ours[k].shape == up[k].shape
        ok &= good
        print(f"{'✓' if good else '✗'} {k:12s} {str(up[k].shape):22s} max|diff| {d:.2e} (max|x| {scale:.2f}, tol {tol:g}){agree}")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["ours", "upstream", "compare"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/pocketsam_parity"))
    a = ap.parse_args()
    if a.step == "ours":
        run_ours(a.seed, a.out)
    elif a.step == "upstream":
        run_upstream(a.out)
    else:
        return compare(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
