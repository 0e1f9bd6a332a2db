"""The `pocketsam` command: parse, validate, call a typed function. No logic of its own.

Exit codes: 0 done; 1 a parity check failed; 2 a user mistake (one line on stderr, argparse's convention, never a
traceback); 3 a converter or internal failure (one line that says how to see the full traceback: `--debug` or
POCKETSAM_DEBUG=1).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pocketsam.runtime.errors import MissingExtraError, PocketSamError
from pocketsam.runtime.image import DEFAULT_MAX_PIXELS, PROBE_PHOTO, SAMPLE_PREFIX

EXIT_PARITY = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
DEBUG_ENV = "POCKETSAM_DEBUG"
BENCH_PHOTO = SAMPLE_PREFIX + PROBE_PHOTO  # what bench times on by default: the photo every probe records


class UsageError(PocketSamError):
    """A flag combination or value the parser cannot catch by itself."""


class _Parser(argparse.ArgumentParser):
    """argparse with its mistakes on one line, as pocketsam's own (the usage block is one --help away)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- argument types ------------------------------------------------------------------------------------------


def _floats(text: str, n: tuple[int, ...], what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if len(vals) not in n:
        raise argparse.ArgumentTypeError(f"{what} takes {' or '.join(map(str, n))} numbers, got {text!r}")
    return vals


def point_arg(text: str) -> list[float]:
    """X,Y or X,Y,LABEL (label 1 foreground, 0 background), in pixels of the original image."""
    return _floats(text, (2, 3), "--point")


def box_arg(text: str) -> list[float]:
    """X0,Y0,X1,Y1 in pixels of the original image."""
    return _floats(text, (4,), "--box")


def count_arg(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum` (threads, runs, sizes)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def read_image(args: argparse.Namespace) -> np.ndarray:
    """`args.image`: an image file, or `sample:NAME` for one of scikit-image's sample photos (e.g. sample:chelsea)."""
    from pocketsam.runtime.image import read_image as _read

    return _read(args.image, max_pixels=args.max_pixels)


def check_output_image(path: Path | None, flag: str) -> None:
    """Refuse, before any work, an output image path pillow cannot write: unknown extension, a folder, a parent
    that is a file or not writable."""
    if path is None:
        return
    from PIL import Image

    writable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file name such as {path / 'mask.png'}")
    if path.suffix.lower() not in writable:
        raise UsageError(f"{flag} {path}: unknown image extension {path.suffix or '(none)'!r} (use .png)")
    _check_parent_writable(path, flag)


def _check_parent_writable(path: Path, flag: str) -> None:
    """The nearest existing ancestor of `path` must be a writable folder (the rest is created)."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {parent} is not writable")


# The packages only the export side needs, by the pip extra that brings them (`pocketsam[onnx]`/`[tflite]` installs
# on a device have none of them). A command that needs one says so in one line instead of a traceback.
EXTRA_OF_MODULE = {
    "torch": "export", "onnx": "export", "onnxsim": "export", "skimage": "export", "tqdm": "export",
    "litert_torch": "export-tflite", "ai_edge_quantizer": "export-tflite", "coremltools": "coreml",
    "sklearn": "export-coreml", "matplotlib": "bench",
}
# What each export format's converter imports (checked before an export starts).
EXPORT_MODULES = {
    "onnx": ("torch", "onnx", "onnxsim", "skimage", "tqdm"),
    "tflite": ("torch", "onnx", "skimage", "tqdm", "litert_torch", "ai_edge_quantizer"),
    "coreml": ("torch", "skimage", "tqdm", "coremltools"),
}


def missing_extra_message(module: str, what: str) -> str:
    extra = EXTRA_OF_MODULE.get(module.split(".")[0], "export")
    return f"{what} needs {module.split('.')[0]}, which this install lacks: pip install 'pocketsam[{extra}]'"


def require_modules(modules: Sequence[str], what: str) -> None:
    """MissingExtraError naming the pip extra when one of `modules` cannot be imported (checked without importing
    them)."""
    import importlib.util

    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise MissingExtraError(missing_extra_message(name, what))


def _trt_flags(args: argparse.Namespace) -> list[str]:
    """The TensorRT flags the user gave (they need the TensorRT provider)."""
    given = (("--trt-fp16/--no-trt-fp16", getattr(args, "trt_fp16", None) is not None),
             ("--trt-cache", getattr(args, "trt_cache", None) is not None),
             ("--trt-fp32-ops", getattr(args, "trt_fp32_ops", None) is not None),
             ("--trt-layer-norm-fp32", bool(getattr(args, "trt_layer_norm_fp32", False))))
    return [flag for flag, on in given if on]


def ort_providers(args: argparse.Namespace) -> list | None:
    """onnxruntime's `providers` from --providers and the --trt-* flags (None: the default). The TensorRT flags
    alone mean `tensorrt,cuda,cpu`; with --providers, TensorRT must be among them."""
    from pocketsam.runtime.backends.ort import PROVIDER_ALIASES, TENSORRT, tensorrt_provider

    names = _csv(getattr(args, "providers", None))
    trt = _trt_flags(args)
    if not names and not trt:
        return None
    names = names or ["tensorrt", "cuda", "cpu"]
    full = [PROVIDER_ALIASES.get(n.lower(), n) for n in names]
    if trt and TENSORRT not in full:
        raise UsageError(f"{', '.join(trt)}: options of the TensorRT provider; add tensorrt to --providers")
    spec = tensorrt_provider(fp16=bool(getattr(args, "trt_fp16", False)), cache_dir=getattr(args, "trt_cache", None),
                             exclude_ops=_csv(getattr(args, "trt_fp32_ops", None)),
                             layer_norm_fp32=bool(getattr(args, "trt_layer_norm_fp32", False)))
    return [spec if n == TENSORRT else n for n in full]


def backend_options(args: argparse.Namespace, bundle_format: str | None = None) -> dict:
    options = {"threads": args.threads} if getattr(args, "threads", None) is not None else {}
    providers = ort_providers(args)
    if providers is not None:
        if bundle_format not in (None, "onnx") or getattr(args, "backend", None) not in (None, "onnxruntime"):
            raise UsageError("--providers and --trt-* are options of onnxruntime (ONNX bundles)")
        options["providers"] = providers
    if getattr(args, "compute_units", None) is not None:
        if args.backend not in (None, "coreml"):
            raise UsageError("--compute-units is an option of the coreml backend")
        options["compute_units"] = args.compute_units
    return options


# --- commands -------------------------------------------------------------------------------------------------


# Export flags that only one format takes: {option: (format, why it is that format's)}.
_FORMAT_OPTIONS = {
    "decoder_points": ("tflite", "only for fixed-shape formats (tflite); {format} decoders take any count"),
    "decoder_batch": ("tflite", "only for fixed-shape formats (tflite); {format} decoders take any count"),
    "encoder_pieces": ("onnx", "only for onnx, whose encoder runs its largest maps in pieces by Loops"),
}


def _format_options(args: argparse.Namespace) -> dict:
    """The format-specific export flags that were given; an error for a flag of another format."""
    options = {k: getattr(args, k) for k in _FORMAT_OPTIONS if getattr(args, k) is not None}
    for k in options:
        fmt, why = _FORMAT_OPTIONS[k]
        if args.format != fmt:
            flag = "--" + ("no-" if options[k] is False else "") + k.replace("_", "-")
            raise UsageError(f"{flag}: " + why.format(format=args.format))
    return options


def cmd_export(args: argparse.Namespace) -> int:
    if args.checkpoint is not None and args.seed is not None:
        raise UsageError("--checkpoint and --seed exclude each other (a seed only picks synthetic weights)")
    require_modules(EXPORT_MODULES[args.format], f"pocketsam export --format {args.format}")
    from pocketsam.export.bundle_writer import export_bundle

    result = export_bundle(
        out=args.out,
        format=args.format,
        encoder_precision=args.encoder_precision,
        decoder_precision=args.decoder_precision,
        checkpoint=args.checkpoint,
        seed=args.seed or 0,
        config=args.config,
        calibration_dir=args.calibration,
        decoder_graph=args.decoder_graph,
        encoder_graph=args.encoder_graph,
        overwrite=args.overwrite,
        progress=not args.quiet,
        **_format_options(args),
    )
    b = result.bundle
    print(f"wrote {b.root} ({b.format}; encoder {b.encoder.precision}, decoder {b.decoder.precision}; "
          f"{b.checkpoint_description})")
    print("parity against the PyTorch fp32 reference (probe photo):")
    for row in result.parity:
        print("  " + row.line())
    return 0 if result.passed else EXIT_PARITY


def cmd_predict(args: argparse.Namespace) -> int:
    from pocketsam.runtime.image import overlay, save_mask_png
    from pocketsam.runtime.loading import open_bundle
    from pocketsam.runtime.predictor import Predictor

    if not args.point and args.box is None:
        raise UsageError("give at least one --point X,Y[,LABEL] or a --box X0,Y0,X1,Y1")
    check_output_image(args.out, "--out")
    check_output_image(args.overlay, "--overlay")
    image = read_image(args)
    from pocketsam.runtime.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    bundle, encoder, decoder = open_bundle(bundle, args.backend, **backend_options(args, bundle.format))
    predictor = Predictor(encoder, decoder, decoder_points=bundle.decoder_points)
    predictor.set_image(image)
    coords = labels = None
    if args.point:
        coords = np.array([p[:2] for p in args.point], np.float32)
        labels = np.array([p[2] if len(p) == 3 else 1 for p in args.point], np.float32)
    box = np.array(args.box, np.float32) if args.box is not None else None
    masks, scores, _ = predictor.predict(coords, labels, box, multimask_output=args.multimask)
    best = int(np.argmax(scores))
    for i, s in enumerate(scores):
        print(f"mask {i}: score {s:.4f}, area {int(masks[i].sum())} px{'  <- written' if i == best else ''}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_mask_png(masks[best], args.out)
    print(f"wrote {args.out}")
    if args.overlay is not None:
        _write_overlay(overlay(image, masks[best], points=coords, labels=labels, box=box), args.overlay)
    _synthetic_note(bundle, "(pocketsam download-checkpoint, then export --checkpoint, for the official weights)")
    return 0


def _write_overlay(picture, path: Path) -> None:
    """Save a PIL overlay image (its folder made first) and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    print(f"wrote {path}")


def _synthetic_note(bundle, advice: str) -> None:
    """On stderr, after everything on stdout: a bundle on synthetic weights gives no meaningful masks."""
    if bundle.is_synthetic:
        sys.stdout.flush()
        print(f"note: this bundle runs on {bundle.checkpoint_description}: masks are not meaningful segmentations "
              f"{advice}", file=sys.stderr)


# SamAutomaticMaskGenerator's parameters the `everything` command takes as flags (None: upstream's default).
EVERYTHING_PARAMETERS = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
                         "stability_score_offset", "box_nms_thresh", "crop_n_layers", "crop_nms_thresh",
                         "crop_overlap_ratio", "crop_n_points_downscale_factor", "min_mask_region_area")


def _batch_progress(enabled: bool):
    """(on_batch callback, close) for a progress bar over prompt batches: tqdm when installed, else a plain
    counter on stderr (a runtime-only install has no tqdm)."""
    if not enabled:
        return None, lambda: None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        def plain(done: int, total: int) -> None:
            print(f"\rprompt batches {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

        return plain, lambda: None
    bars: list = []  # made on the first call, when the total is known

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(desc="prompt batches", unit="batch", total=total))
        bars[0].update(done - bars[0].n)

    return update, lambda: bars[0].close() if bars else None


def cmd_everything(args: argparse.Namespace) -> int:
    from pocketsam.runtime.loading import open_bundle
    from pocketsam.runtime.mask_generator import MaskGenerator, coco_document, overlay_masks
    from pocketsam.runtime.predictor import Predictor

    if args.out.suffix.lower() != ".json":
        raise UsageError(f"--out {args.out}: the masks are written as COCO-style JSON: give a .json file name")
    if args.out.is_dir():
        raise UsageError(f"--out {args.out}: is a folder; give a file name such as {args.out / 'masks.json'}")
    _check_parent_writable(args.out, "--out")
    check_output_image(args.overlay, "--overlay")
    image = read_image(args)
    bundle, encoder, decoder = open_bundle(args.bundle, args.backend, **backend_options(args))
    predictor = Predictor(encoder, decoder, decoder_points=bundle.decoder_points)
    given = {k: getattr(args, k) for k in EVERYTHING_PARAMETERS if getattr(args, k) is not None}
    given.update(output_mode=args.output_mode, memory_budget_mb=args.memory_budget_mb)
    generator = (MaskGenerator.from_preset(predictor, args.preset, **given) if args.preset
                 else MaskGenerator(predictor, **given))
    on_batch, close = _batch_progress(not args.quiet)
    try:
        records = generator.generate(image, on_batch=on_batch)
    finally:
        close()
    parameters = {k: getattr(generator, k) for k in EVERYTHING_PARAMETERS}
    info = {"bundle": str(bundle.root), "weights": bundle.checkpoint_description, "preset": args.preset,
            "parameters": parameters, "seconds": {k: round(v, 3) for k, v in generator.timings.items()}}
    doc = coco_document(records, image.shape[:2], str(args.image), info)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc) + "\n")
    t = generator.timings
    print(f"{len(records)} masks ({t['encoder_s']:.2f} s encoder, {t['decoder_s']:.2f} s decoder, "
          f"{t['postprocess_s']:.2f} s post-processing); wrote {args.out}")
    if args.overlay is not None:
        _write_overlay(overlay_masks(image, records), args.overlay)
    _synthetic_note(bundle, "(and upstream's default thresholds keep few or none of them)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from pocketsam.runtime.bundle import load_bundle
    from pocketsam.runtime.loading import open_bundle
    from pocketsam.runtime.verify import verify_sessions

    if args.images is not None and args.reference == "probe":
        raise UsageError("--images needs --reference torch (the probe holds the reference for its own photo only)")
    if args.json is not None:
        _check_parent_writable(args.json, "--json")
    if args.structure:  # static checks of the files, no engine run (CoreML on any OS)
        from pocketsam.runtime.coreml_structure import structure_report

        lines, failed = structure_report(args.bundle)
        print("\n".join(lines))
        print("PASS" if not failed else f"FAIL: {failed} structure check(s) failed")
        return 0 if not failed else EXIT_PARITY
    bundle = load_bundle(args.bundle)
    if getattr(args, "compute_units", None) is not None and bundle.format != "coreml":
        raise UsageError(f"--compute-units is for CoreML bundles (this one is {bundle.format})")
    if args.reference == "probe":
        references = [(f"probe ({bundle.manifest.get('probe', {}).get('photo', 'photo')})", bundle.load_probe())]
    else:
        from pocketsam.runtime.image import named_images

        require_modules(("torch",), "verify --reference torch")
        from pocketsam.export.verify_torch import torch_references

        images = [] if args.images is None else list(named_images(args.images))
        references = torch_references(bundle, images, args.checkpoint)
    _, encoder, decoder = open_bundle(bundle, args.backend, **backend_options(args, bundle.format))
    from pocketsam.runtime.info import engine_label

    engine = f"{engine_label(encoder)} on {platform.machine()}"
    results = verify_sessions(references, encoder, decoder, bundle.encoder.precision, bundle.decoder.precision,
                              bundle.decoder_points, bundle.format)
    failed = 0
    print(f"{bundle.root}: {bundle.format}, encoder {bundle.encoder.precision}, decoder {bundle.decoder.precision}, "
          f"{bundle.checkpoint_description}")
    print(f"engine: {engine}")
    for label, rows in results:
        print(f"reference: {args.reference} — {label}")
        for row in rows:
            print("  " + row.line())
            failed += row.passed is False
    print("PASS" if not failed else f"FAIL: {failed} check(s) out of tolerance")
    if args.json is not None:
        args.json.write_text(json.dumps(
            {"bundle": str(bundle.root), "format": bundle.format, "encoder_precision": bundle.encoder.precision,
             "decoder_precision": bundle.decoder.precision, "engine": engine, "reference": args.reference,
             "passed": not failed,
             "results": [{"reference": label, "rows": [r.as_dict() for r in rows]} for label, rows in results]},
            indent=1) + "\n")
    return 0 if not failed else EXIT_PARITY


def cmd_audit_fp16(args: argparse.Namespace) -> int:
    if args.checkpoint is not None and args.seed is not None:
        raise UsageError("--checkpoint and --seed exclude each other (a seed only picks synthetic weights)")
    require_modules(("torch",), "pocketsam audit-fp16")
    from pocketsam.export.fp16_audit import run_audit_command

    text, ok = run_audit_command(args.checkpoint, args.seed or 0, args.config, args.images, args.limit,
                                 args.bundle, args.json)
    print(text)
    return 0 if ok else EXIT_PARITY


def cmd_info(args: argparse.Namespace) -> int:
    from pocketsam.runtime.bundle import load_bundle
    from pocketsam.runtime.info import describe

    bundle = load_bundle(args.bundle)
    print(json.dumps(bundle.manifest, indent=1) if args.json else describe(bundle))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from pocketsam.benchmarks.profile import profile_bundle

    prof = profile_bundle(args.bundle, args.part, args.threads, args.runs)
    print(prof.table(args.top))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(prof.as_dict(), indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def _bench_parts(text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in parts if p not in allowed]
    if unknown or not parts:
        raise UsageError(f"unknown part(s) {unknown or [text]} (choose from {', '.join(allowed)})")
    return parts


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _check_report_flags(args: argparse.Namespace) -> None:
    """Before any measurement: the report files can be written, and --plot has matplotlib."""
    for flag in ("json", "markdown", "plot"):
        if getattr(args, flag, None) is not None:
            _check_parent_writable(getattr(args, flag), f"--{flag}")
    if args.plot is not None:
        check_output_image(args.plot, "--plot")
        require_modules(("matplotlib",), "--plot")


def _write_reports(rows: list[dict], args: argparse.Namespace, runs: int | None, warmup: int | None) -> None:
    from pocketsam.benchmarks.report import method_note, short_table, to_markdown, write_json

    print(short_table(rows))
    if args.json is not None:
        write_json(rows, args.json)
        print(f"wrote {args.json}")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("## Method\n\n" + method_note(rows, runs, warmup) + "\n" + to_markdown(rows))
        print(f"wrote {args.markdown}")
    if args.plot is not None:
        from pocketsam.benchmarks.plot import plot_rows

        plot_rows(rows, args.plot)
        print(f"wrote {args.plot}")


def cmd_bench(args: argparse.Namespace) -> int:
    from pocketsam.benchmarks.schema import PARTS

    # `pocketsam bench merge A.json …` is `pocketsam bench-merge A.json …`, unless a bundle folder is named "merge".
    if args.bundles[0] == Path("merge") and not Path("merge").exists():
        bench_only = [f for f, given in (("--target", args.target != "local"), ("--serial", args.serial),
                                         ("--threads", args.threads is not None)) if given]
        if bench_only:
            raise UsageError(f"bench merge joins results files; {', '.join(bench_only)} belong(s) to a measurement")
        if len(args.bundles) < 2:
            raise UsageError("bench merge needs at least one results file (bench merge A.json B.json …)")
        args.results = args.bundles[1:]
        return cmd_bench_merge(args)
    _check_report_flags(args)
    args.reference_given = args.reference is not None
    if args.reference is None:
        args.reference = "none" if args.target == "android" else "torch"
    parts = _bench_parts(args.parts, PARTS)
    android_flags = [f for f, v in (("--serial", args.serial), ("--benchmark-model", args.benchmark_model),
                                    ("--perf-test", args.perf_test), ("--delegates", args.delegates),
                                    ("--nnapi-accelerator", args.nnapi_accelerator)) if v is not None]
    if args.target != "android" and android_flags:
        raise UsageError(f"{', '.join(android_flags)} only apply to --target android")
    if args.target != "apple" and args.compute_units is not None:
        raise UsageError("--compute-units only applies to --target apple")
    ssh_flags = [f for f, v in (("--ssh-config", args.ssh_config), ("--remote-pocketsam", args.remote_pocketsam),
                                ("--remote-cache", args.remote_cache)) if v is not None]
    if not args.target.startswith("ssh://") and ssh_flags:
        raise UsageError(f"{', '.join(ssh_flags)} only apply to --target ssh://…")
    if args.target.startswith("ssh://"):
        return _bench_ssh(args, parts)
    if args.target == "android":
        from pocketsam.benchmarks.android import AndroidConfig, bench_android

        if args.reference == "torch" and args.reference_given:
            raise UsageError("the android target has no PyTorch reference on the phone: use --reference none")
        bad = [p for p in parts if p not in ("encoder", "decoder")]
        if bad:
            raise UsageError(f"the android target times encoder and decoder only (not {', '.join(bad)})")
        cfg = AndroidConfig(serial=args.serial, adb=args.adb, benchmark_model=args.benchmark_model,
                            perf_test=args.perf_test, delegates=_csv(args.delegates) or ["cpu"],
                            nnapi_accelerator=args.nnapi_accelerator, threads=args.threads, warmup=args.warmup,
                            runs=args.runs)
        rows = bench_android(args.bundles, parts, cfg, progress=not args.quiet)
        if not rows:
            raise UsageError("no row was measured (see the warnings above)")
        _write_reports(rows, args, args.runs, args.warmup)
        return 0
    if args.target == "apple":
        from pocketsam.benchmarks.apple import COMPUTE_UNITS, bench_apple, check_macos

        check_macos()
    image = _bench_image(args)
    if args.target == "apple":

        rows = bench_apple(args.bundles, image, parts, _csv(args.compute_units) or COMPUTE_UNITS, args.warmup,
                           args.runs, args.reference, progress=not args.quiet, threads=args.threads)
    else:
        from pocketsam.benchmarks.local import bench_local

        providers = ort_providers(args)
        options = {"providers": providers} if providers is not None else {}
        rows = bench_local(args.bundles, image, parts, args.threads, args.warmup, args.runs,
                           reference=args.reference, progress=not args.quiet, backend=args.backend,
                           alone_memory=args.alone_memory, **options)
    _write_reports(rows, args, args.runs, args.warmup)
    return 0


def _bench_ssh(args: argparse.Namespace, parts: tuple[str, ...]) -> int:
    """`bench --target ssh://…`: the board runs its own `pocketsam bench --json`; its rows join this report."""
    from pocketsam import __version__
    from pocketsam.benchmarks.ssh import DEFAULT_REMOTE_CACHE, SshConfig, bench_ssh, parse_target

    if args.reference == "torch" and args.reference_given:
        raise UsageError("the ssh target runs the board's torch-free runtime: use --reference probe (default) or none")
    if args.image is not None:
        raise UsageError("--image: the board times on each bundle's probe photo (copied with the bundle)")
    if args.ssh_config is not None and not args.ssh_config.is_file():
        raise UsageError(f"--ssh-config {args.ssh_config}: no such file")
    reference = args.reference if args.reference_given else "probe"
    forwarded = ["--parts", ",".join(parts), "--warmup", str(args.warmup), "--runs", str(args.runs),
                 "--reference", reference]
    for flag, value in (("--threads", args.threads), ("--backend", args.backend), ("--providers", args.providers),
                        ("--trt-cache", args.trt_cache), ("--trt-fp32-ops", args.trt_fp32_ops)):
        if value is not None:
            forwarded += [flag, str(value)]
    if args.trt_fp16 is not None:
        forwarded.append("--trt-fp16" if args.trt_fp16 else "--no-trt-fp16")
    if args.trt_layer_norm_fp32:
        forwarded.append("--trt-layer-norm-fp32")
    cfg = SshConfig(parse_target(args.target), ssh_config=args.ssh_config,
                    remote_pocketsam=args.remote_pocketsam or "pocketsam",
                    remote_cache=args.remote_cache or DEFAULT_REMOTE_CACHE)
    rows = bench_ssh(cfg, args.bundles, forwarded, __version__, progress=not args.quiet)
    _write_reports(rows, args, args.runs, args.warmup)
    return 0


def target_arg(text: str) -> str:
    """local, android, apple, or ssh://[user@]host[:port]."""
    if text in ("local", "android", "apple"):
        return text
    if text.startswith("ssh://"):
        from pocketsam.benchmarks.ssh import parse_target

        try:
            parse_target(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from local, android, apple, "
                                     "ssh://[user@]host[:port])")


def add_provider_flags(parser: argparse.ArgumentParser, where: str = "") -> None:
    """--providers and TensorRT's options (onnxruntime; a Jetson's onnxruntime-gpu)."""
    parser.add_argument("--providers", metavar="LIST",
                        help=f"{where}onnxruntime execution providers in priority order, names or tensorrt, cuda, cpu "
                             "(default: CPU; bench: TensorRT, CUDA when present, then CPU); what a session really "
                             "holds is reported")
    parser.add_argument("--trt-fp16", action=argparse.BooleanOptionalAction, default=None,
                        help="TensorRT: let it run layers in fp16 (trt_fp16_enable; default off); check parity")
    parser.add_argument("--trt-cache", type=Path, metavar="DIR",
                        help="TensorRT: engine and timing cache folder (the first session builds, later ones load)")
    parser.add_argument("--trt-fp32-ops", metavar="OPS",
                        help="TensorRT: ONNX op types it must not take, run on CUDA/CPU in fp32 "
                             "(trt_op_types_to_exclude, e.g. LayerNormalization; docs/edge.md maps audit-fp16's "
                             "verdict onto this)")
    parser.add_argument("--trt-layer-norm-fp32", action="store_true",
                        help="TensorRT: keep decomposed LayerNorms' Pow/Reduce in fp32 (trt_layer_norm_fp32_fallback)")


def _bench_image(args: argparse.Namespace) -> np.ndarray:
    """The photo to time on: --image, else the PyTorch reference's default sample photo (`--reference torch`), else
    the first bundle's probe photo (the same photo, recorded in the bundle: no scikit-image needed on a device)."""
    if args.image is not None or args.reference == "torch":
        args.image = args.image or BENCH_PHOTO
        return read_image(args)
    from pocketsam.runtime.bundle import load_bundle

    return load_bundle(args.bundles[0]).load_probe()["image"]


def cmd_bench_merge(args: argparse.Namespace) -> int:
    from pocketsam.benchmarks.report import read_json

    _check_report_flags(args)
    try:
        rows = read_json(args.results)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not rows:
        raise UsageError("the results files hold no rows")
    _write_reports(rows, args, None, None)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    require_modules(("torch",), "pocketsam download-checkpoint (its layout check reads the file with torch)")
    from pocketsam.export.checkpoint import OFFICIAL_URL, download_checkpoint

    path = download_checkpoint(args.dest, url=args.url or OFFICIAL_URL, progress=not args.quiet)
    print(f"{path}: layout matches MobileSAM vit_t")
    return 0


# --- parser ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from pocketsam import __version__

    p = _Parser(prog="pocketsam", description="MobileSAM on phones and edge boards, with parity.")
    p.add_argument("--debug", action="store_true",
                   help=f"show the full traceback of a converter or internal failure (or set {DEBUG_ENV}=1)")
    p.add_argument("--version", action="version", version=f"pocketsam {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # The export registry's names only: importing it imports no converter and no torch.
    from pocketsam.benchmarks.schema import REFERENCES
    from pocketsam.export.formats import ALL_PRECISIONS, DECODER_GRAPHS, ENCODER_GRAPHS, FORMATS
    from pocketsam.runtime.backends.coreml import COMPUTE_UNITS
    from pocketsam.runtime.mask_generator import PRESETS, MaskGenerator
    from pocketsam.runtime.predictor import DEFAULT_MEMORY_BUDGET_MB

    positive, non_negative = count_arg(1), count_arg(0)
    max_pixels = dict(type=positive, default=DEFAULT_MAX_PIXELS, metavar="N",
                      help=f"refuse images over N pixels (default {DEFAULT_MAX_PIXELS}, pillow's decompression-bomb "
                           "limit); decoding takes ~7 bytes per pixel")

    e = sub.add_parser("export", help="export the encoder and decoder to a bundle folder")
    e.add_argument("--format", choices=sorted(FORMATS), default="onnx")
    e.add_argument("--encoder-precision", choices=ALL_PRECISIONS, default="fp32")
    e.add_argument("--decoder-precision", choices=ALL_PRECISIONS, default="fp32")
    e.add_argument("--checkpoint", type=Path, help="official mobile_sam.pt (default: synthetic weights)")
    e.add_argument("--seed", type=non_negative, help="seed of the synthetic weights (default 0)")
    e.add_argument("--config", choices=["vit_t", "tiny"], default="vit_t", help="tiny: a shrunk model for plumbing")
    e.add_argument("--calibration", type=Path, help="folder of images for int8-static (default: sample photos)")
    e.add_argument("--decoder-points", type=positive, metavar="N",
                   help="tflite: fixed prompt points of the decoder (default: spec.DECODER_FIXED_POINTS)")
    e.add_argument("--decoder-batch", type=positive, metavar="N",
                   help="tflite: also a batch-N decoder signature, for many prompts on one image")
    e.add_argument("--decoder-graph", choices=DECODER_GRAPHS,
                   help="fast: attention projections folded onto the prompt side, ~2x fewer multiply-adds "
                        "(default for onnx, tflite); reference: the upstream-shaped decoder (default for coreml); "
                        "docs/performance.md")
    e.add_argument("--encoder-graph", choices=ENCODER_GRAPHS,
                   help="fast: per-head attention projections and NHWC-friendly layout, fewer copies under XNNPACK "
                        "(default for tflite, onnx); fast-grouped: the same with q/k/v projections grouped over heads "
                        "(default for tflite int8-dynamic); reference: the upstream-shaped TinyViT (default for "
                        "coreml, tflite int8); docs/performance.md")
    e.add_argument("--encoder-pieces", action=argparse.BooleanOptionalAction, default=None,
                   help="onnx: run the encoder's largest activations (the 256x256 stem, the 16384-token MLPs) in "
                        "pieces by ONNX Loops: a Predictor's peak memory 330 -> 233 MiB, the encoder no slower in "
                        "onnxruntime (default: on; docs/performance.md)")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_export)

    pr = sub.add_parser("predict", help="segment an image with a bundle")
    pr.add_argument("bundle", type=Path)
    pr.add_argument("image", help="image file, or sample:NAME for a scikit-image sample photo (sample:chelsea)")
    pr.add_argument("--point", type=point_arg, action="append", default=[], metavar="X,Y[,LABEL]")
    pr.add_argument("--box", type=box_arg, metavar="X0,Y0,X1,Y1")
    pr.add_argument("--multimask", action=argparse.BooleanOptionalAction, default=True,
                    help="three candidate masks (default) or one; the best-scoring one is written")
    pr.add_argument("--out", type=Path, required=True, metavar="MASK.png")
    pr.add_argument("--overlay", type=Path, metavar="OVERLAY.png")
    pr.add_argument("--backend", help="engine (default: the bundle format's)")
    pr.add_argument("--threads", type=positive)
    pr.add_argument("--max-pixels", **max_pixels)
    pr.add_argument("--compute-units", choices=COMPUTE_UNITS,
                    help="coreml backend (macOS): where Core ML may run the model (default ALL)")
    add_provider_flags(pr)
    pr.set_defaults(func=cmd_predict)

    ev = sub.add_parser("everything", help="segment everything in an image (SamAutomaticMaskGenerator's grid of "
                        "point prompts): COCO-style JSON and an overlay")
    ev.add_argument("bundle", type=Path)
    ev.add_argument("image", help="image file, or sample:NAME for a scikit-image sample photo (sample:chelsea)")
    ev.add_argument("--out", type=Path, required=True, metavar="MASKS.json", help="COCO-style annotations (RLE)")
    ev.add_argument("--overlay", type=Path, metavar="ALL.png", help="every mask in its own colour over the photo")
    ev.add_argument("--preset", choices=sorted(PRESETS),
                    help="fast: every third point of the grid in each direction (121 prompts instead of 1024; time and "
                         "agreement with the full mode in docs/performance.md); flags given explicitly win")
    # upstream's defaults, as MaskGenerator declares them (a flag left out keeps its default)
    mg = {k: v.default for k, v in inspect.signature(MaskGenerator.__init__).parameters.items()}
    ev.add_argument("--points-per-side", type=int, metavar="N",
                    help=f"grid points per side (default {mg['points_per_side']})")
    ev.add_argument("--points-per-batch", type=int, metavar="N",
                    help=f"point prompts per batch (default {mg['points_per_batch']})")
    for name in ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset", "box_nms_thresh",
                 "crop_nms_thresh", "crop_overlap_ratio"):
        ev.add_argument(f"--{name.replace('_', '-')}", type=float, metavar="F", help=f"default {mg[name]:.4g}")
    for name in ("crop_n_layers", "crop_n_points_downscale_factor"):
        ev.add_argument(f"--{name.replace('_', '-')}", type=int, metavar="N", help=f"default {mg[name]}")
    ev.add_argument("--min-mask-region-area", type=int, metavar="PX",
                    help=f"fill holes and drop islands smaller than this (default {mg['min_mask_region_area']}: off)")
    ev.add_argument("--output-mode", choices=["coco_rle", "uncompressed_rle"], default="coco_rle",
                    help="segmentation encoding in the JSON (default coco_rle: pycocotools' compressed strings)")
    ev.add_argument("--memory-budget-mb", type=float, default=DEFAULT_MEMORY_BUDGET_MB, metavar="MIB",
                    help=f"working memory of decoder batches and post-processing (default {DEFAULT_MEMORY_BUDGET_MB:g})")
    ev.add_argument("--backend", help="engine (default: the bundle format's)")
    ev.add_argument("--threads", type=positive)
    ev.add_argument("--max-pixels", **max_pixels)
    ev.add_argument("--compute-units", choices=COMPUTE_UNITS,
                    help="coreml backend (macOS): where Core ML may run the model (default ALL)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_everything)

    v = sub.add_parser("verify", help="check a bundle's parity against the PyTorch reference")
    v.add_argument("bundle", type=Path)
    v.add_argument("--reference", choices=["probe", "torch"], default="probe",
                   help="probe: outputs recorded at export (no torch needed); torch: rerun the reference model")
    v.add_argument("--images", type=Path, help="with --reference torch: a folder of images to check on")
    v.add_argument("--checkpoint", type=Path, help="with --reference torch: the checkpoint the bundle came from")
    v.add_argument("--json", type=Path, metavar="REPORT.json")
    v.add_argument("--backend")
    v.add_argument("--threads", type=positive)
    v.add_argument("--compute-units", choices=COMPUTE_UNITS,
                   help="coreml backend (macOS): where Core ML may run the model (default ALL)")
    v.add_argument("--structure", action="store_true",
                   help="CoreML: check the packages' I/O against the spec, ops, weights and hashes without running "
                        "them (any OS)")
    add_provider_flags(v)
    v.set_defaults(func=cmd_verify)

    i = sub.add_parser("info", help="describe a bundle: manifest, inputs/outputs, sizes")
    i.add_argument("bundle", type=Path)
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    i.set_defaults(func=cmd_info)

    b = sub.add_parser("bench", help="time bundles against the PyTorch reference, interleaved (local, android, apple)",
                       description="Time bundles and the PyTorch fp32 reference interleaved (A B A B …) after a "
                                   "warm-up. `pocketsam bench merge A.json B.json …` is `pocketsam bench-merge`.")
    b.add_argument("bundles", type=Path, nargs="+", metavar="BUNDLE")
    b.add_argument("--parts", default="encoder,decoder,prompt,e2e",
                   help="comma-separated: encoder,decoder,prompt,e2e,everything (everything: a whole segment-everything "
                        "run with upstream's defaults, split into encoder / decoder batches / post-processing)")
    b.add_argument("--threads", type=positive, help="threads for every engine (default: each engine's own)")
    b.add_argument("--warmup", type=non_negative, default=2, help="untimed rounds of every case first (default 2)")
    b.add_argument("--runs", type=positive, default=10, help="timed runs of every case (default 10)")
    b.add_argument("--reference", choices=REFERENCES, default=None,
                   help="torch (default on local/apple): time the PyTorch fp32 reference too, speed-up + parity vs it; "
                        "probe: no torch, parity vs each bundle's probe.npz, no speed-up; none: timings only "
                        "(default on android)")
    b.add_argument("--target", type=target_arg, default="local", metavar="local|android|apple|ssh://USER@HOST[:PORT]",
                   help="where to run (default local); ssh://: a board with pocketsam installed runs its own bench "
                        "on the bundles, copied once by hash (docs/edge.md)")
    b.add_argument("--image", help=f"photo to time on (file or sample:NAME; default {BENCH_PHOTO}, read from the "
                                   "first bundle's probe unless --reference torch)")
    b.add_argument("--max-pixels", **max_pixels)
    b.add_argument("--backend", help="local: engine for every bundle (default: each format's)")
    add_provider_flags(b, "local, ssh: ")
    b.add_argument("--ssh-config", type=Path, metavar="FILE",
                   help="ssh: an OpenSSH client config (ssh -F: identity, known hosts; default ~/.ssh/config)")
    b.add_argument("--remote-pocketsam", metavar="CMD",
                   help="ssh: the pocketsam command on the board (default pocketsam; a venv's: ~/venv/bin/pocketsam)")
    b.add_argument("--remote-cache", metavar="DIR",
                   help="ssh: where bundles are kept on the board (default ~/.cache/pocketsam/bundles)")
    b.add_argument("--serial", help="android: adb serial of the phone")
    b.add_argument("--adb", default="adb", help="android: path of adb (default: adb on PATH)")
    b.add_argument("--benchmark-model", type=Path, help="android: TFLite benchmark_model binary for the phone")
    b.add_argument("--perf-test", type=Path, help="android: onnxruntime_perf_test binary for the phone")
    b.add_argument("--delegates", help="android: comma-separated cpu,gpu,nnapi (TFLite) / cpu,xnnpack,nnapi (ORT)")
    b.add_argument("--nnapi-accelerator", help="android: NNAPI accelerator name (e.g. qti-dsp)")
    b.add_argument("--compute-units", help=f"apple: comma-separated {','.join(COMPUTE_UNITS)} (default all)")
    b.add_argument("--json", type=Path, metavar="OUT.json")
    b.add_argument("--markdown", type=Path, metavar="OUT.md")
    b.add_argument("--plot", type=Path, metavar="OUT.png")
    b.add_argument("--alone-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="local: also measure each row's peak RSS in a fresh process holding only that contender and "
                        "part (default on; a few seconds per row)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_bench)

    pf = sub.add_parser("profile", help="where a part's time goes, per operator (tflite: isolated ops under "
                        "XNNPACK; onnx: onnxruntime's profiler)")
    pf.add_argument("bundle", type=Path)
    pf.add_argument("--part", choices=["encoder", "decoder"], default="encoder")
    pf.add_argument("--threads", type=positive, default=2)
    pf.add_argument("--runs", type=positive, default=5, help="timed runs per operator (default 5)")
    pf.add_argument("--top", type=positive, default=25, help="how many distinct operators to list (default 25)")
    pf.add_argument("--json", type=Path, metavar="PROFILE.json")
    pf.set_defaults(func=cmd_profile)

    bm = sub.add_parser("bench-merge", help="join bench results (JSON) of several devices into one table and plot")
    bm.add_argument("results", type=Path, nargs="+", metavar="RESULTS.json")
    bm.add_argument("--json", type=Path, metavar="OUT.json", help="the joined rows")
    bm.add_argument("--markdown", type=Path, metavar="OUT.md")
    bm.add_argument("--plot", type=Path, metavar="OUT.png")
    bm.set_defaults(func=cmd_bench_merge)

    a = sub.add_parser("audit-fp16", help="run the torch graphs with fp16 activations on photos: per-layer peaks "
                       "vs the fp16 range, embedding error and mask IoU against fp32")
    a.add_argument("--checkpoint", type=Path, help="official mobile_sam.pt (default: synthetic weights)")
    a.add_argument("--seed", type=non_negative, help="seed of the synthetic weights (default 0)")
    a.add_argument("--config", choices=["vit_t", "tiny"], default="vit_t")
    a.add_argument("--images", type=Path, help="folder of photos (default: scikit-image sample photos)")
    a.add_argument("--limit", type=positive, default=4, help="how many photos (default 4)")
    a.add_argument("--bundle", type=Path, help="a CoreML bundle: check its fp32 ops are the audit's verdict")
    a.add_argument("--json", type=Path, metavar="AUDIT.json")
    a.set_defaults(func=cmd_audit_fp16)

    d = sub.add_parser("download-checkpoint", help="fetch the official mobile_sam.pt and check its layout")
    d.add_argument("--dest", type=Path, help="folder (default: ~/.cache/pocketsam or $POCKETSAM_CACHE)")
    d.add_argument("--url", help=argparse.SUPPRESS)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_download)
    for command in sub.choices.values():  # --debug also after the command (SUPPRESS: the top level's stays if absent)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (e.g. "random weights, seed 0") as one plain line, not a source excerpt; what stdout holds so far is
    written first, so a note never lands inside a line of the report when both go to one terminal or file."""
    sys.stdout.flush()
    print(f"pocketsam: note: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    warnings.showwarning = _show_warning
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse printed usage or help: its exit code (2 for a mistake), returned like ours
        return int(e.code or 0)
    try:
        return int(args.func(args) or 0)
    except PocketSamError as e:
        print(f"pocketsam {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as e:  # an export-side package on a runtime-only install (require_modules missed it)
        if (e.name or "").split(".")[0] not in EXTRA_OF_MODULE:
            raise
        print(f"pocketsam {args.command}: error: {missing_extra_message(e.name, 'this command')}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a converter's or our own failure: not the user's mistake, so not exit 2
        if args.debug or os.environ.get(DEBUG_ENV):
            raise
        print(f"pocketsam {args.command}: {internal_failure(e)}", file=sys.stderr)
        return EXIT_INTERNAL


def internal_failure(e: Exception) -> str:
    """One line for a failure that is not a usage mistake, saying how to get the full traceback."""
    from pocketsam.export.core import ConversionError

    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    more = " (more in the traceback)" if "\n" in text else ""
    kind = "conversion failed" if isinstance(e, ConversionError) else f"internal error ({type(e).__name__})"
    return (f"{kind}: {first}{more}; rerun with --debug (or {DEBUG_ENV}=1) for the full traceback, and include "
            "it if you report this")


if __name__ == "__main__":
    sys.exit(main())
