"""Bundles: an exported model is a folder `manifest.json` + `encoder.<ext>` + `decoder.<ext>` + `probe.npz`.

The manifest records the format, each part's precision and sha256, the spec version, the source checkpoint, tool
versions and the pre/post constants. Loading checks all of that before any engine sees a file, so a truncated or
swapped model file, or an encoder and a decoder made from different weights, is refused with one clear error
instead of producing wrong masks.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import spec
from .errors import BundleError
from .model_metadata import read_metadata

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


# --- the manifest's schema: every value the runtime reads, checked once when the bundle opens ------------------

Check = Callable[[Any], "str | None"]  # None when the value is fine, else what was expected instead


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _text(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "a non-empty string"


def _sha256(v: Any) -> str | None:
    return None if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) else "a sha256 (64 hex digits)"


def _size(v: Any) -> str | None:
    return None if _is_int(v) and v >= 0 else "a byte count"


def _file_name(v: Any) -> str | None:
    plain = isinstance(v, str) and v not in ("", ".", "..") and "/" not in v and "\\" not in v
    return None if plain else "a file name inside the bundle folder (no folders, no '..')"


def _shapes(v: Any) -> str | None:
    ok = isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(dims, list) and all(isinstance(d, str) or (_is_int(d) and d >= 0) for d in dims)
        for k, dims in v.items())
    return None if ok else "{input name: [dims]}, each dim an int or an axis name"


def _kind(v: Any) -> str | None:
    return None if v in ("random", "file") else "'random' or 'file'"


_PART_SCHEMA: dict[str, Check] = {"file": _file_name, "precision": _text, "sha256": _sha256, "size_bytes": _size,
                                  "weights_id": _text, "shapes": _shapes}
_CHECKPOINT_SCHEMA: dict[str, Check] = {"kind": _kind, "description": _text}
_PROBE_SCHEMA: dict[str, Check] = {"file": _file_name, "sha256": _sha256}


def _check_fields(where: str, obj: Any, schema: dict[str, Check], errors: list[str]) -> None:
    if not isinstance(obj, dict):
        errors.append(f"{where}: expected an object, got {json.dumps(obj)[:40]}")
        return
    for key, check in schema.items():
        if key not in obj:
            errors.append(f"{where}.{key}: missing")
        elif (expected := check(obj[key])) is not None:
            errors.append(f"{where}.{key}: expected {expected}, got {json.dumps(obj[key])[:40]}")


def validate_manifest(manifest: dict[str, Any]) -> None:
    """BundleError("bundle manifest invalid: …") listing every field the runtime reads that is missing or of the
    wrong type (the spec version and format are checked separately, with their own messages)."""
    errors: list[str] = []
    parts = manifest.get("parts")
    if not isinstance(parts, dict):
        errors.append(f"parts: expected an object with {' and '.join(PARTS)}, got {json.dumps(parts)[:40]}")
    else:
        for part in PARTS:
            _check_fields(f"parts.{part}", parts.get(part), _PART_SCHEMA, errors)
    _check_fields("checkpoint", manifest.get("checkpoint"), _CHECKPOINT_SCHEMA, errors)
    if isinstance(manifest.get("checkpoint"), dict) and manifest["checkpoint"].get("kind") == "random":
        seed = manifest["checkpoint"].get("seed")
        if not _is_int(seed):
            errors.append(f"checkpoint.seed: expected an int, got {json.dumps(seed)[:40]}")
    if "probe" in manifest:
        _check_fields("probe", manifest["probe"], _PROBE_SCHEMA, errors)
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise BundleError("bundle manifest invalid: " + "; ".join(errors[:3]) + more)


def _part_path(root: Path, name: str, part: str, fmt: str) -> Path:
    """The part's path, refused unless it lies inside the bundle folder once links are resolved, and is a regular
    file (a folder for CoreML's .mlpackage, every file in it inside the bundle too). Checked before hashing."""
    path = root / name
    inside = root.resolve()
    if not path.exists():
        raise BundleError(f"{root}: the {part} file {name} is missing")
    real = path.resolve()
    if not real.is_relative_to(inside):
        raise BundleError(f"{root}: the {part} file {name} links to {real}, outside the bundle folder")
    if fmt == "coreml":
        if not real.is_dir():
            raise BundleError(f"{root}: the {part} {name} must be a .mlpackage folder")
        outside = [p for p in real.rglob("*") if not p.resolve().is_relative_to(inside)]
        if outside:
            raise BundleError(f"{root}: {name}/{outside[0].relative_to(real)} links outside the bundle folder")
    elif not real.is_file():
        raise BundleError(f"{root}: the {part} file {name} is not a regular file")
    return path


def _part_info(root: Path, manifest: dict[str, Any], part: str) -> PartInfo:
    entry = manifest["parts"][part]
    return PartInfo(
        part=part,
        path=_part_path(root, entry["file"], part, manifest["format"]),
        precision=entry["precision"],
        sha256=entry["sha256"],
        size_bytes=entry["size_bytes"],
        weights_id=entry["weights_id"],
        shapes=entry["shapes"],
    )


def _check_file_identity(root: Path, fmt: str, info: PartInfo) -> None:
    """The part's own stamp (weights id, part) must be the manifest's: a part copied in from another export, its
    hash fixed in the manifest, would otherwise run silently with the wrong weights."""
    meta = read_metadata(info.path, fmt)
    stamped = meta.get("pocketsam.weights_id")
    if stamped is None:
        raise BundleError(f"{info.path}: carries no pocketsam.weights_id (not written by pocketsam export)")
    if stamped != info.weights_id:
        raise BundleError(
            f"{info.path}: made from {stamped}, but the manifest says {info.weights_id} (a part from another "
            "export); re-export the bundle"
        )
    if meta.get("pocketsam.part", info.part) != info.part:
        raise BundleError(
            f"{info.path}: holds the {meta['pocketsam.part']} graph, but the manifest uses it as the {info.part}")


def load_bundle(root: str | Path, verify_hashes: bool = True) -> Bundle:
    """Read and validate a bundle folder.

    Checks, each with its own error: the manifest exists and parses; its spec version is this runtime's; the format
    is known; both part files exist and match their sha256; both parts come from the same weights.
    """
    root = Path(root)
    manifest = _read_manifest(root)
    version = manifest.get("spec_version")
    if str(version) != spec.SPEC_VERSION:
        raise BundleError(
            f"{root}: spec version {version} is not this runtime's {spec.SPEC_VERSION}; "
            "re-export the bundle with this pocketsam, or install the pocketsam that wrote it"
        )
    fmt = manifest.get("format")
    if fmt not in spec.FORMAT_EXTENSIONS:
        raise BundleError(f"{root}: unknown format {fmt!r} (known: {', '.join(spec.FORMAT_EXTENSIONS)})")
    validate_manifest(manifest)
    encoder, decoder = (_part_info(root, manifest, p) for p in PARTS)
    if encoder.weights_id != decoder.weights_id:
        raise BundleError(
            f"{root}: the encoder ({encoder.weights_id}) and the decoder ({decoder.weights_id}) come from different "
            "weights; export both parts from one checkpoint"
        )
    if verify_hashes:
        for info in (encoder, decoder):
            _check_sha(info.path, info.sha256, info.part)
            _check_file_identity(root, fmt, info)
    return Bundle(root=root, manifest=manifest, encoder=encoder, decoder=decoder)
