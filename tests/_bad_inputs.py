"""The catalog of bad inputs the suite feeds pocketsam, by kind. Each list is run by one test (named beside it);
`test_bad_inputs.py::test_the_catalog_covers_enough` counts them. Every case must end in one specific one-line
error (a `PocketSamError`, or exit code 2 from the CLI), never another exception and never a silent wrong result.

Images and prompts are (value, message fragment) pairs for the validators (tests/test_transforms.py). Files,
bundles, checkpoints and command lines are (name, how to make the case, message fragment) triples
(tests/test_bad_inputs.py); makers get a `Case` with a temporary folder and fresh copies of a good bundle.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image


@dataclass
class Case:
    """What a maker may use: a temporary folder, a fresh copy of a tiny fp32 ONNX bundle (`bundle`), a second
    export made from other weights (`other`, read-only), a good photo file, and a valid checkpoint's bytes."""

    tmp: Path
    bundle: Path
    other: Path
    photo: Path
    checkpoint: bytes


# --- image arrays (tests/test_transforms.py::test_bad_images_raise_specific_errors) ------------------------------

IMAGE_ARRAYS = [
    (np.zeros((64, 64), np.uint8), "2-D (grayscale) array of shape (64, 64): convert with np.stack([img]*3, -1)"),
    (np.zeros((64, 64, 1), np.uint8), "single-channel array of shape (64, 64, 1)"),
    (np.zeros((64, 64, 4), np.uint8), "4-channel (RGBA) array of shape (64, 64, 4): drop alpha with img[..., :3]"),
    (np.zeros((64, 64, 3), np.float32), "got float32 pixels"),
    (np.zeros((64, 64, 3), np.float64), "got float64 pixels"),
    (np.zeros((64, 64, 3), np.uint16), "got uint16 (16-bit) pixels"),
    (np.zeros((64, 64, 3), np.int64), "got int64 pixels"),
    (np.zeros((0, 5, 3), np.uint8), "empty array of shape (0, 5, 3)"),
    (np.zeros((1, 5, 3), np.uint8), "at least 2x2 pixels, got 1x5"),
    (np.zeros((5, 1, 3), np.uint8), "at least 2x2 pixels, got 5x1"),
    (np.zeros((2, 5000, 3), np.uint8), "would shrink to 0 pixels"),
    (np.zeros((4, 4, 3, 1), np.uint8), "array of shape (4, 4, 3, 1)"),
    ([[[0, 0, 0]]], "got a list"),
    (Image.new("RGB", (4, 4)), "np.asarray(pil_image.convert('RGB'))"),
]

# --- prompts on a 100x200 (h x w) image (tests/test_transforms.py) -----------------------------------------------

POINTS = [
    (np.array([10.0, 20.0]), np.array([1]), "got shape (2,); for one point use [[x, y]]"),
    (np.zeros((2, 3)), np.array([1, 1]), "point_coords must be Nx2"),
    (np.zeros((0, 2)), np.zeros(0), "point_coords must be Nx2"),
    (np.array([[1.0, np.nan]]), np.array([1]), "point_coords must be finite"),
    (np.array([[1.0, np.inf]]), np.array([1]), "point_coords must be finite"),
    (np.array([["a", "b"]]), np.array([1]), "point_coords must be numbers"),
    (np.array([[1.0 + 2j, 3.0]]), np.array([1]), "point_coords must be real numbers, got complex values"),
    (np.array([[201.0, 5.0]]), np.array([1]), "x in [0, 200] and y in [0, 100], got (x, y) = (201, 5)"),
    (np.array([[5.0, -0.5]]), np.array([1]), "got (x, y) = (5, -0.5)"),
    (np.array([[5.0, 100.01]]), np.array([1]), "got (x, y) = (5, 100.01)"),
    (np.array([[1.0, 2.0]]), np.array([1, 0]), "point_labels must have shape (1,)"),
    (np.array([[1.0, 2.0]]), np.array([[1]]), "point_labels must have shape (1,)"),
    (np.array([[1.0, 2.0], [3, 4]]), np.array([1, 2]), "must be 0 or 1 (background / foreground), got [2.0]"),
    (np.array([[1.0, 2.0]]), np.array([-1]), "point_labels must be 0 or 1"),
    (np.array([[1.0, 2.0]]), np.array([1 + 1j]), "point_labels must be real numbers"),
    (np.array([[1.0, 2.0]]), None, "point_coords and point_labels must be given together"),
    (None, np.array([1]), "point_coords and point_labels must be given together"),
]

BOXES = [
    (np.array([1, 2, 3]), "box must be length 4"),
    (np.zeros((2, 4)), "box must be length 4"),
    (np.array([10, 10, 5, 20]), "x0 <= x1 and y0 <= y1, got [10.0, 10.0, 5.0, 20.0]"),
    (np.array([10, 30, 20, 20]), "x0 <= x1 and y0 <= y1"),
    (np.array([0, 0, 201, 10]), "box corners must lie inside the 100x200 image"),
    (np.array([-1, 0, 10, 10]), "box corners must lie inside"),
    (np.array([0, 0, np.nan, 10]), "box must be finite"),
    (np.array([0, 0, 10 + 1j, 10]), "box must be real numbers"),
]

MASKS = [
    (np.zeros((1, 128, 128)), "mask_input must be 1x256x256 (or 256x256) logits, got shape (1, 128, 128)"),
    (np.zeros((1, 1, 256, 256)), "got shape (1, 1, 256, 256)"),
    (np.zeros((3, 256, 256)), "got shape (3, 256, 256)"),
    (np.full((1, 256, 256), np.nan), "mask_input must be finite"),
    (np.full((1, 256, 256), 1e39), "mask_input must be float32 logits, |x| <= 3.4e+38; got 1e+39"),
    (np.full((256, 256), -1e300), "mask_input must be float32 logits"),
    (np.zeros((256, 256), np.complex64), "mask_input must be real numbers"),
]


# --- image files (tests/test_bad_inputs.py::test_bad_image_files) -------------------------------------------------


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (a decompression bomb: the data is one empty IDAT)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    return path


def _write(name: str, data: bytes) -> Callable[[Case], Path]:
    def make(c: Case) -> Path:
        (c.tmp / name).write_bytes(data)
        return c.tmp / name
    return make


def _truncated_photo(c: Case) -> Path:
    data = c.photo.read_bytes()
    return _write("cut.png", data[: len(data) // 3])(c)


IMAGE_FILES: list[tuple[str, Callable[[Case], Path], str]] = [
    ("missing file", lambda c: c.tmp / "nope.png", "no such image file"),
    ("a folder", lambda c: c.tmp, "is a folder, not an image file"),
    ("text named .png", _write("notes.png", b"hello\n" * 20), "not a readable image"),
    ("empty file", _write("empty.jpg", b""), "not a readable image"),
    ("truncated PNG", _truncated_photo, "not a readable image"),
    ("60000x60000 header", lambda c: _png_header(c.tmp / "bomb.png", 60000, 60000), "decompression bombs"),
    ("just over the limit", lambda c: _png_header(c.tmp / "big.png", 9460, 9460), "Mpx limit"),
    ("unknown sample photo", lambda c: "sample:nope", "unknown sample photo 'nope'"),
]


# --- bundles (tests/test_bad_inputs.py::test_bad_bundles): each maker damages c.bundle, a fresh copy ----------


def _manifest(edit: Callable[[dict], object]) -> Callable[[Case], Path]:
    def make(c: Case) -> Path:
        path = c.bundle / "manifest.json"
        m = json.loads(path.read_text())
        edit(m)
        path.write_text(json.dumps(m))
        return c.bundle
    return make


def _replace(c: Case, name: str, data: bytes) -> Path:
    (c.bundle / name).write_bytes(data)
    return c.bundle


def _set(*keys_and_value) -> Callable[[dict], None]:
    *keys, value = keys_and_value

    def edit(m: dict) -> None:
        for k in keys[:-1]:
            m = m[k]
        m[keys[-1]] = value
    return edit


def _drop(*keys) -> Callable[[dict], None]:
    def edit(m: dict) -> None:
        for k in keys[:-1]:
            m = m[k]
        del m[keys[-1]]
    return edit


def _outside_link(c: Case) -> Path:
    (c.bundle / "decoder.onnx").unlink()
    (c.bundle / "decoder.onnx").symlink_to(c.other / "decoder.onnx")
    return c.bundle


def _foreign_decoder(c: Case) -> Path:
    """The decoder of an export from other weights, copied in with its hash fixed in the manifest."""
    from pocketsam.runtime.bundle import sha256_of

    (c.bundle / "decoder.onnx").write_bytes((c.other / "decoder.onnx").read_bytes())
    return _manifest(_set("parts", "decoder", "sha256", sha256_of(c.bundle / "decoder.onnx")))(c)


def _folder_part(c: Case) -> Path:
    (c.bundle / "parts").mkdir()
    return _manifest(_set("parts", "decoder", "file", "parts"))(c)


BUNDLES: list[tuple[str, Callable[[Case], Path], str]] = [
    ("no such folder", lambda c: c.tmp / "nope", "no such bundle folder"),
    ("a file", lambda c: c.photo, "a bundle is a folder"),
    ("no manifest", lambda c: (c.bundle / "manifest.json").unlink() or c.bundle, "not a pocketsam bundle"),
    ("manifest not JSON", lambda c: _replace(c, "manifest.json", b"{nope"), "not valid JSON"),
    ("manifest a list", lambda c: _replace(c, "manifest.json", b"[]"), "expected a JSON object"),
    ("spec version 999", _manifest(_set("spec_version", "999")), "spec version 999 is not this runtime's 2;"),
    ("spec version int", _manifest(_set("spec_version", 1)), "spec version 1 is not this runtime's 2;"),
    ("unknown format", _manifest(_set("format", "tensorrt")), "unknown format 'tensorrt'"),
    ("parts a list", _manifest(_set("parts", ["encoder.onnx", "decoder.onnx"])), "manifest invalid: parts:"),
    ("file null", _manifest(_set("parts", "decoder", "file", None)), "parts.decoder.file: expected a file name"),
    ("file ../", _manifest(_set("parts", "decoder", "file", "../other/decoder.onnx")), "parts.decoder.file"),
    ("file absolute", _manifest(_set("parts", "encoder", "file", "/etc/passwd")), "parts.encoder.file"),
    ("file a folder", _folder_part, "decoder file parts is not a regular file"),
    ("link outside", _outside_link, "links to"),
    ("shapes null", _manifest(_set("parts", "encoder", "shapes", None)), "parts.encoder.shapes"),
    ("size_bytes big", _manifest(_set("parts", "decoder", "size_bytes", "big")), "parts.decoder.size_bytes"),
    ("sha256 short", _manifest(_set("parts", "decoder", "sha256", "abc")), "parts.decoder.sha256"),
    ("precision missing", _manifest(_drop("parts", "encoder", "precision")), "parts.encoder.precision: missing"),
    ("checkpoint missing", _manifest(_drop("checkpoint")), "checkpoint: expected an object"),
    ("checkpoint null", _manifest(_set("checkpoint", None)), "checkpoint: expected an object"),
    ("checkpoint kind", _manifest(_set("checkpoint", "kind", "magic")), "checkpoint.kind"),
    ("random without seed", _manifest(_drop("checkpoint", "seed")), "checkpoint.seed: expected an int"),
    ("probe sha null", _manifest(_set("probe", "sha256", None)), "probe.sha256"),
    ("part missing", lambda c: (c.bundle / "encoder.onnx").unlink() or c.bundle, "encoder file encoder.onnx is missing"),
    ("part truncated", lambda c: _replace(c, "decoder.onnx", b"\0" * 64), "decoder file is truncated, modified"),
    ("parts of two weights", _manifest(_set("parts", "decoder", "weights_id", "random:tiny:seed7")),
     "come from different weights"),
    ("foreign decoder, hash fixed", _foreign_decoder, "a part from another export"),
    ("both ids rewritten", lambda c: _manifest(lambda m: [m["parts"][p].update(weights_id="random:tiny:seed9")
                                                          for p in ("encoder", "decoder")])(c),
     "made from random:tiny:seed0, but the manifest says random:tiny:seed9"),
]


# --- checkpoints (tests/test_bad_inputs.py::test_bad_checkpoints) -----------------------------------------------


class _Boom:
    """Pickles to `os.system("touch …")`: a checkpoint that runs code when unpickled without weights_only."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.target}",)


def _torch_save(name: str, obj: Callable[[Case], object]) -> Callable[[Case], Path]:
    def make(c: Case) -> Path:
        import torch

        torch.save(obj(c), c.tmp / name)
        return c.tmp / name
    return make


CHECKPOINTS: list[tuple[str, Callable[[Case], Path], str]] = [
    ("missing", lambda c: c.tmp / "nope.pt", "not found"),
    ("text", _write("text.pt", b"this is not a checkpoint\n" * 10), "cannot read checkpoint"),
    ("empty", _write("empty.pt", b""), "cannot read checkpoint"),
    ("truncated", lambda c: _write("cut.pt", c.checkpoint[: len(c.checkpoint) // 2])(c), "cannot read checkpoint"),
    ("a list", _torch_save("list.pt", lambda c: [1, 2, 3]), "not a state dict"),
    ("code in the pickle", _torch_save("boom.pt", lambda c: {"x": _Boom(c.tmp / "pwned")}), "cannot read checkpoint"),
    ("tiny layout", _torch_save("tiny.pt", lambda c: __import__("pocketsam.export.checkpoint", fromlist=["x"])
                                .synthetic_state_dict(0, "tiny")), "vit_t layout"),
]


# --- command lines (tests/test_bad_inputs.py::test_bad_command_lines): exit 2, one line ---------------------------
# Placeholders: {bundle} (a good bundle), {photo}, {tmp}, {file} (an existing plain file), {notbundle} (a folder
# with a user's files in it).

COMMAND_LINES: list[tuple[str, list[str], str]] = [
    ("--out unknown extension", ["predict", "{bundle}", "{photo}", "--point", "5,5", "--out", "{tmp}/m.xyz"],
     "unknown image extension '.xyz'"),
    ("--out no extension", ["predict", "{bundle}", "{photo}", "--point", "5,5", "--out", "{tmp}/mask"],
     "unknown image extension"),
    ("--out a folder", ["predict", "{bundle}", "{photo}", "--point", "5,5", "--out", "{tmp}"], "is a folder"),
    ("--out under a file", ["predict", "{bundle}", "{photo}", "--point", "5,5", "--out", "{file}/m.png"],
     "is a file, not a folder"),
    ("--overlay unknown extension", ["predict", "{bundle}", "{photo}", "--point", "5,5", "--out", "{tmp}/m.png",
                                     "--overlay", "{tmp}/o.txt"], "--overlay"),
    ("no prompt", ["predict", "{bundle}", "{photo}", "--out", "{tmp}/m.png"], "give at least one --point"),
    ("--point outside", ["predict", "{bundle}", "{photo}", "--point", "999,5", "--out", "{tmp}/m.png"],
     "must lie inside the 300x451 image"),
    ("--point a,b", ["predict", "{bundle}", "{photo}", "--point", "a,b", "--out", "{tmp}/m.png"],
     "comma-separated numbers"),
    ("--box three numbers", ["predict", "{bundle}", "{photo}", "--box", "1,2,3", "--out", "{tmp}/m.png"],
     "takes 4 numbers"),
    ("--threads -1", ["predict", "{bundle}", "{photo}", "--point", "5,5", "--out", "{tmp}/m.png", "--threads", "-1"],
     "--threads: must be >= 1"),
    ("--threads 0", ["verify", "{bundle}", "--threads", "0"], "must be >= 1"),
    ("--max-pixels 0", ["predict", "{bundle}", "{photo}", "--point", "5,5", "--out", "{tmp}/m.png",
                        "--max-pixels", "0"], "--max-pixels: must be >= 1"),
    ("image is a folder", ["predict", "{bundle}", "{tmp}", "--point", "5,5", "--out", "{tmp}/m.png"],
     "is a folder, not an image file"),
    ("bundle is a photo", ["info", "{photo}"], "a bundle is a folder"),
    ("export --out a file", ["export", "--config", "tiny", "--out", "{file}"], "is a file"),
    ("export --overwrite a user folder", ["export", "--config", "tiny", "--out", "{notbundle}", "--overwrite"],
     "replaces only a pocketsam bundle"),
    ("export over a bundle without --overwrite", ["export", "--config", "tiny", "--out", "{bundle}"],
     "pass --overwrite"),
    ("--checkpoint and --seed", ["export", "--out", "{tmp}/b", "--checkpoint", "{file}", "--seed", "1"],
     "exclude each other"),
    ("--decoder-points on onnx", ["export", "--out", "{tmp}/b", "--decoder-points", "3"], "fixed-shape formats"),
    ("--no-encoder-pieces on tflite", ["export", "--format", "tflite", "--out", "{tmp}/b", "--no-encoder-pieces"],
     "--no-encoder-pieces: only for onnx"),
    ("--decoder-points 0", ["export", "--format", "tflite", "--out", "{tmp}/b", "--decoder-points", "0"],
     "must be >= 1"),
    ("--images with the probe", ["verify", "{bundle}", "--images", "{tmp}"], "--images needs --reference torch"),
    ("--images empty folder", ["verify", "{bundle}", "--reference", "torch", "--images", "{tmp}/empty"],
     "no images"),
    ("--json under a file", ["verify", "{bundle}", "--json", "{file}/r.json"], "is a file, not a folder"),
    ("bench unknown part", ["bench", "{bundle}", "--parts", "encoder,neck"], "unknown part"),
    ("bench --runs 0", ["bench", "{bundle}", "--runs", "0"], "--runs: must be >= 1"),
    ("bench --plot .txt", ["bench", "{bundle}", "--plot", "{tmp}/p.txt"], "unknown image extension"),
    ("profile --top 0", ["profile", "{bundle}", "--top", "0"], "--top: must be >= 1"),
    ("bench-merge not JSON", ["bench-merge", "{file}"], "bench-merge"),
    ("everything --points-per-side 0", ["everything", "{bundle}", "{photo}", "--out", "{tmp}/m.json",
                                         "--points-per-side", "0"], "points_per_side must be in [1, 256]"),
    ("everything --points-per-side 300", ["everything", "{bundle}", "{photo}", "--out", "{tmp}/m.json",
                                           "--points-per-side", "300"], "points_per_side must be in [1, 256]"),
    ("everything --out not JSON", ["everything", "{bundle}", "{photo}", "--out", "{tmp}/m.png"],
     "give a .json file name"),
    ("everything crops too fine", ["everything", "{bundle}", "{photo}", "--out", "{tmp}/m.json", "--crop-n-layers",
                                   "4", "--crop-overlap-ratio", "0"], "too fine for this 300x451 image"),
    ("everything --pred-iou-thresh nan", ["everything", "{bundle}", "{photo}", "--out", "{tmp}/m.json",
                                          "--pred-iou-thresh", "nan"], "pred_iou_thresh must be a finite number"),
    ("everything --memory-budget-mb 0", ["everything", "{bundle}", "{photo}", "--out", "{tmp}/m.json",
                                         "--memory-budget-mb", "0"], "memory_budget_mb must be a positive number"),
    ("everything unknown preset", ["everything", "{bundle}", "{photo}", "--out", "{tmp}/m.json", "--preset",
                                   "fastest"], "invalid choice"),
    ("unknown command", ["frobnicate"], "invalid choice"),
]
