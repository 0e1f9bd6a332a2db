"""Bundles: an exported model is a folder `manifest.json` + `encoder.<ext>` + `decoder.<ext>` + `probe.npz`.

The manifest records the format, each part's precision and sha256, the spec version, the source checkpoint, tool
versions and the pre/post constants. Loading checks all of that before any engine sees a file, so a truncated or
swapped model file, or an encoder and a decoder made from different weights, is refused with one clear error
instead of producing wrong masks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import spec
from .errors import BundleError

PARTS = ("encoder", "decoder")


@dataclass(frozen=True)
class PartInfo:
    """One model file of a bundle, as the manifest describes it."""

    part: str  # "encoder" | "decoder"
    path: Path
    precision: str
    sha256: str
    size_bytes: int
    weights_id: str  # identity of the weights the part was made from; must agree between parts
    shapes: dict[str, list[Any]]  # the graph's concrete input shapes in this file (symbolic axes stay strings)


@dataclass(frozen=True)
class Bundle:
    """A validated bundle folder. Create with `load_bundle`."""

    root: Path
    manifest: dict[str, Any]
    encoder: PartInfo
    decoder: PartInfo

    @property
    def format(self) -> str:
        return str(self.manifest["format"])

    @property
    def checkpoint_description(self) -> str:
        """E.g. "random weights, seed 0" or "mobile_sam.pt (sha256 a1b2…)"."""
        return str(self.manifest["checkpoint"]["description"])

    @property
    def is_synthetic(self) -> bool:
        """True when the parts were made from seeded synthetic weights (masks are not meaningful segmentations)."""
        return self.manifest["checkpoint"]["kind"] == "random"

    @property
    def probe_path(self) -> Path:
        return self.root / spec.PROBE_NAME

    @property
    def decoder_points(self) -> int | None:
        """The fixed point count of a fixed-shape decoder (TFLite), or None when the point axis is dynamic."""
        n = self.decoder.shapes.get("point_labels", ["batch", "num_points"])[-1]
        return n if isinstance(n, int) else None

    def part(self, name: str) -> PartInfo:
        return {"encoder": self.encoder, "decoder": self.decoder}[name]

    def load_probe(self) -> dict[str, np.ndarray]:
        """The PyTorch fp32 reference outputs recorded at export (see `pocketsam.runtime.verify`)."""
        if not self.probe_path.exists():
            raise BundleError(f"{self.root}: no {spec.PROBE_NAME} in this bundle; verify with --reference torch")
        _check_sha(self.probe_path, self.manifest.get("probe", {}).get("sha256"), "probe")
        with np.load(self.probe_path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of every file of a directory (CoreML .mlpackage) in sorted relative-path order."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_of(path: Path) -> int:
    """Bytes of a file, or of all files under a directory."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _check_sha(path: Path, expected: str | None, what: str) -> None:
    if expected is None:
        raise BundleError(f"{path.parent}: the manifest records no sha256 for the {what}")
    actual = sha256_of(path)
    if actual != expected:
        raise BundleError(
            f"{path}: sha256 {actual[:12]}… does not match the manifest's {expected[:12]}… "
            f"(the {what} file is truncated, modified or from another export)"
        )


def _read_manifest(root: Path) -> dict[str, Any]:
    if not root.exists():
        raise BundleError(f"{root}: no such bundle folder")
    if not root.is_dir():
        raise BundleError(f"{root}: a bundle is a folder with {spec.MANIFEST_NAME}, not a file")
    path = root / spec.MANIFEST_NAME
    if not path.exists():
        raise BundleError(f"{root}: not a pocketsam bundle (no {spec.MANIFEST_NAME})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return manifest


def _part_info(root: Path, manifest: dict[str, Any], part: str) -> PartInfo:
    entry = manifest.get("parts", {}).get(part)
    if not isinstance(entry, dict):
        raise BundleError(f"{root}: the manifest has no '{part}' part")
    try:
        path = root / entry["file"]
        info = PartInfo(
            part=part,
            path=path,
            precision=str(entry["precision"]),
            sha256=str(entry["sha256"]),
            size_bytes=int(entry["size_bytes"]),
            weights_id=str(entry["weights_id"]),
            shapes=dict(entry.get("shapes", {})),
        )
    except KeyError as e:
        raise BundleError(f"{root}: the manifest's '{part}' entry lacks {e}") from None
    if not path.exists():
        raise BundleError(f"{root}: the {part} file {entry['file']} is missing")
    return info


def load_bundle(root: str | Path, verify_hashes: bool = True) -> Bundle:
    """Read and validate a bundle folder.

    Checks, each with its own error: the manifest exists and parses; its spec version is this runtime's; the format
    is known; both part files exist and match their sha256; both parts come from the same weights.
    """
    root = Path(root)
    manifest = _read_manifest(root)
    version = manifest.get("spec_version")
    if version != spec.SPEC_VERSION:
        raise BundleError(
            f"{root}: spec version {version!r} is not this runtime's {spec.SPEC_VERSION!r}; "
            "re-export the bundle with this pocketsam, or install the pocketsam that wrote it"
        )
    fmt = manifest.get("format")
    if fmt not in spec.FORMAT_EXTENSIONS:
        raise BundleError(f"{root}: unknown format {fmt!r} (known: {', '.join(spec.FORMAT_EXTENSIONS)})")
    encoder, decoder = (_part_info(root, manifest, p) for p in PARTS)
    if encoder.weights_id != decoder.weights_id:
        raise BundleError(
            f"{root}: the encoder ({encoder.weights_id}) and the decoder ({decoder.weights_id}) come from different "
            "weights; export both parts from one checkpoint"
        )
    if verify_hashes:
        for info in (encoder, decoder):
            _check_sha(info.path, info.sha256, info.part)
    return Bundle(root=root, manifest=manifest, encoder=encoder, decoder=decoder)
