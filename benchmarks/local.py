"""The `local` target: every bundle and the PyTorch fp32 reference timed in this process, interleaved.

Parts (each a zero-argument callable over prepared inputs, so only the engine's work is timed):
- encoder: one encoder run on a preprocessed 1x3x1024x1024 photo.
- decoder: one decoder run, one click (the click + SAM's pad point).
- prompt: what one click costs an app with a cached embedding: decoder + post-processing to the original size.
  The reference here is what segment-anything's SamPredictor.predict pays: the eager decoder + torch
  `postprocess_masks` (bilinear to 1024², crop, bilinear to the original size).
- e2e: set_image + one click on a real photo.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pocketsam.runtime.bundle import Bundle, load_bundle
from pocketsam.runtime.loading import open_bundle
from pocketsam.runtime.predictor import Predictor
from pocketsam.runtime.session import Session
from pocketsam.runtime.transforms import preprocess
from pocketsam.runtime.verify import compare, judge

from .harness import Stats, device_info, interleaved, peak_rss_mb

PARTS = ("encoder", "decoder", "prompt", "e2e")


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


def _cases(c: Contender, image: np.ndarray, parts: tuple[str, ...]) -> dict[str, Callable[[], object]]:
    """Zero-argument callables timing each part of one contender."""
    x, _ = preprocess(image)
    predictor = Predictor(c.encoder, c.decoder, decoder_points=c.bundle.decoder_points if c.bundle else None)
    predictor.set_image(image)
    h, w = predictor.original_size
    click, label = np.array([[w * 0.5, h * 0.5]], np.float32), np.array([1], np.float32)
    feeds: dict[str, np.ndarray] = {}

    class _Capture:  # one decoder run through the Predictor gives exactly the feeds a real click makes
        input_names, output_names = c.decoder.input_names, c.decoder.output_names

        def run(self, f):
            feeds.update(f)
            return c.decoder.run(f)

    capture = Predictor(c.encoder, _Capture(), decoder_points=c.bundle.decoder_points if c.bundle else None)
    capture.set_image(image)
    capture.predict(click, label)

    def e2e() -> object:
        predictor.set_image(image)
        return predictor.predict(click, label)

    all_cases: dict[str, Callable[[], object]] = {
        "encoder": lambda: c.encoder.run({"image": x}),
        "decoder": lambda: c.decoder.run(feeds),
        "prompt": (c.prompt_fn(predictor) if c.prompt_fn else lambda: predictor.predict(click, label)),
        "e2e": e2e,
    }
    return {p: all_cases[p] for p in parts}


def bundle_contender(path: Path, threads: int | None) -> Contender:
    """Open a bundle with its default backend, timing the load."""
    t0 = time.perf_counter()
    options = {"threads": threads} if threads else {}
    bundle, enc, dec = open_bundle(load_bundle(path), **options)
    init = time.perf_counter() - t0
    name = f"{bundle.root.name}"
    return Contender(name, enc.__class__.__name__, {"encoder": bundle.encoder.precision,
                                                   "decoder": bundle.decoder.precision}, enc, dec, init, bundle)


def run_local(
    contenders: list[Contender],
    image: np.ndarray,
    parts: tuple[str, ...] = PARTS,
    warmup: int = 2,
    runs: int = 10,
    reference: str | None = None,
    progress: bool = True,
) -> list[dict[str, object]]:
    """Time every contender's parts interleaved; one JSON-able row per (contender, part).

    `reference` names the contender that is the PyTorch reference: every other row gets `speedup` (reference median
    / row median, measured in this same run) and the parity figures of `verify` against it.
    """
    from tqdm.auto import tqdm

    cases: dict[tuple[str, str], Callable[[], object]] = {}
    for c in contenders:
        for part, fn in _cases(c, image, parts).items():
            cases[(c.name, part)] = fn
    total = len(cases) * (warmup + runs)
    with tqdm(total=total, desc="bench", unit="call", disable=not progress) as bar:
        times = interleaved({f"{k[0]}|{k[1]}": fn for k, fn in cases.items()}, warmup, runs, on_step=bar.update)
    stats = {tuple(k.split("|")): Stats.of(v) for k, v in times.items()}
    device = device_info()
    ref = next((c for c in contenders if c.name == reference), None)
    parity: dict[str, list[dict]] = {}
    if ref is not None:
        from pocketsam.runtime.verify import record_reference

        probe = record_reference(image, ref.encoder, ref.decoder)
        for c in contenders:
            if c is ref:
                continue
            rows = judge(compare(probe, c.encoder, c.decoder, c.bundle.decoder_points if c.bundle else None),
                         c.precision["encoder"], c.precision["decoder"], c.bundle.format if c.bundle else "*")
            parity[c.name] = [r.as_dict() for r in rows]
    out = []
    for c in contenders:
        for part in parts:
            s = stats[(c.name, part)]
            row: dict[str, object] = {
                "target": "local",
                "name": c.name,
                "engine": c.engine,
                "part": part,
                "precision": c.precision.get(part, f"{c.precision['encoder']}/{c.precision['decoder']}"),
                "threads": None,
                "stats": s.as_dict(),
                "init_s": c.init_s,
                "model_bytes": (c.bundle.part(part).size_bytes if c.bundle and part in ("encoder", "decoder")
                                else None),
                "is_reference": c is ref,
                "speedup": (stats[(ref.name, part)].median_ms / s.median_ms) if ref is not None else None,
                "parity": _parity_for(parity.get(c.name), part),
                "peak_rss_mb": peak_rss_mb(),
                **device,
            }
            out.append(row)
    return out


def _parity_for(rows: list[dict] | None, part: str) -> dict[str, float] | None:
    """The parity figures relevant to a benchmark part (prompt/e2e read the decoder/e2e rows)."""
    if rows is None:
        return None
    wanted = {"encoder": "encoder", "decoder": "decoder", "prompt": "decoder", "e2e": "e2e"}[part]
    return {r["metric"]: r["value"] for r in rows if r["part"] == wanted}


REFERENCE_NAME = "pytorch-eager"


def reference_contender(bundle: Bundle | None, threads: int | None) -> Contender:
    """The PyTorch fp32 eager reference, from the same weights as `bundle` (or synthetic seed 0)."""
    import torch

    from pocketsam.export.model import build_mobile_sam
    from pocketsam.export.reference import reference_sessions, torch_click
    from pocketsam.export.verify_torch import model_for_bundle

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model = model_for_bundle(bundle) if bundle is not None else build_mobile_sam(seed=0)
    enc, dec = reference_sessions(model)
    init = time.perf_counter() - t0
    return Contender(REFERENCE_NAME, f"torch {torch.__version__}", {"encoder": "fp32", "decoder": "fp32"}, enc,
                     dec, init, None, prompt_fn=lambda predictor: torch_click(model, predictor))


def bench_local(
    bundles: list[Path],
    image: np.ndarray,
    parts: tuple[str, ...] = PARTS,
    threads: int | None = None,
    warmup: int = 2,
    runs: int = 10,
    reference: bool = True,
    progress: bool = True,
) -> list[dict[str, object]]:
    """Rows for the PyTorch reference (unless `reference=False`) and every bundle, timed interleaved here."""
    contenders = [bundle_contender(p, threads) for p in bundles]
    if reference:
        contenders.insert(0, reference_contender(contenders[0].bundle if contenders else None, threads))
    rows = run_local(contenders, image, parts, warmup, runs, REFERENCE_NAME if reference else None, progress)
    for r in rows:
        r["threads"] = threads
    return rows
