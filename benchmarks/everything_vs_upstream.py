"""Segment everything: pocketsam's `MaskGenerator` on a bundle against upstream's `SamAutomaticMaskGenerator` in
eager torch, side by side in one run.

    python -m pocketsam.benchmarks.everything_vs_upstream BUNDLE --reference-python .reference-env/bin/python

Each contender is a worker process of its own (so each one's peak RSS is its own): upstream in the reference
environment (`/work/shared/tools/make-reference-env.sh`; mobile_sam + torchvision, which pocketsam never installs),
loaded with the same weights as the bundle (synthetic seed N: the checkpoint is written here with torch); pocketsam
with the bundle's default engine, and again with the `fast` preset (`--fast`). Same photo, same threads, same
parameters. After warm-up (pocketsam's workers only: an upstream run takes minutes and has no cold start worth a
round), the workers run in turn A B C A B C … with a settling pause before each; the table gives medians, the
speed-up against upstream's median, each worker's peak RSS, the masks, and how many of them match one to one (mask
IoU >= 0.99) with upstream's (full mode) or with the full mode's (fast preset). `--no-upstream` times pocketsam
alone (e.g. the memory of a 32 x 32 grid on a 1500 x 2000 photo: `--size 2000x1500`).

Default parameters: upstream's, except thresholds that keep masks on synthetic weights (where upstream's own keep
none: see tests/golden/make_golden_amg.py) and box NMS off, so the masks compared are many: --params '{}' for
upstream's defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pocketsam.runtime import amg

DEFAULT_PARAMS = {"pred_iou_thresh": 1.2, "stability_score_thresh": 0.08, "box_nms_thresh": 1.0}
SETTLE_S = 1.0  # between runs of seconds to minutes, the previous worker's spinning threads must be asleep
MATCH_IOU = 0.99


class Worker:
    """A contender in a process of its own, driven one line at a time ("run" / "quit")."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.seconds: list[float] = []
        self.splits: list[dict[str, float]] = []
        self.masks = 0
        self._read()  # {"ready": true} once loaded

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"{self.name} worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def run(self, timed: bool = True) -> None:
        self.proc.stdin.write("run\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        reply = self._read()
        self.masks = reply["masks"]
        if timed:
            self.seconds.append(reply["seconds"])
            if "split" in reply:
                self.splits.append(reply["split"])

    def quit(self) -> float:
        self.proc.stdin.write("quit\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        peak = self._read()["peak_mb"]
        self.proc.wait(timeout=60)
        return peak


def _ours_worker(bundle: str, image_path: str, params_path: str, threads: int, preset: str, out_name: str) -> None:
    """The pocketsam side of the protocol (run with --worker)."""
    from pocketsam.runtime import MaskGenerator, Predictor

    predictor = Predictor.from_bundle(bundle, threads=threads)
    image = np.load(image_path)
    params = {**json.loads(Path(params_path).read_text()), "output_mode": "coco_rle"}  # compact records
    if preset != "none":  # the preset picks the grid; the thresholds stay the run's
        params.pop("points_per_side", None)
    generator = (MaskGenerator.from_preset(predictor, preset, **params) if preset != "none"
                 else MaskGenerator(predictor, **params))
    records: list = []
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "run":
            t0 = time.perf_counter()
            records = generator.generate(image)
            print(json.dumps({"seconds": time.perf_counter() - t0, "masks": len(records),
                              "split": generator.timings}), flush=True)
        elif line.strip() == "quit":
            Path(params_path).with_name(out_name).write_text(json.dumps([r["segmentation"] for r in records]))
            peak = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")) / 1024
            print(json.dumps({"peak_mb": peak}), flush=True)
            return


def _masks(path: Path) -> list[np.ndarray]:
    """The masks a worker wrote: uncompressed RLEs (upstream) or COCO RLE strings (pocketsam)."""
    out = []
    for r in json.loads(path.read_text()):
        counts = amg.coco_rle_counts(r["counts"]) if isinstance(r["counts"], str) else r["counts"]
        out.append(amg.rle_to_mask({"size": r["size"], "counts": counts}))
    return out


def matched(a: list[np.ndarray], b: list[np.ndarray], threshold: float = MATCH_IOU) -> int:
    """Pairs matched one to one (greedily by IoU) at mask IoU >= threshold."""
    if not a or not b:
        return 0
    x = np.stack([m.ravel() for m in a]).astype(np.float32)
    y = np.stack([m.ravel() for m in b]).astype(np.float32)
    inter = x @ y.T
    iou = inter / np.maximum(x.sum(1)[:, None] + y.sum(1)[None, :] - inter, 1)
    used_a, used_b, n = set(), set(), 0
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < threshold:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            n += 1
    return n


def _checkpoint(bundle, given: Path | None, tmp: Path) -> Path:
    """The weights upstream loads: --checkpoint, or the bundle's synthetic seed written with pocketsam's torch."""
    if given is not None:
        return given
    if not bundle.is_synthetic:
        raise SystemExit("the bundle was exported from a checkpoint: pass the same file with --checkpoint")
    seed = int(bundle.manifest["checkpoint"]["seed"])
    path = tmp / f"synthetic_seed{seed}.pt"
    code = ("import sys, torch, warnings; warnings.simplefilter('ignore'); "
            "from pocketsam.export.checkpoint import synthetic_state_dict; "
            "torch.save(synthetic_state_dict(seed=int(sys.argv[2]), config='vit_t'), sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(path), str(seed)], check=True)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--reference-python", type=Path, help="python of the reference env (mobile_sam)")
    ap.add_argument("--no-upstream", action="store_true", help="time pocketsam alone")
    ap.add_argument("--checkpoint", type=Path, help="the checkpoint the bundle was exported from (official weights)")
    ap.add_argument("--image", default="sample:chelsea", help="photo (file or sample:NAME; default sample:chelsea)")
    ap.add_argument("--size", help="resize the photo to WxH first (e.g. 2000x1500)")
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--params", default=json.dumps(DEFAULT_PARAMS), help="JSON of generator parameters")
    ap.add_argument("--fast", action="store_true", help="also time the `fast` preset")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of pocketsam's workers first")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _ours_worker(args.worker[0], args.worker[1], args.worker[2], int(args.worker[3]), args.worker[4],
                     args.worker[5])
        return 0
    if not args.no_upstream and args.reference_python is None:
        ap.error("--reference-python is needed (or --no-upstream)")

    from PIL import Image

    from pocketsam.benchmarks.harness import device_info
    from pocketsam.runtime.bundle import load_bundle
    from pocketsam.runtime.image import read_image

    bundle = load_bundle(args.bundle)
    image = read_image(args.image)
    if args.size:
        w, h = (int(v) for v in args.size.lower().split("x"))
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    params = {"points_per_side": args.points_per_side, **json.loads(args.params)}
    device = device_info()
    with tempfile.TemporaryDirectory(prefix="pocketsam-everything-") as tmp_name:
        tmp = Path(tmp_name)
        np.save(tmp / "image.npy", image)
        (tmp / "params.json").write_text(json.dumps(params))
        me = [sys.executable, "-m", "pocketsam.benchmarks.everything_vs_upstream", str(args.bundle), "--worker",
              str(args.bundle), str(tmp / "image.npy"), str(tmp / "params.json"), str(args.threads)]
        workers = [Worker("pocketsam", me + ["none", "ours-records.json"])]
        if args.fast:
            workers.append(Worker("pocketsam fast", me + ["fast", "fast-records.json"]))
        if not args.no_upstream:
            ckpt = _checkpoint(bundle, args.checkpoint, tmp)
            # run from a copy: the script's own folder goes first on sys.path, and this package's profile.py would
            # shadow the standard library's (torch imports cProfile)
            upstream = tmp / "upstream_amg_worker.py"
            upstream.write_text(Path(__file__).with_name("_upstream_amg_worker.py").read_text())
            workers.append(Worker("upstream", [str(args.reference_python), str(upstream), str(ckpt),
                                               str(tmp / "image.npy"), str(tmp / "params.json"), str(args.threads)]))
        for _ in range(args.warmup):
            for w in workers:
                if w.name != "upstream":
                    w.run(timed=False)
        for r in range(args.runs):
            for w in workers:
                time.sleep(SETTLE_S)
                w.run()
                print(f"run {r + 1}/{args.runs} {w.name}: {w.seconds[-1]:.2f} s, {w.masks} masks", file=sys.stderr,
                      flush=True)
        peaks = {w.name: w.quit() for w in workers}
        masks = {"pocketsam": _masks(tmp / "ours-records.json")}
        if args.fast:
            masks["pocketsam fast"] = _masks(tmp / "fast-records.json")
        if not args.no_upstream:
            masks["upstream"] = _masks(tmp / "upstream-records.json")
    load_end = os.getloadavg()
    rows = []
    up = next((w for w in workers if w.name == "upstream"), None)
    for w in workers:
        against = "upstream" if w.name == "pocketsam" else "pocketsam" if w.name == "pocketsam fast" else None
        row = {"contender": w.name, "median_s": float(np.median(w.seconds)), "min_s": min(w.seconds),
               "max_s": max(w.seconds), "runs": len(w.seconds), "peak_rss_mb": peaks[w.name],
               "masks": len(masks[w.name])}
        if w.splits:
            row["split_s"] = {k: float(np.median([s[k] for s in w.splits])) for k in w.splits[0]}
        if up is not None and w is not up:
            row["speedup"] = float(np.median(up.seconds)) / row["median_s"]
        if against is not None and against in masks:
            row["matched_with"] = against
            row["matched"] = matched(masks[w.name], masks[against])
            row["of"] = (len(masks[w.name]), len(masks[against]))
        rows.append(row)
    doc = {"command": " ".join(sys.argv), "bundle": str(args.bundle), "image": args.image, "size": list(image.shape),
           "threads": args.threads, "params": params, "device": device, "load_end": list(load_end), "rows": rows}
    text = markdown(doc)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(text)
    return 0


def markdown(doc: dict) -> str:
    d = doc["device"]
    head = (f"{d['cpu']}, {d['cores']} cores, {doc['threads']} threads each; photo {doc['image']} "
            f"{doc['size'][0]}x{doc['size'][1]}; parameters {json.dumps(doc['params'])}; load average "
            f"{d['load'][0]:.2f} at the start, {doc['load_end'][0]:.2f} at the end; engines "
            + ", ".join(f"{k} {v}" for k, v in d["engines"].items()) + f"; git {d['git']}.\n\n")
    lines = ["| contender | median s | min s | max s | speed-up vs upstream | encoder / decoder / post s | "
             "peak RSS MiB | masks | matched one to one (IoU >= 0.99) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        split = r.get("split_s")
        split_text = (f"{split['encoder_s']:.2f} / {split['decoder_s']:.2f} / {split['postprocess_s']:.2f}"
                      if split else "")
        match_text = (f"{r['matched']} of {r['of'][0]} ours, of {r['of'][1]} {r['matched_with']}'s"
                      if "matched" in r else "")
        lines.append(f"| {r['contender']} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} | "
                     f"{'%.1f×' % r['speedup'] if 'speedup' in r else 'ref' if r['contender'] == 'upstream' else ''}"
                     f" | {split_text} | {r['peak_rss_mb']:.0f} | {r['masks']} | {match_text} |")
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
