"""The `local` target: every bundle and the PyTorch fp32 reference timed in this process, interleaved.

Parts (each a zero-argument callable over prepared inputs, so only the engine's work is timed):
- encoder: one encoder run on a preprocessed 1x3x1024x1024 photo.
- decoder: one decoder run, one click (the click + SAM's pad point), an image's second (see prompt).
- prompt: what one click costs an app with a cached embedding: decoder + post-processing to the original size
  (a decoder with the image cache, `spec.DECODER_CACHED`, reads it: every click but an image's first).
  The reference here is what segment-anything's SamPredictor.predict pays: the eager decoder + torch
  `postprocess_masks` (bilinear to 1024², crop, bilinear to the original size).
- e2e: set_image + one click on a real photo (that click computes the image cache).
- everything: `MaskGenerator(predictor).generate(photo)` with upstream's default parameters (a 32 x 32 grid); the
  row's `breakdown` splits its time into encoder, decoder batches and post-processing. The reference runs the same
  generator over the PyTorch sessions (upstream's own generator is timed by benchmarks/everything_vs_upstream.py).
"""

from __future__ import annotations

import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pocketsam.runtime.bundle import Bundle, load_bundle
from pocketsam.runtime.errors import BundleError, MissingEngineError
from pocketsam.runtime.loading import open_bundle
from pocketsam.runtime.predictor import Predictor
from pocketsam.runtime.session import RecordingSession, Session
from pocketsam.runtime.transforms import preprocess
from pocketsam.runtime.verify import compare, judge

from .harness import MemoryProbe, Stats, device_info, engine_versions, interleaved, peak_rss_mb, rss_mb
from .schema import DEFAULT_PARTS, make_row

REFERENCE_NAME = "pytorch-eager"

# The package that carries each backend's version (the first one installed wins).
_ENGINE_PACKAGES = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "litert": ("ai-edge-litert", "tflite-runtime"),
    "coreml": ("coremltools",),
    "torch": ("torch",),
}

# ONNX Runtime execution providers tried before the CPU one, best first (Jetson: TensorRT, then CUDA).
ACCELERATED_ORT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


@dataclass
class Contender:
    """One column of the benchmark: a named pair of sessions (a bundle, or the PyTorch reference)."""

    name: str
    engine: str
    precision: dict[str, str]
    encoder: Session
    decoder: Session
    init_s: float
    bundle: Bundle | None = None
    prompt_fn: Callable[[Predictor], Callable[[], object]] | None = None  # overrides the `prompt` part
    engine_version: str | None = None
    delegate: str | None = None  # execution provider / delegate / compute unit actually used
    init_rss_delta_mb: float | None = None  # RSS this contender added to the process when it was opened
    threads: int | None = None
    recipe: dict[str, Any] | None = None  # how a fresh process opens it again (`memory.alone_peak_mb`); None: it cannot
    breakdowns: list[dict[str, float]] | None = None  # part "everything": each call's time split, in call order


def engine_version(engine: str) -> str | None:
    versions = engine_versions()
    return next((versions[p] for p in _ENGINE_PACKAGES.get(engine, (engine,)) if p in versions), None)


def accelerated_ort_providers() -> list[str]:
    """TensorRT and CUDA where this onnxruntime has them (Jetson, desktop GPUs), then the CPU provider."""
    try:
        import onnxruntime
    except ImportError:
        return ["CPUExecutionProvider"]
    available = onnxruntime.get_available_providers()
    return [p for p in ACCELERATED_ORT_PROVIDERS if p in available] + ["CPUExecutionProvider"]


def _cases(c: Contender, image: np.ndarray, parts: tuple[str, ...]) -> dict[str, Callable[[], object]]:
    """Zero-argument callables timing each part of one contender."""
    x, _ = preprocess(image)
    # Real clicks through a recording decoder give exactly the feeds the decoder case times; the recorder is then
    # taken out so the timed calls pay nothing for it (and the encoder runs once, not twice). Two clicks: a decoder
    # with the image cache computes it on an image's first click and reads it on every later one, the case timed.
    recorder = RecordingSession(c.decoder)
    predictor = Predictor(c.encoder, recorder, decoder_points=c.bundle.decoder_points if c.bundle else None)
    predictor.set_image(image)
    h, w = predictor.original_size
    click, label = np.array([[w * 0.5, h * 0.5]], np.float32), np.array([1], np.float32)
    predictor.predict(click, label)
    predictor.predict(click, label)
    feeds = recorder.feeds[-1]
    predictor.decoder = c.decoder

    # e2e on a Predictor of its own: its set_image must not drop the image cache the prompt case reads
    fresh = Predictor(c.encoder, c.decoder, decoder_points=predictor.decoder_points)

    def e2e() -> object:  # an image's first click: with the image cache, the one that computes it
        fresh.set_image(image)
        return fresh.predict(click, label)

    all_cases: dict[str, Callable[[], object]] = {
        "encoder": lambda: c.encoder.run({"image": x}),
        "decoder": lambda: c.decoder.run(feeds),
        "prompt": (c.prompt_fn(predictor) if c.prompt_fn else lambda: predictor.predict(click, label)),
        "e2e": e2e,
    }
    if "everything" in parts:  # its own Predictor: generate() sets and resets images
        all_cases["everything"] = _everything_case(c, image, predictor.decoder_points)
    return {p: all_cases[p] for p in parts}


def _everything_case(c: Contender, image: np.ndarray, decoder_points: int | None) -> Callable[[], object]:
    """One segment-everything run (upstream's defaults); each call's time split is kept in `c.breakdowns`."""
    from pocketsam.runtime.mask_generator import MaskGenerator

    generator = MaskGenerator(Predictor(c.encoder, c.decoder, decoder_points=decoder_points))
    batches = generator.predictor.decoder_batches
    if batches is not None:  # a fixed-batch decoder: its largest batch
        generator.points_per_batch = min(generator.points_per_batch, batches[-1])
    c.breakdowns = []

    def run() -> object:
        records = generator.generate(image)
        c.breakdowns.append({k.replace("_s", "_ms"): v * 1e3 for k, v in generator.timings.items()})
        return records

    return run


def bundle_contender(
    path: Path | Bundle,
    threads: int | None,
    backend: str | None = None,
    name: str | None = None,
    opener: Callable[..., tuple[Bundle, Session, Session]] = open_bundle,
    **options: Any,
) -> Contender:
    """Open a bundle (any format) with `backend` (default: the format's), timing the load and its RSS growth.

    ONNX bundles on onnxruntime get TensorRT / CUDA providers when this onnxruntime has them, unless `providers` is
    given. Other options go to the backend as they are (e.g. `compute_units` for coreml).
    """
    from pocketsam.runtime.backends import DEFAULT_BACKEND

    bundle = path if isinstance(path, Bundle) else load_bundle(path)
    given = dict(options)  # what a fresh process passes again (memory.alone_peak_mb)
    backend = backend or DEFAULT_BACKEND[bundle.format]
    if threads:
        options["threads"] = threads
    if backend != "onnxruntime":  # --providers names onnxruntime's; a TFLite bundle beside ONNX ones runs without
        options.pop("providers", None)
    elif not options.get("providers"):
        options["providers"] = accelerated_ort_providers()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    bundle, enc, dec = opener(bundle, backend, **options)
    init = time.perf_counter() - t0
    rss1 = rss_mb()
    delegate = None
    if getattr(enc, "providers_label", None):  # onnxruntime: the providers the session holds, in order
        delegate = enc.providers_label
    elif options.get("compute_units"):
        delegate = str(options["compute_units"])
    elif options.get("delegate"):
        delegate = str(options["delegate"])
    # The engine that runs, as the session names it (LiteRT: ai-edge-litert or its fallback tflite-runtime).
    engine = getattr(enc, "engine", None) or backend
    # How a fresh process opens the same contender (its peak RSS alone); none when a custom opener made it.
    recipe = {"kind": "bundle", "name": name or bundle.root.name, "bundle": str(bundle.root), "threads": threads,
              "backend": backend, "options": given} if opener is open_bundle else None
    return Contender(
        name or bundle.root.name, engine,
        {"encoder": bundle.encoder.precision, "decoder": bundle.decoder.precision}, enc, dec, init, bundle,
        engine_version=getattr(enc, "engine_version", None) or engine_version(backend), delegate=delegate,
        init_rss_delta_mb=None if rss0 is None or rss1 is None else rss1 - rss0, threads=threads, recipe=recipe,
    )


def _progress(total: int, enabled: bool, desc: str = "bench"):
    """A tqdm bar (a no-op object where tqdm is not installed or progress is off)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        enabled = False
    if not enabled:
        class _Quiet:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def update(self, n=1):
                pass

        return _Quiet()
    return tqdm(total=total, desc=desc, unit="call")


def _parity_rows(contenders: list[Contender], ref: Contender | None, reference: str | None,
                 image: np.ndarray) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """{contender: verify rows} against the torch reference on `image`, or against each bundle's own probe."""
    parity: dict[str, list[dict]] = {}
    notes: dict[str, str] = {}
    probes: dict[int | None, dict] = {}  # torch references, by the decoder's fixed point count

    def torch_probe(points: int | None) -> dict:
        # A fixed-shape decoder pads every prompt; the reference gets the same padding, so parity measures the
        # conversion, not the padding (as the probe recorded at export does).
        from pocketsam.runtime.verify import record_reference

        if points not in probes:
            probes[points] = record_reference(image, ref.encoder, ref.decoder, decoder_points=points)
        return probes[points]

    for c in contenders:
        if c is ref or reference not in ("torch", "probe"):
            continue
        recorded = None
        if reference == "torch" and ref is not None:
            recorded = torch_probe(c.bundle.decoder_points if c.bundle else None)
        if reference == "probe":
            try:
                if c.bundle is None:
                    raise BundleError(f"{c.name} is not a bundle: it has no probe")
                recorded = c.bundle.load_probe()
            except BundleError as e:
                notes[c.name] = f"no parity: {e}"
                continue
        if recorded is None:  # "torch" asked for, but no reference contender ran
            notes[c.name] = "no parity: no PyTorch reference in this run"
            continue
        points, fmt = (c.bundle.decoder_points, c.bundle.format) if c.bundle else (None, "*")
        rows = judge(compare(recorded, c.encoder, c.decoder, points), c.precision["encoder"],
                     c.precision["decoder"], fmt)
        parity[c.name] = [r.as_dict() for r in rows]
    return parity, notes


def run_local(
    contenders: list[Contender],
    image: np.ndarray,
    parts: tuple[str, ...] = DEFAULT_PARTS,
    warmup: int = 2,
    runs: int = 10,
    reference: str | None = None,
    progress: bool = True,
    target: str = "local",
    reference_name: str = REFERENCE_NAME,
    alone_memory: bool = True,
) -> list[dict[str, object]]:
    """Time every contender's parts interleaved; one schema row per (contender, part).

    `alone_memory`: also measure each row's peak RSS in a fresh process that holds only that contender and runs
    only that part (`memory.alone_peak_mb`; contenders without a recipe, such as test fakes, get None).

    `reference`: "torch" (the contender named `reference_name` is the PyTorch reference: rows get a speed-up measured
    in this run and parity against it on `image`), "probe" (parity against each bundle's recorded probe; no
    speed-up) or None.
    """
    if reference not in (None, "none", "torch", "probe"):
        raise ValueError(f"unknown reference {reference!r}")
    device = device_info()  # before the run: the load average is the one the run started under
    cases: dict[str, Callable[[], object]] = {}
    for c in contenders:
        for part, fn in _cases(c, image, parts).items():
            cases[f"{c.name}|{part}"] = fn
    memory = MemoryProbe()
    with _progress(len(cases) * (warmup + runs), progress) as bar:
        times = interleaved(cases, warmup, runs, on_step=bar.update, memory=memory)
    stats = {tuple(k.split("|")): Stats.of(v) for k, v in times.items()}
    ref = next((c for c in contenders if c.name == reference_name), None) if reference == "torch" else None
    parity, notes = _parity_rows(contenders, ref, reference, image)
    process_peak = peak_rss_mb()
    alone = _alone_peaks(contenders, image, parts, alone_memory, progress)
    out = []
    for c in contenders:
        for part in parts:
            s = stats[(c.name, part)]
            key = f"{c.name}|{part}"
            if memory.available:
                mem = {"kind": "process-rss", "init_delta_mb": c.init_rss_delta_mb,
                       "peak_mb": memory.peak_mb.get(key), "call_delta_mb": memory.call_delta_mb.get(key)}
            else:
                mem = {"kind": "process-peak", "init_delta_mb": c.init_rss_delta_mb, "peak_mb": process_peak,
                       "call_delta_mb": None}
            mem["alone_peak_mb"] = alone.get(key)
            is_ref = c is ref
            breakdown = None
            if part == "everything" and c.breakdowns:
                timed = c.breakdowns[-runs:]  # the warm-up calls come first
                breakdown = {k: float(np.median([b[k] for b in timed])) for k in timed[0]}
            out.append(make_row(
                target=target,
                name=c.name,
                engine=c.engine,
                engine_version=c.engine_version,
                delegate=c.delegate,
                part=part,
                format=c.bundle.format if c.bundle else "torch",
                precision=c.precision.get(part, f"{c.precision['encoder']}/{c.precision['decoder']}"),
                threads=c.threads,
                stats=s.as_dict(),
                init_s=c.init_s,
                memory=mem,
                model_bytes=(c.bundle.part(part).size_bytes if c.bundle and part in ("encoder", "decoder")
                             else None),
                is_reference=is_ref,
                reference=None if reference in (None, "none") else reference,
                speedup=(stats[(ref.name, part)].median_ms / s.median_ms) if ref is not None else None,
                parity=_parity_for(parity.get(c.name), part),
                note=notes.get(c.name),
                breakdown=breakdown,
                **device,
            ))
    return out


def _alone_peaks(contenders: list[Contender], image: np.ndarray, parts: tuple[str, ...], enabled: bool,
                 progress: bool) -> dict[str, float | None]:
    """{"contender|part": peak RSS MiB of a fresh process with that contender and part alone}."""
    from .memory import alone_peak_mb

    jobs = [(c, p) for c in contenders if c.recipe is not None for p in parts] if enabled else []
    peaks: dict[str, float | None] = {}
    with _progress(len(jobs), progress, "memory") as bar:
        for c, part in jobs:
            try:
                peaks[f"{c.name}|{part}"] = alone_peak_mb(c.recipe, image, (part,))  # type: ignore[arg-type]
            except (RuntimeError, subprocess.TimeoutExpired) as e:  # the timings stand without it
                warnings.warn(f"peak RSS alone not measured: {e}", stacklevel=2)
                peaks[f"{c.name}|{part}"] = None
            bar.update()
    return peaks


def _parity_for(rows: list[dict] | None, part: str) -> dict[str, float] | None:
    """The parity figures relevant to a benchmark part (prompt/e2e read the decoder/e2e rows)."""
    if rows is None:
        return None
    wanted = {"encoder": "encoder", "decoder": "decoder", "prompt": "decoder", "e2e": "e2e", "everything": "e2e"}[part]
    return {r["metric"]: r["value"] for r in rows if r["part"] == wanted}


def reference_contender(bundle: Bundle | None, threads: int | None) -> Contender:
    """The PyTorch fp32 eager reference, from the same weights as `bundle` (or synthetic seed 0)."""
    try:
        import torch
    except ImportError:
        raise MissingEngineError(
            "--reference torch needs PyTorch (pip install 'pocketsam[export]'); on a device without torch use "
            "--reference probe (parity from each bundle's probe.npz, no speed-up column)"
        ) from None

    from pocketsam.export.model import build_mobile_sam
    from pocketsam.export.reference import reference_sessions, torch_click
    from pocketsam.export.verify_torch import model_for_bundle

    if threads:
        torch.set_num_threads(threads)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    model = model_for_bundle(bundle) if bundle is not None else build_mobile_sam(seed=0)
    enc, dec = reference_sessions(model)
    init = time.perf_counter() - t0
    rss1 = rss_mb()
    return Contender(REFERENCE_NAME, "torch", {"encoder": "fp32", "decoder": "fp32"}, enc, dec, init, None,
                     prompt_fn=lambda predictor: torch_click(model, predictor), engine_version=torch.__version__,
                     delegate="eager", init_rss_delta_mb=None if rss0 is None or rss1 is None else rss1 - rss0,
                     threads=threads, recipe={"kind": "reference", "name": REFERENCE_NAME, "threads": threads,
                                              "bundle": str(bundle.root) if bundle is not None else None})


def bench_local(
    bundles: list[Path],
    image: np.ndarray,
    parts: tuple[str, ...] = DEFAULT_PARTS,
    threads: int | None = None,
    warmup: int = 2,
    runs: int = 10,
    reference: str | bool = "torch",
    progress: bool = True,
    backend: str | None = None,
    alone_memory: bool = True,
    **options: Any,
) -> list[dict[str, object]]:
    """Rows for the PyTorch reference (reference="torch") and every bundle, timed interleaved in this process
    (and, with `alone_memory`, each row's peak RSS measured in a process of its own: `run_local`).

    reference="probe": no torch needed; parity from each bundle's probe, speed-up left empty. "none": timings only.
    """
    if isinstance(reference, bool):
        reference = "torch" if reference else "none"
    _require_torch_if(reference, threads)
    contenders = [bundle_contender(p, threads, backend, **dict(options)) for p in bundles]
    return bench_contenders(contenders, image, parts, threads, warmup, runs, reference, progress,
                            alone_memory=alone_memory)


def _require_torch_if(reference: str, threads: int | None) -> None:
    """Fail before opening anything when the torch reference is asked for and torch is missing."""
    if reference == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            reference_contender(None, threads)  # raises the clear MissingEngineError


def bench_contenders(
    contenders: list[Contender],
    image: np.ndarray,
    parts: tuple[str, ...],
    threads: int | None,
    warmup: int,
    runs: int,
    reference: str,
    progress: bool,
    target: str = "local",
    alone_memory: bool = True,
) -> list[dict[str, object]]:
    """Add the torch reference (reference="torch"), make names unique, time everything interleaved."""
    _require_torch_if(reference, threads)
    seen: dict[str, int] = {}
    for c in contenders:  # two bundles called "fp32" in different folders stay two columns
        if c.name in seen:
            seen[c.name] += 1
            c.name = f"{c.name}#{seen[c.name]}"
        else:
            seen[c.name] = 1
    if reference == "torch":
        contenders = [reference_contender(contenders[0].bundle if contenders else None, threads)] + contenders
    return run_local(contenders, image, parts, warmup, runs, reference, progress, target=target,
                     alone_memory=alone_memory)
