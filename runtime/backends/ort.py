"""ONNX Runtime backend (`pip install pocketsam[onnx]`; on a Jetson, NVIDIA's onnxruntime-gpu wheel instead).

Options: `threads` (intra-op threads; 0 lets ONNX Runtime choose), `providers` (execution providers in priority
order; default: CPU), `optimization` ("all", "extended", "basic", "disabled"), `flush_denormals` (default True: see
`open_session`).

`providers` items are a provider name (`CUDAExecutionProvider`, or the short `cuda`, `tensorrt`, `cpu`) or a
(name, {option: value}) pair, as onnxruntime takes them; `tensorrt_provider` builds TensorRT's pair (fp16 on/off,
an engine-cache folder, op types kept off TensorRT). A provider this onnxruntime does not have is a BackendError.
onnxruntime may still drop an accelerated provider when its libraries do not load (CUDA, TensorRT missing on the
machine): `OrtSession.providers` is what the session actually holds (`get_providers()`), a warning names any
requested provider that is not there, and bench rows report the held list, never the requested one.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from ..errors import BackendError, BundleError, MissingEngineError
from ..spec import GraphSpec
from ._io import check_io_names

_LEVELS = ("disabled", "basic", "extended", "all")

# Short names accepted wherever a provider is named (CLI `--providers tensorrt,cuda,cpu`).
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
TENSORRT = PROVIDER_ALIASES["tensorrt"]

Provider = Union[str, tuple[str, dict[str, Any]]]


def tensorrt_provider(
    fp16: bool = False,
    cache_dir: Path | str | None = None,
    exclude_ops: Sequence[str] = (),
    layer_norm_fp32: bool = False,
) -> tuple[str, dict[str, str]]:
    """TensorRT's (name, options) for `providers`: onnxruntime's `trt_*` provider options, as strings.

    fp16: `trt_fp16_enable` (TensorRT may then run any layer in half precision). cache_dir: `trt_engine_cache_enable`
    + `trt_engine_cache_path`, and the timing cache beside it (the first session of a model builds its engine, for
    minutes on a Jetson; later ones load it). exclude_ops: `trt_op_types_to_exclude` (onnxruntime >= 1.21), ONNX op
    types TensorRT must not take: they run on the next provider (CUDA, CPU) in fp32; this is how the fp16 audit's
    verdict is applied (docs/edge.md). layer_norm_fp32: `trt_layer_norm_fp32_fallback`, TensorRT's own rule that
    keeps the Pow + Reduce ops of a decomposed LayerNorm in fp32.
    """
    options = {"trt_fp16_enable": "True" if fp16 else "False"}
    if cache_dir is not None:
        folder = str(Path(cache_dir).expanduser().absolute())
        options.update(trt_engine_cache_enable="True", trt_engine_cache_path=folder,
                       trt_timing_cache_enable="True", trt_timing_cache_path=folder)
    if exclude_ops:
        options["trt_op_types_to_exclude"] = ",".join(exclude_ops)
    if layer_norm_fp32:
        options["trt_layer_norm_fp32_fallback"] = "True"
    return TENSORRT, options


def resolve_providers(providers: Sequence[Provider] | None, available: Sequence[str]) -> tuple[list[str], list[dict]]:
    """(names, options) for `InferenceSession`: aliases expanded, every name checked against `available`."""
    names, options = [], []
    for item in providers or ["CPUExecutionProvider"]:
        name, opts = (item, {}) if isinstance(item, str) else (item[0], dict(item[1]))
        names.append(PROVIDER_ALIASES.get(name.lower(), name))
        options.append({k: str(v) for k, v in opts.items()})
    missing = [n for n in names if n not in available]
    if missing:
        raise BackendError(f"execution provider(s) {missing} not in this onnxruntime (available: {list(available)}; "
                           "CUDA and TensorRT come with onnxruntime-gpu, on a Jetson NVIDIA's build of it)")
    if len(set(names)) != len(names):
        raise BackendError(f"execution providers {names} name one provider twice")
    return names, options


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise MissingEngineError(
            "the onnxruntime backend needs ONNX Runtime: pip install 'pocketsam[onnx]'"
        ) from None
    return onnxruntime


def providers_label(providers: Sequence[str], provider_options: dict[str, dict[str, str]]) -> str:
    """"A,B,C" from `get_providers()` and `get_provider_options()` (which gives booleans back as "0"/"1"), with
    TensorRT marked "(fp16)" or "(fp32)" by its `trt_fp16_enable`."""
    labels = []
    for p in providers:
        if p == TENSORRT:
            fp16 = provider_options.get(p, {}).get("trt_fp16_enable", "0").lower() in ("1", "true")
            p += "(fp16)" if fp16 else "(fp32)"
        labels.append(p)
    return ",".join(labels)


class OrtSession:
    """A Session over an `onnxruntime.InferenceSession`."""

    def __init__(self, session, path: Path) -> None:
        self._session = session
        self.path = path
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.providers: list[str] = list(session.get_providers())  # what the session holds, not what was asked
        self.provider_options: dict[str, dict[str, str]] = dict(session.get_provider_options())
        self.engine = "onnxruntime"
        self.engine_version = _import_ort().__version__

    @property
    def providers_label(self) -> str:
        """The held providers in priority order, TensorRT marked with its precision (bench rows' `delegate`)."""
        return providers_label(self.providers, self.provider_options)

    def describe_io(self) -> list[tuple[str, str, list, str]]:
        """(kind, name, shape, type) of every input and output, as ONNX Runtime reads them from the file."""
        rows = [("input", i.name, i.shape, i.type) for i in self._session.get_inputs()]
        return rows + [("output", o.name, o.shape, o.type) for o in self._session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._session.run(self.output_names, {k: feeds[k] for k in self.input_names})
        return dict(zip(self.output_names, outputs))


def session_options(threads: int = 0, optimization: str = "all", flush_denormals: bool = True):
    """The `onnxruntime.SessionOptions` pocketsam runs a graph with (`open_session`; the profiler uses the same)."""
    ort = _import_ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    if flush_denormals:
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    return options


def open_session(
    path: Path,
    graph: GraphSpec,
    threads: int = 0,
    providers: Sequence[Provider] | None = None,
    optimization: str = "all",
    flush_denormals: bool = True,
) -> OrtSession:
    """Load an .onnx file and check its I/O against `graph`.

    `flush_denormals`: treat subnormal floats (|x| < 1.2e-38) as zero, as XNNPACK (LiteRT) does by default. The
    decoder's softmax over 4096 image tokens yields subnormal probabilities, and x86 FMAs on subnormal operands
    take a slow microcode path (the decoder's gain: docs/performance.md section 6.1); outputs move by less than the smallest normal float times the weights.
    """
    ort = _import_ort()
    if optimization not in _LEVELS:
        raise BackendError(f"unknown optimization level {optimization!r} (choose from {', '.join(_LEVELS)})")
    names, provider_options = resolve_providers(providers, ort.get_available_providers())
    options = session_options(threads, optimization, flush_denormals)
    _use_shared_cpu_arena(ort, options)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=names,
                                       provider_options=provider_options)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types; all mean a bad file here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BundleError(f"{path}: ONNX Runtime cannot load this model ({first})") from None
    wrapped = OrtSession(session, path)
    check_io_names(path, graph, wrapped.input_names, wrapped.output_names)
    dropped = [n for n in names if n not in wrapped.providers]
    if dropped:  # onnxruntime falls back when a provider's libraries (CUDA, TensorRT) do not load
        warnings.warn(f"{path.name}: onnxruntime did not start {', '.join(dropped)} (its libraries did not load); "
                      f"this session runs on {', '.join(wrapped.providers)}", stacklevel=2)
    return wrapped


# --- memory: one CPU arena for every pocketsam session -------------------------------------------------------

_ARENA_LOCK = threading.Lock()
_ARENA_REGISTERED = False
# The shared arena's first region. One large region fragments less than onnxruntime's default of growing by
# doubling regions: the encoder's run peaked +179 MiB against +199 MiB (fp32 vit_t, 2 threads). Only the pages
# used count towards the resident size; the rest is address space.
SHARED_ARENA_INITIAL_BYTES = 256 * 2**20


def _use_shared_cpu_arena(ort, options) -> None:
    """Run the session's CPU tensors from one arena that every pocketsam session shares, without the memory pattern.

    Each onnxruntime session has its own arena by default, which keeps its peak for the session's lifetime, and
    with the memory pattern on it also keeps, beside it, the block the pattern planned from the first run. With one
    shared arena and no pattern the decoder's clicks and batches reuse the pages the encoder's activations left,
    and nothing is planned twice: a second image costs no more memory than the
    first, at the same speed (docs/performance.md section 8.1). An allocator another library registered for the CPU
    is used as it is.
    """
    global _ARENA_REGISTERED
    with _ARENA_LOCK:
        if not _ARENA_REGISTERED:
            # max memory 0 (no limit), extend strategy 0 (next power of two), dead bytes per chunk -1 (default)
            config = ort.OrtArenaCfg(0, 0, SHARED_ARENA_INITIAL_BYTES, -1)
            memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            try:
                ort.create_and_register_allocator(memory, config)
            except Exception:  # noqa: BLE001 - one is registered already (by the host application): use it
                pass
            _ARENA_REGISTERED = True
    options.enable_mem_pattern = False
    options.add_session_config_entry("session.use_env_allocators", "1")
