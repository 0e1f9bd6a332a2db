"""`export_bundle`: model -> two exported graphs -> quantized parts -> probe -> parity -> manifest, atomically.

The bundle is assembled in a hidden sibling folder and renamed into place only when complete, so an interrupted or
failed export never leaves a half-written bundle where a user (or a phone build) would pick it up.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import re
import shutil
import signal
import threading
from dataclasses import dataclass, field
from importlib import metadata as _md
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pocketsam.runtime import spec
from pocketsam.runtime.bundle import Bundle, load_bundle, sha256_of, size_of
from pocketsam.runtime.errors import BundleError
from pocketsam.runtime.loading import open_bundle
from pocketsam.runtime.verify import CheckResult, compare, judge, record_reference

from .calibration import PROBE_PHOTO, calibration_images, sample_photo
from .checkpoint import checkpoint_origin
from .formats import DECODER_GRAPHS, ENCODER_GRAPHS, FORMATS, ExportJob
from .model import build_mobile_sam
from .reference import reference_sessions


@dataclass
class ExportResult:
    """What `export_bundle` made: the loaded bundle and its parity rows against the PyTorch reference."""

    bundle: Bundle
    parity: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed is not False for r in self.parity)


def tool_versions() -> dict[str, str]:
    """Versions of the tools that shaped an artifact (recorded in every manifest and benchmark row)."""
    out = {"python": platform.python_version()}
    for dist in ("pocketsam", "torch", "numpy", "onnx", "onnxruntime", "onnxsim", "ai-edge-litert", "litert-torch",
                 "ai-edge-quantizer", "coremltools"):
        try:
            out[dist] = _md.version(dist)
        except _md.PackageNotFoundError:
            pass
    return out


def weights_id(origin: dict) -> str:
    """A short identity of the weights, equal for an encoder and a decoder made from the same checkpoint."""
    if origin.get("kind") == "random":
        return f"random:{origin.get('config', 'vit_t')}:seed{origin['seed']}"
    return f"sha256:{origin['sha256']}"


def _bundle_manifest(
    tmp: Path, format: str, files: dict[str, Path], precisions: dict[str, str], shapes: dict[str, dict[str, list]],
    origin: dict, config: str, wid: str, calibration: dict | None,
) -> dict[str, Any]:
    """The manifest of a bundle whose parts and probe already lie in `tmp` (parity is added by the caller)."""
    return {
        "pocketsam_bundle": 1,
        "spec_version": spec.SPEC_VERSION,
        "format": format,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "parts": {
            part: {
                "file": files[part].name,
                "precision": precisions[part],
                "sha256": sha256_of(files[part]),
                "size_bytes": size_of(files[part]),
                "weights_id": wid,
                "shapes": shapes[part],
            }
            for part in files
        },
        "checkpoint": origin,
        "config": config,
        "calibration": calibration,
        "probe": {"file": spec.PROBE_NAME, "sha256": sha256_of(tmp / spec.PROBE_NAME), "photo": PROBE_PHOTO},
        "tools": tool_versions(),
        "constants": spec.constants(),
        "graphs": spec.graphs_as_dict(),
    }


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def sweep_stale(out: Path) -> None:
    """Remove the work folders of exports to `out` whose process is gone (killed before it could clean up):
    `.NAME.tmp-PID` (a half-written bundle) and `.NAME.old-PID` (the replaced bundle, put back when the process died
    between swapping it out and the new one in)."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(tmp|old)-(\d+)$")
    if not out.parent.is_dir():
        return
    for entry in out.parent.iterdir():
        m = pattern.match(entry.name)
        if m is None or not entry.is_dir() or _is_alive(int(m.group(2))):
            continue
        if m.group(1) == "old" and not out.exists():
            entry.rename(out)
        else:
            shutil.rmtree(entry, ignore_errors=True)


def _bundle_files(folder: Path) -> set[str] | None:
    """The names a pocketsam bundle's manifest accounts for (manifest, parts, probe), or None if `folder` holds no
    pocketsam manifest."""
    try:
        manifest = json.loads((folder / spec.MANIFEST_NAME).read_text())
        parts = manifest["parts"]
        if not isinstance(manifest, dict) or "pocketsam_bundle" not in manifest or not isinstance(parts, dict):
            return None
        return {spec.MANIFEST_NAME, spec.PROBE_NAME} | {str(p["file"]) for p in parts.values()}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_out(out: Path, overwrite: bool) -> Path:
    """`out` as an absolute path, after refusing (with nothing touched) anything but a new or empty folder or, with
    `overwrite`, an existing pocketsam bundle that holds only its own files."""
    if out.exists() and not out.is_dir():
        raise BundleError(f"--out {out}: is a file; a bundle is a folder")
    if not out.exists() or not any(out.iterdir()):
        return out
    if not overwrite:
        raise BundleError(f"{out} exists and is not empty (pass --overwrite to replace the bundle in it)")
    cwd = Path.cwd().absolute()
    if out == cwd or out in cwd.parents:
        raise BundleError(f"--out {out}: is the current folder or holds it; export to a new folder")
    own = _bundle_files(out)
    if own is None:
        raise BundleError(f"--overwrite replaces only a pocketsam bundle, and {out} has no pocketsam "
                          f"{spec.MANIFEST_NAME}: nothing was touched; choose a new folder")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in own)
    if foreign:
        raise BundleError(f"--overwrite replaces only a pocketsam bundle, and {out} also holds "
                          f"{', '.join(foreign[:5])}{' …' if len(foreign) > 5 else ''}: nothing was touched")
    return out


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block (as Ctrl-C does), so the export's cleanup runs for both.
    Signal handlers belong to the main thread: elsewhere the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the complete bundle `tmp` at `out`; an existing bundle there is moved aside first and removed only once
    the new one is in place (put back if that fails)."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        if old.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export_bundle(
    out: Path,
    format: str = "onnx",
    encoder_precision: str = "fp32",
    decoder_precision: str = "fp32",
    checkpoint: Path | None = None,
    seed: int = 0,
    config: str = "vit_t",
    calibration_dir: Path | None = None,
    calibration_limit: int = 8,
    decoder_graph: str | None = None,
    encoder_graph: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **format_options: Any,
) -> ExportResult:
    """Export MobileSAM to a bundle folder `out` and measure its parity against the PyTorch fp32 reference.

    `checkpoint=None` uses seeded synthetic weights ("random weights, seed N" in the manifest). `format_options`
    go to the format's exporter (e.g. `decoder_points` for fixed-shape formats). `decoder_graph`: "fast" (the
    rewritten decoder, `export/decoder_rewrite.py`), "reference" (upstream-shaped) or None (the format's default);
    `encoder_graph` likewise (`export/encoder_rewrite.py`).
    """
    from tqdm.auto import tqdm

    if format not in FORMATS:
        raise BundleError(f"format {format!r} is not supported (available: {', '.join(FORMATS)})")
    exporter = FORMATS[format]
    precisions = {"encoder": encoder_precision, "decoder": decoder_precision}
    for part, p in precisions.items():
        if p not in exporter.precisions:
            raise BundleError(f"{format} has no {part} precision {p!r} (choose from {', '.join(exporter.precisions)})")
    decoder_graph = decoder_graph or exporter.default_decoder_graph
    if decoder_graph not in DECODER_GRAPHS:
        raise BundleError(f"unknown decoder graph {decoder_graph!r} (choose from {', '.join(DECODER_GRAPHS)})")
    encoder_graph = encoder_graph or exporter.encoder_graph_for(encoder_precision)
    if encoder_graph not in ENCODER_GRAPHS:
        raise BundleError(f"unknown encoder graph {encoder_graph!r} (choose from {', '.join(ENCODER_GRAPHS)})")
    out = Path(out).expanduser().absolute()
    sweep_stale(out)  # first: a bundle a killed export had moved aside is back in place before `out` is judged
    out = check_out(out, overwrite)
    needs_calibration = any(p in exporter.calibrated for p in precisions.values())

    bar = tqdm(total=4 + exporter.steps + needs_calibration, desc="export", unit="step", disable=not progress)

    def step(what: str) -> None:
        bar.set_postfix_str(what)
        bar.update(1)

    with terminate_as_interrupt():  # SIGTERM cleans up like Ctrl-C
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            step("building the model")
            model = build_mobile_sam(checkpoint=checkpoint, seed=seed, config=config)
            origin = {**checkpoint_origin(checkpoint, seed), "config": config}
            wid = weights_id(origin)
            calibration: list[np.ndarray] = []
            if needs_calibration:
                step("reading calibration images")
                calibration = list(calibration_images(calibration_dir, calibration_limit))
            job = ExportJob(model, tmp, precisions, calibration, {"weights_id": wid}, step, dict(format_options),
                            decoder_graph, encoder_graph)
            shapes = exporter.export_parts(job)
            files = {part: tmp / f"{part}{spec.FORMAT_EXTENSIONS[format]}" for part in precisions}

            step("recording the PyTorch reference probe")
            # A fixed-shape decoder pads every prompt to its point count; the reference gets the same padding, so the
            # probe measures the conversion, not the padding (whose own effect the format's docs report).
            n = shapes["decoder"].get("point_labels", [None])[-1]
            decoder_points = n if isinstance(n, int) else None
            probe = record_reference(sample_photo(PROBE_PHOTO), *reference_sessions(model), decoder_points=decoder_points)
            np.savez_compressed(tmp / spec.PROBE_NAME, **probe)

            calib_info = (
                {"source": str(calibration_dir) if calibration_dir else "scikit-image sample photos",
                 "images": len(calibration)}
                if needs_calibration else None
            )
            manifest = _bundle_manifest(tmp, format, files, precisions, shapes, origin, config, wid, calib_info)
            manifest["decoder_graph"] = decoder_graph
            manifest["encoder_graph"] = encoder_graph
            (tmp / spec.MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")

            step("measuring parity")
            rows: list[CheckResult] = []
            cannot_run = exporter.cannot_run_here()
            if cannot_run is None:
                bundle, enc, dec = open_bundle(tmp)
                metrics = compare(probe, enc, dec, bundle.decoder_points)
                rows = judge(metrics, encoder_precision, decoder_precision, format)
            else:  # e.g. CoreML on Linux: the bundle is complete; `pocketsam verify` on a Mac measures it
                manifest["parity_not_measured"] = cannot_run
            manifest["parity"] = [r.as_dict() for r in rows]
            (tmp / spec.MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
            step("done")
            _swap_in(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            bar.close()
    return ExportResult(load_bundle(out), rows)
