"""Unpack the golden files (tests/golden/) for PocketSAMKit's tests, as plain .npy files.

The Swift tests run on Linux too, where Foundation has no zip reader and no PNG decoder. So this script, run on the
host by ios_demo/run-linux-tests.sh, writes for each golden image a folder OUT/<name>/ holding:
- every member of <name>.npz, byte for byte as stored (an .npz is a zip of .npy files; unzipping changes nothing),
- image.npy: the photo as the uint8 HxWx3 array PIL decodes from images/<name>.png (the Swift test checks its
  sha256 against golden.json's `image_sha256`, the array upstream was given).
Nothing is computed here: every expected value the Swift tests compare with comes from the golden files.

    python3 ios_demo/prepare_goldens.py OUT
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"


def prepare(out: Path, golden: Path = GOLDEN) -> list[str]:
    """Write OUT/<image>/*.npy for every golden image; returns the image names."""
    doc = json.loads((golden / "golden.json").read_text())
    names = []
    for image in doc["images"]:
        folder = out / image["name"]
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(golden / image["npz"]) as z:
            for member in z.namelist():
                if not member.endswith(".npy") or "/" in member:
                    raise ValueError(f"{image['npz']}: unexpected member {member!r}")
                (folder / member).write_bytes(z.read(member))
        with Image.open(golden / image["png"]) as im:
            np.save(folder / "image.npy", np.ascontiguousarray(np.asarray(im.convert("RGB"))))
        names.append(image["name"])
    return names


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: prepare_goldens.py OUT")
    print(f"golden arrays for the Swift tests: {', '.join(prepare(Path(sys.argv[1])))} -> {sys.argv[1]}")
