"""LiteRT backend (`pip install pocketsam[tflite]`): ai-edge-litert's Interpreter, or tflite-runtime as a fallback.

Options:
- `threads`: CPU threads (0 or None: the engine's default).
- `xnnpack`: True (default) runs float and int8 kernels through the XNNPACK delegate the interpreter applies by
  default; False uses the plain builtin kernels (slower; useful to rule XNNPACK out when numbers look wrong).
- `delegates`: external delegates, each a path to a delegate `.so` (GPU, NNAPI, Hexagon, a vendor NPU) or a
  `(path, {option: value})` pair, loaded with `load_delegate`. None ship for Linux x86; on a device, pass the
  library the vendor provides. A delegate that cannot load is a one-line BackendError naming it.

Engines, first found wins (`find_engine`; `LiteRTSession.engine` / `.engine_version` say which one runs):
1. ai-edge-litert: >= 2.3 where it has wheels (x86-64 Linux, macOS, Windows); on aarch64 Linux (Raspberry Pi OS,
   Jetson) 1.4.0, the newest release with aarch64 wheels (pyproject's environment markers pick it).
2. tflite-runtime, with a warning: it stopped at 2.14 (2023), needs numpy < 2 and ships no flatbuffer schema (the
   `tflite` package reads the files then). Measured here (x86-64, docs/edge.md): fp32 and full-int8 bundles pass
   `verify`; an int8-dynamic *decoder* (hybrid CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED: int8 weights, float
   activations) computes wrong masks (mask IoU 0.24 against the reference, 0.99 on ai-edge-litert 1.4.0 and 2.3.0),
   so such a decoder is refused there with a BundleError; int8-dynamic encoders match.

Names: litert-torch names a signature's inputs after the keyword arguments it was traced with, so pocketsam's
files carry the spec's names already; files whose inputs are positional (`args_0`…, `output_0`…) are mapped by
position. Every signature's shapes and dtypes are checked against the spec when the file is opened.

Fixed shapes: LiteRT graphs have static shapes. The decoder's point count is fixed (`--decoder-points`); feeds with
fewer points are padded here with (0, 0) points labelled -1 (what `Predictor` does), more is an error that names
the export option. A decoder may hold a batched signature (`--decoder-batch N`): a batch of B prompts runs in
ceil(B / N) calls of it, the last one padded by repeating its first prompt; a batch of 1 uses the batch-1 signature.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import BackendError, BundleError, InvalidPromptError, MissingEngineError
from ..spec import GraphSpec
from ..tflite_ops import check_tflite_file
from ..transforms import pad_points

FALLBACK_LIMITS = (
    "tflite-runtime (2.14, the last release) needs numpy < 2 and computes int8-dynamic decoders wrong; install "
    "ai-edge-litert: pip install 'pocketsam[tflite]'"
)


@dataclass(frozen=True)
class Engine:
    """The TFLite interpreter package this process runs: its `interpreter` module, pip name and version."""

    interpreter: Any
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


# (pip name, interpreter module), in order of preference.
ENGINES = (("ai-edge-litert", "ai_edge_litert.interpreter"), ("tflite-runtime", "tflite_runtime.interpreter"))


def _version(package: str, module) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:  # a source build without metadata: the module's own attribute
        return str(getattr(module, "__version__", "unknown"))


def find_engine() -> Engine:
    """The first LiteRT engine that imports here (ENGINES' order); MissingEngineError naming the extra if none."""
    import importlib

    failures = []
    for name, module_name in ENGINES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            if getattr(e, "name", None) and module_name.startswith(str(e.name)):
                continue  # not installed
            failures.append(f"{name} cannot load ({e})")
            continue
        except Exception as e:  # tflite-runtime built against numpy 1.x raises on import under numpy 2
            failures.append(f"{name} cannot load ({type(e).__name__}: {e})")
            continue
        engine = Engine(module, name, _version(name, sys.modules[module_name.split(".")[0]]))
        if name == "tflite-runtime":
            warnings.warn(f"using {engine} because ai-edge-litert is not installed: {FALLBACK_LIMITS}", stacklevel=3)
        return engine
    why = "; ".join(failures) if failures else "neither ai-edge-litert nor tflite-runtime is installed"
    raise MissingEngineError(f"the litert backend needs ai-edge-litert ({why}): pip install 'pocketsam[tflite]'")


def _load_delegates(engine, delegates: Sequence[Any]) -> list:
    loaded = []
    for d in delegates:
        path, opts = (d, None) if isinstance(d, (str, Path)) else (d[0], d[1])
        try:
            loaded.append(engine.load_delegate(str(path), opts))
        except (ValueError, RuntimeError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BackendError(f"delegate {path} cannot be loaded on this machine ({first})") from None
    return loaded


def _dtype_name(dtype) -> str:
    return np.dtype(dtype).name


class _Signature:
    """One signature runner with its name mapping and fixed shapes (keyed by spec names)."""

    def __init__(self, runner, key: str, graph: GraphSpec, path: Path) -> None:
        self.runner = runner
        self.key = key
        inputs = runner.get_input_details()
        outputs = runner.get_output_details()
        self.in_names = self._map(path, key, "inputs", list(inputs), graph.input_names, "args_")
        self.out_names = self._map(path, key, "outputs", list(outputs), graph.output_names, "output_")
        self.shapes: dict[str, tuple[int, ...]] = {}
        for kind, details, mapping, specs in (
            ("input", inputs, self.in_names, graph.inputs),
            ("output", outputs, self.out_names, graph.outputs),
        ):
            for t in specs:
                d = details[mapping[t.name]]
                shape = tuple(int(x) for x in d["shape"])
                dtype = _dtype_name(d["dtype"])
                ok = len(shape) == len(t.shape) and all(isinstance(w, str) or w == g for w, g in zip(t.shape, shape))
                if not ok or dtype != t.dtype:
                    raise BundleError(
                        f"{path}: signature {key!r} {kind} {t.name} is {list(shape)} {dtype}, but the {graph.name} "
                        f"spec says {list(t.shape)} {t.dtype} (not a pocketsam graph, or another spec version)"
                    )
                self.shapes[t.name] = shape
        # Batch of the decoder's prompt axes (1 for the encoder).
        self.batch = self.shapes.get("point_labels", (1,))[0]

    @staticmethod
    def _map(path: Path, key: str, kind: str, got: list[str], want: list[str], positional: str) -> dict[str, str]:
        """{spec name: the file's name}: identical names, or litert-torch's positional names in spec order."""
        if sorted(got) == sorted(want):
            return {n: n for n in want}
        by_position = sorted((n for n in got if n.startswith(positional)), key=lambda n: int(n[len(positional):]))
        if len(by_position) == len(got) == len(want):
            return dict(zip(want, by_position))
        raise BundleError(
            f"{path}: signature {key!r} {kind} {sorted(got)} do not match the spec's {sorted(want)} "
            "(not a pocketsam graph, or exported under another spec version)"
        )

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.runner(**{self.in_names[n]: np.ascontiguousarray(a, dtype=np.float32) for n, a in feeds.items()})
        return {n: out[f] for n, f in self.out_names.items()}


def _xnnpack_applied(interpreter) -> bool | None:
    """Whether the execution plan holds delegate nodes once the interpreter is prepared (None if unknowable).

    XNNPACK can fail to start without an error (it needs pytorch's cpuinfo to initialize; a missing
    /sys/devices/system/cpu does that), and LiteRT then runs its builtin kernels, whose dynamic-range int8 results
    differ (docs/edge.md). `_get_ops_details` is private to both engines' Python API, hence the guards."""
    details = getattr(interpreter, "_get_ops_details", None)
    if details is None:
        return None
    try:
        interpreter.allocate_tensors()  # applies the default delegate (lazily applied otherwise)
        return any(op.get("op_name") == "DELEGATE" for op in details())
    except (RuntimeError, ValueError, TypeError):
        return None


class LiteRTSession:
    """A Session over a .tflite file's signatures, presenting the spec's names and shapes."""

    def __init__(self, interpreter, path: Path, graph: GraphSpec, engine: Engine, options: dict) -> None:
        self._interpreter = interpreter
        self.path = path
        self.graph = graph
        self.engine = engine.name  # "ai-edge-litert" or "tflite-runtime"
        self.engine_version = engine.version
        self.options = options
        self.input_names = graph.input_names
        self.output_names = graph.output_names
        self.xnnpack = _xnnpack_applied(interpreter)  # before any signature runner holds the interpreter's memory
        keys = list(interpreter.get_signature_list())
        if not keys:
            raise BundleError(f"{path}: the .tflite file has no signature (export it with pocketsam)")
        sigs = [_Signature(interpreter.get_signature_runner(k), k, graph, path) for k in keys]
        # One signature per batch size; the smallest first.
        self._by_batch = {s.batch: s for s in sorted(sigs, key=lambda s: -s.batch)}
        self.signatures = sorted(self._by_batch.values(), key=lambda s: s.batch)
        self.points = self.signatures[0].shapes.get("point_labels", (None, None))[-1]

    @property
    def batches(self) -> list[int]:
        return [s.batch for s in self.signatures]

    def describe_io(self) -> list[tuple[str, str, list, str]]:
        """(kind, name, shape, type) per input/output of every signature (the first one's names undecorated)."""
        rows = []
        for i, s in enumerate(self.signatures):
            tag = "" if i == 0 else f"[{s.key}]"
            for kind, names in (("input", self.input_names), ("output", self.output_names)):
                rows.extend((kind, f"{n}{tag}", list(s.shapes[n]), "float32") for n in names)
        return rows

    def operators(self):
        """The file's operators, per `pocketsam.runtime.tflite_ops.read_tflite`."""
        from ..tflite_ops import read_tflite

        return read_tflite(self.path)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise InvalidPromptError(f"{self.path.name}: missing input(s) {missing}")
        feeds = {n: np.asarray(feeds[n], dtype=np.float32) for n in self.input_names}
        if self.points is not None:
            feeds = dict(feeds)
            feeds["point_coords"], feeds["point_labels"] = pad_points(
                feeds["point_coords"], feeds["point_labels"], self.points, self.path.name)
            return self._run_batched(feeds)
        return self._run_one(self.signatures[0], feeds)

    def _run_one(self, sig: _Signature, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for n, a in feeds.items():
            if a.shape != sig.shapes[n]:
                raise InvalidPromptError(
                    f"{self.path.name}: input {n} has shape {list(a.shape)}, this LiteRT graph takes "
                    f"{list(sig.shapes[n])} (LiteRT graphs have fixed shapes)"
                )
        return {n: np.array(v) for n, v in sig(feeds).items()}

    def _run_batched(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = feeds["point_labels"].shape[0]
        if batch in self._by_batch:
            return self._run_one(self._by_batch[batch], feeds)
        sig = self.signatures[-1]  # the largest batch: chunks of it, the last padded
        per_prompt = [n for n in self.input_names if n != "image_embeddings"]
        outs: list[dict[str, np.ndarray]] = []
        for start in range(0, batch, sig.batch):
            stop = min(start + sig.batch, batch)
            if stop - start in self._by_batch:
                chunk_sig, pad = self._by_batch[stop - start], 0
            else:
                chunk_sig, pad = sig, sig.batch - (stop - start)
            chunk = dict(feeds)
            for n in per_prompt:
                part = feeds[n][start:stop]
                chunk[n] = np.concatenate([part, np.repeat(part[:1], pad, axis=0)]) if pad else part
            res = self._run_one(chunk_sig, chunk)
            outs.append({k: v[: stop - start] for k, v in res.items()})
        return {k: np.concatenate([o[k] for o in outs]) for k in self.output_names}


def open_session(
    path: Path,
    graph: GraphSpec,
    threads: int | None = None,
    xnnpack: bool = True,
    delegates: Sequence[Any] = (),
) -> LiteRTSession:
    """Load a .tflite file and check every signature's I/O against `graph`."""
    path = Path(path)
    check_tflite_file(path)
    engine = find_engine()
    if engine.name == "tflite-runtime" and graph.name == "decoder":
        from ..tflite_ops import read_tflite

        hybrid = read_tflite(path).by_compute().get("hybrid")
        if hybrid:
            raise BundleError(
                f"{path}: {engine} computes this dynamic-range int8 decoder wrong (hybrid {', '.join(sorted(hybrid))}; "
                "measured mask IoU 0.24 against the reference); install ai-edge-litert: pip install 'pocketsam[tflite]'"
            )
    loaded = _load_delegates(engine.interpreter, delegates or ())
    kwargs: dict[str, Any] = {"model_path": str(path), "experimental_delegates": loaded or None}
    if threads:
        kwargs["num_threads"] = int(threads)
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = engine.interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = engine.interpreter.Interpreter(**kwargs)
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = f"; {FALLBACK_LIMITS}" if engine.name == "tflite-runtime" else ""
        raise BundleError(f"{path}: {engine} cannot load this model ({first}){hint}") from None
    options = {"threads": threads, "xnnpack": xnnpack, "delegates": [str(d) for d in delegates or ()]}
    session = LiteRTSession(interpreter, path, graph, engine, options)
    if session.xnnpack is False and not loaded:
        from ..tflite_ops import read_tflite

        hybrid = read_tflite(path).by_compute().get("hybrid")
        if hybrid:  # measured: builtin hybrid kernels miss the int8-dynamic bounds (x86 and aarch64)
            why = "xnnpack=False" if not xnnpack else "XNNPACK did not start on this machine"
            warnings.warn(f"{path.name}: {why}, so {engine}'s builtin kernels run its dynamic-range int8 ops "
                          f"({', '.join(sorted(hybrid))}); they give other results than XNNPACK's (vit_t on aarch64: "
                          "e2e mask IoU 0.43): check with pocketsam verify", stacklevel=2)
    return session
