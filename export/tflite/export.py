"""TFLite export of the two graphs with litert-torch (the successor of ai-edge-torch), then ai-edge-quantizer.

Step by step:
1. the graph modules' forwards take and return tensors only (`pocketsam.export.graphs`); a thin wrapper takes them
   as keyword arguments and returns a dict, so litert-torch names the signature's inputs and outputs after the
   spec (`image`, `image_embeddings`, `point_coords`…) instead of `args_0`/`output_0`;
2. convert with fixed shapes (LiteRT has no dynamic point axis): the encoder 1x3x1024x1024; the decoder with
   `decoder_points` points (spec.DECODER_FIXED_POINTS by default) and batch 1, plus a second signature of batch
   `decoder_batch` in the same file when asked (weights are shared between signatures);
3. check the fp32 file against PyTorch on seeded inputs (the conversion must be exact to ~1e-5);
4. quantize with ai-edge-quantizer per the part's recipe (`recipes.py`, applied by `quantize.py`), calibrating the full-int8 recipe on
   real photos preprocessed exactly as the runtime does;
5. stamp pocketsam's metadata (spec version, part, weights id) into the file's TFLite metadata entries, as the ONNX
   export does into `metadata_props` (`pocketsam info` and `read_tflite(...).metadata` read them back).

Converting is the slow step (~1.5 min for the vit_t encoder on 2 cores). `cache_dir` keeps converted fp32 files
keyed by the weights, shapes and litert-torch version, so exporting several precisions converts once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import warnings
from importlib import metadata as _md
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pocketsam.runtime import spec
from pocketsam.runtime.backends.litert import open_session as open_litert
from pocketsam.runtime.errors import PocketSamError
from pocketsam.runtime.spec import GraphSpec
from pocketsam.runtime.tflite_ops import METADATA_PREFIX
from pocketsam.runtime.transforms import pad_points

from .. import decoder_rewrite
from ..calibration import decoder_calibration, encoder_calibration
from ..core import ConversionError, ExportError, ExportJob
from ..graphs import DecoderGraph, check_against_torch, dummy_inputs
from ..reference import TorchSession
from .quantize import quantize_tflite
from .recipes import recipe_for

# The default signature (batch 1). litert-torch's own default name, so tools that take "the" signature find it.
DEFAULT_SIGNATURE = "serving_default"

class _Named(torch.nn.Module):
    """Calls a graph module with the spec's inputs as keyword arguments and returns {output name: tensor}."""

    def __init__(self, module: torch.nn.Module, graph: GraphSpec) -> None:
        super().__init__()
        self.module = module
        self.graph = graph

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.module(*[inputs[n] for n in self.graph.input_names])
        out = (out,) if isinstance(out, torch.Tensor) else out
        return dict(zip(self.graph.output_names, out))


def signature_inputs(graph: GraphSpec, batch: int = 1, points: int = spec.DECODER_FIXED_POINTS,
                     seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded sample inputs of one fixed-shape signature, by spec name."""
    args = dummy_inputs(graph, seed=seed, batch=batch, num_points=points)
    return dict(zip(graph.input_names, args))


def _weights_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def convert(module: torch.nn.Module, graph: GraphSpec, out_path: Path, batches: tuple[int, ...] = (1,),
            points: int = spec.DECODER_FIXED_POINTS, cache_dir: Path | None = None) -> Path:
    """Convert `module` (forward takes graph.inputs in order) to an fp32 .tflite at `out_path`, one signature per
    batch size (the first is `serving_default`), and check it against PyTorch."""
    import litert_torch

    module = module.eval()
    key = None
    if cache_dir is not None:
        # repr(module): the module tree, so the fast and the reference decoder graphs of one model do not collide
        ident = f"{graph.name}|{batches}|{points}|{_md.version('litert-torch')}|{spec.SPEC_VERSION}|{module!r}|"
        key = hashlib.sha256((ident + _weights_digest(module)).encode()).hexdigest()[:24]
        cached = Path(cache_dir) / f"{graph.name}-{key}.tflite"
        if cached.exists():
            shutil.copyfile(cached, out_path)
            return out_path
    named = _Named(module, graph)
    try:
        with warnings.catch_warnings(), _quiet_converter():
            warnings.simplefilter("ignore")
            converter = None
            for b in batches:
                name = DEFAULT_SIGNATURE if b == batches[0] else f"batch_{b}"
                sample = signature_inputs(graph, b, points)
                converter = (litert_torch.signature(name, named, sample_kwargs=sample) if converter is None
                             else converter.signature(name, named, sample_kwargs=sample))
            edge = converter.convert()
            out_path.parent.mkdir(parents=True, exist_ok=True)
            edge.export(str(out_path))
    except (PocketSamError, ConversionError):
        raise
    except Exception as e:
        raise ExportError(f"litert-torch conversion of the {graph.name} failed: {e}") from e
    check_against_torch(module, graph, out_path, open_litert(out_path, graph).run,
                        [{"batch": b, "num_points": points} for b in batches])
    if key is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out_path, Path(cache_dir) / f"{graph.name}-{key}.tflite")
    return out_path


@contextlib.contextmanager
def _quiet_converter():
    """litert-torch prints a rich task log, and its MLIR passes log from C++ to fd 2: pocketsam's progress bar is
    the one shown. Failures still surface as the exception's message."""
    from litert_torch import progress

    was_quiet = progress.console.quiet
    progress.console.quiet = True
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            sys.stderr.flush()
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)
        progress.console.quiet = was_quiet


def stamp_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace the file's `pocketsam.*` metadata entries (TFLite Model.metadata: a name and a buffer each) with
    `metadata` plus the spec version, values as UTF-8 text. The model is unpacked with the LiteRT flatbuffer tools
    (which also inline weights stored after the flatbuffer) and packed again: ~1 s for the vit_t encoder."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(Path(path).read_bytes()))
    model.metadata = [m for m in (model.metadata or []) if not _md_name(m).startswith(METADATA_PREFIX)]
    for k, v in {"spec_version": spec.SPEC_VERSION, **metadata}.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(str(v).encode(), np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = k if k.startswith(METADATA_PREFIX) else METADATA_PREFIX + k
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    Path(path).write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))


def _md_name(entry: Any) -> str:
    return entry.name.decode() if isinstance(entry.name, bytes) else (entry.name or "")


def _options(job: ExportJob) -> tuple[int, int | None, Path | None]:
    points = job.options.get("decoder_points") or spec.DECODER_FIXED_POINTS
    batch = job.options.get("decoder_batch")
    cache = job.options.get("cache_dir")
    unknown = set(job.options) - {"decoder_points", "decoder_batch", "cache_dir"}
    if unknown:
        raise ExportError(f"tflite export has no option(s) {sorted(unknown)}")
    if int(points) != points or points < 1:
        raise ExportError(f"decoder_points must be a positive integer, got {points!r}")
    if batch is not None and (int(batch) != batch or batch < 2):
        raise ExportError(f"decoder_batch must be an integer >= 2 (batch 1 is always exported), got {batch!r}")
    return int(points), (int(batch) if batch is not None else None), (Path(cache) if cache else None)


def _calibration_feeds(part: str, job: ExportJob, fp32: dict[str, Path], points: int,
                       batches: tuple[int, ...]) -> dict[str, list[dict[str, np.ndarray]]]:
    """{signature key: feeds} for the full-int8 recipe, from the job's real photos."""
    encoder = open_litert(fp32["encoder"], spec.ENCODER)
    if part == "encoder":
        return {DEFAULT_SIGNATURE: encoder_calibration(job.calibration)}
    # The decoder sees real embeddings and seeded prompts of every kind; the PyTorch decoder records them with
    # their natural token count, padded here as the runtime pads them.
    recorded = decoder_calibration(encoder, TorchSession(DecoderGraph(job.model), spec.DECODER), job.calibration,
                                   seed=0)
    padded = [_pad(f, points) for f in recorded]
    out = {DEFAULT_SIGNATURE: padded}
    for b in batches[1:]:
        per_prompt = [n for n in spec.DECODER.input_names if n != "image_embeddings"]
        groups = [padded[i:i + b] for i in range(0, len(padded) - b + 1, b)
                  if all(np.array_equal(f["image_embeddings"], padded[i]["image_embeddings"])
                         for f in padded[i:i + b])]
        out[f"batch_{b}"] = [{"image_embeddings": g[0]["image_embeddings"],
                              **{n: np.concatenate([f[n] for f in g]) for n in per_prompt}} for g in groups]
    return out


def _pad(feed: dict[str, np.ndarray], points: int) -> dict[str, np.ndarray]:
    coords, labels = pad_points(feed["point_coords"], feed["point_labels"], points, "--decoder-points")
    return {**feed, "point_coords": coords, "point_labels": labels}


def export_tflite_parts(job: ExportJob) -> dict[str, dict[str, list]]:
    """Write encoder.tflite and decoder.tflite into job.out_dir in their precisions; returns each part's input
    shapes (the batch-1 signature's: all fixed)."""
    points, batch, cache = _options(job)
    batches = (1,) if batch is None else (1, batch)
    graphs = {
        # same_stride2: litert-torch writes a stride-2 conv's padding as a PAD op that copies the whole input
        "encoder": (job.encoder_module(same_stride2=True), spec.ENCODER, (1,)),
        # einsum: litert-torch turns the fast graph's `a @ k^T` into FULLY_CONNECTED with activation weights
        "decoder": (job.decoder_module(decoder_rewrite.LITERT), spec.DECODER, batches),
    }
    fp32: dict[str, Path] = {}
    for part, (module, graph, part_batches) in graphs.items():
        job.step(f"converting the {part} with litert-torch")
        fp32[part] = convert(module, graph, job.out_dir / f"{part}.fp32.tflite", part_batches, points, cache)
    for part, precision in job.precisions.items():
        job.step(f"{part}: {precision}")
        recipe = recipe_for(precision, part, job.decoder_graph)
        feeds = _calibration_feeds(part, job, fp32, points, graphs[part][2]) if recipe.calibrated else None
        # Stamped on the float file (~0.2 s; the quantized one takes ~15 s to repack): ai-edge-quantizer keeps the
        # model's metadata entries.
        stamp_metadata(fp32[part], {**job.metadata, "part": part, "precision": precision})
        quantize_tflite(fp32[part], job.out_dir / f"{part}.tflite", recipe, feeds)
    for path in fp32.values():
        path.unlink()
    shapes = {}
    for part, (_, graph, _) in graphs.items():
        shapes[part] = {t.name: list(t.concrete_shape(batch=1, num_points=points)) for t in graph.inputs}
    return shapes
