"""The benchmark row: one JSON object per (device, target, contender, part). Every target writes these; reports,
plots and `bench-merge` read only these.

A results file is `{"schema": SCHEMA_VERSION, "rows": [row, ...]}` (a bare list of rows, the first format, is still
read). A row:

identity
    schema (int), target ("local" | "android" | "apple" | "ssh"), name (contender: bundle folder, "pytorch-eager", or
    "<bundle>@<compute unit>"), engine (the package that ran: "onnxruntime", "ai-edge-litert", "tflite-runtime",
    "coreml", "torch", "benchmark_model", "onnxruntime_perf_test"; rows written before this held "litert" for both
    LiteRT engines), engine_version, delegate (execution provider / delegate / compute unit, or None; onnxruntime:
    the providers its session held, in order, e.g. "TensorrtExecutionProvider(fp16),CUDAExecutionProvider,…"),
    part ("encoder" | "decoder" | "prompt" | "e2e" | "everything"), precision, threads (None: the engine's
    default), format.
timing
    stats: {runs, median_ms, p90_ms, min_ms, max_ms, mean_ms} — a value is None where the tool does not report it
    (TFLite's benchmark_model prints no p90; it is never estimated). init_s: seconds to load the contender (both
    graphs for local; the tool's own "Init" / "Session creation" for android). breakdown (part "everything"):
    {"encoder_ms", "decoder_ms", "postprocess_ms"}, medians over the timed runs of where one run's time went.
memory (see `MEMORY_KINDS`; each figure says what it is)
    memory: {"kind": ..., "init_delta_mb": ..., "peak_mb": ..., "call_delta_mb": ..., "alone_peak_mb": ...}
    alone_peak_mb (local target): peak RSS of a fresh process that opened only this row's contender and ran only
    this part (`pocketsam.benchmarks.memory`), the per-contender figure; None where not measured.
size
    model_bytes: the part's file size (encoder/decoder rows), else None.
comparison
    is_reference (bool), reference ("torch" | "probe" | None: what parity and speed-up were measured against),
    speedup (reference median / row median, measured in the same run; None when there is no torch reference in
    the same run: never invented), parity ({metric: value} from `pocketsam.runtime.verify` for the row's part, or
    None).
device (from `harness.device_info`, or the phone's own for android)
    device, cpu, cores, isa, os, machine, python, engines ({package: version}), git, time, load ([1, 5, 15] min
    load average when the run started).
"""

from __future__ import annotations

from typing import Any, Iterable

SCHEMA_VERSION = 1

PARTS = ("encoder", "decoder", "prompt", "e2e", "everything")
DEFAULT_PARTS = PARTS[:4]  # "everything" (a whole segment-everything run: seconds per call) only when asked for
TARGETS = ("local", "android", "apple", "ssh")
REFERENCES = ("torch", "probe", "none")  # what a row's speed-up and parity are measured against (`bench --reference`)

# What a row's `memory` figures mean; the kind travels with the numbers so a table never mixes them silently.
MEMORY_KINDS = {
    # local/apple: one process runs every contender, so per-contender peak RSS does not exist as such. We report
    # the RSS the contender added when it was opened (init_delta_mb), the process's peak RSS while this row's calls
    # ran (peak_mb, Linux VmHWM reset before each call through /proc/self/clear_refs; it includes every contender
    # already resident), and the largest rise above the pre-call RSS during one call (call_delta_mb: the part's
    # transient working memory).
    "process-rss": "RSS of this process: opening delta, peak while the row's calls ran, largest rise in one call",
    # Where VmHWM cannot be reset (macOS, old kernels): the process's peak RSS so far, at the end of the run.
    "process-peak": "peak RSS of the whole benchmark process at the end of the run (not per row)",
    # benchmark_model: "Memory footprint delta from the start of the tool (MB): init=… overall=…" (or the older
    # "Peak memory footprint (MB): init=… overall=…").
    "tflite-footprint": "benchmark_model's memory footprint delta from the tool's start: init and overall, MB",
    # onnxruntime_perf_test: "Peak working set size: N bytes" (the process's peak RSS).
    "ort-peak-working-set": "onnxruntime_perf_test's peak working set of its process",
}

_STATS_KEYS = ("runs", "median_ms", "p90_ms", "min_ms", "max_ms", "mean_ms")
_REQUIRED = {
    "schema": int,
    "target": str,
    "name": str,
    "engine": str,
    "part": str,
    "precision": str,
    "stats": dict,
    "is_reference": bool,
    "device": str,
    "time": str,
}
_OPTIONAL_KEYS = (
    "engine_version", "delegate", "threads", "format", "init_s", "memory", "model_bytes", "reference", "speedup",
    "parity", "cpu", "cores", "isa", "os", "machine", "python", "engines", "git", "load", "note", "breakdown",
)


def empty_stats() -> dict[str, Any]:
    return {k: None for k in _STATS_KEYS}


def make_row(**fields: Any) -> dict[str, Any]:
    """A row with every optional key present (None where unknown), in a stable key order; validated."""
    row: dict[str, Any] = {"schema": SCHEMA_VERSION}
    for key in list(_REQUIRED) + list(_OPTIONAL_KEYS):
        if key != "schema":
            row[key] = fields.pop(key, None)
    if fields:
        raise ValueError(f"unknown row field(s): {sorted(fields)}")
    stats = empty_stats()
    stats.update(row["stats"] or {})
    row["stats"] = stats
    validate_row(row)
    return row


def validate_row(row: dict[str, Any]) -> None:
    """Raise ValueError naming the first problem of a row."""
    for key, typ in _REQUIRED.items():
        if key not in row:
            raise ValueError(f"row lacks {key!r}")
        if not isinstance(row[key], typ):
            raise ValueError(f"row[{key!r}] is {type(row[key]).__name__}, expected {typ.__name__}")
    if row["schema"] != SCHEMA_VERSION:
        raise ValueError(f"row schema {row['schema']} is not {SCHEMA_VERSION}")
    if row["target"] not in TARGETS:
        raise ValueError(f"unknown target {row['target']!r}")
    if row["part"] not in PARTS:
        raise ValueError(f"unknown part {row['part']!r}")
    missing = [k for k in _STATS_KEYS if k not in row["stats"]]
    if missing:
        raise ValueError(f"row stats lack {missing}")
    for k in _STATS_KEYS[1:]:
        v = row["stats"][k]
        if v is not None and not (isinstance(v, (int, float)) and v >= 0):
            raise ValueError(f"stats[{k!r}] = {v!r} is not a non-negative number or None")
    if row.get("speedup") is not None and row.get("reference") != "torch":
        raise ValueError("a speed-up needs the torch reference measured in the same run")
    mem = row.get("memory")
    if mem is not None and mem.get("kind") not in MEMORY_KINDS:
        raise ValueError(f"unknown memory kind {mem.get('kind')!r}")


def document(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    rows = list(rows)
    for r in rows:
        validate_row(r)
    return {"schema": SCHEMA_VERSION, "rows": rows}


def rows_of(doc: Any) -> list[dict[str, Any]]:
    """The rows of a results document (or of a bare list of rows); each validated."""
    rows = doc.get("rows") if isinstance(doc, dict) else doc
    if not isinstance(rows, list):
        raise ValueError("a results file holds {'schema': N, 'rows': [...]} or a list of rows")
    for r in rows:
        validate_row(r)
    return rows
