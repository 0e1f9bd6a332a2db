"""Benchmark reports: JSON rows in, Markdown tables and plots out. Rows are the data; tables are generated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from .harness import SETTLE_S
from .schema import MEMORY_KINDS, document, rows_of


def write_json(rows: list[dict], path: Path) -> None:
    Path(path).write_text(json.dumps(document(rows), indent=1) + "\n")


def read_json(paths: Iterable[Path]) -> list[dict]:
    """Rows of one or more results files (each validated against the schema)."""
    rows: list[dict] = []
    for p in paths:
        try:
            doc = json.loads(Path(p).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: not a readable results file ({e})") from None
        try:
            rows.extend(rows_of(doc))
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from None
    return rows


def _fmt(v: object, spec: str) -> str:
    return "" if v is None else format(v, spec)


def device_label(r: dict) -> str:
    """A short name for where a row ran: the CPU model (local/apple) or the phone's model and SoC (android)."""
    return str(r.get("cpu") or r.get("device") or "?")


def contender_label(r: dict) -> str:
    eng = r["engine"] + (f" {r['engine_version']}" if r.get("engine_version") else "")
    return f"{r['name']} ({eng}{', ' + r['delegate'] if r.get('delegate') else ''})"


def _speedup(r: dict) -> str:
    if r.get("is_reference"):
        return "ref"
    return f"{r['speedup']:.2f}×" if r.get("speedup") else ""


def _memory(r: dict) -> str:
    m = r.get("memory") or {}
    kind = m.get("kind")
    if kind == "process-rss":
        return f"+{_fmt(m.get('init_delta_mb'), '.0f')} / {_fmt(m.get('peak_mb'), '.0f')}"
    if kind == "process-peak":
        return f"+{_fmt(m.get('init_delta_mb'), '.0f')} / {_fmt(m.get('peak_mb'), '.0f')}*"
    if kind in ("tflite-footprint", "ort-peak-working-set"):
        return _fmt(m.get("peak_mb"), ".1f")
    return ""


def part_label(r: dict) -> str:
    """The part, with an everything row's time split (encoder / decoder batches / post-processing, ms)."""
    b = r.get("breakdown")
    if not b:
        return r["part"]
    return (f"{r['part']} (encoder {b['encoder_ms']:.0f} / decoder {b['decoder_ms']:.0f} / post "
            f"{b['postprocess_ms']:.0f} ms)")


def alone_peak(r: dict) -> str:
    """The row's peak RSS (MiB) in a process holding only its contender and part, or '' where not measured."""
    return _fmt((r.get("memory") or {}).get("alone_peak_mb"), ".0f")


def _parity(r: dict) -> tuple[str, str]:
    par = r.get("parity") or {}
    return _fmt(par.get("mask_iou"), ".4f"), _fmt(par.get("embedding_max_abs"), ".2e")


def to_markdown(rows: list[dict]) -> str:
    """The full table: one line per row, in the rows' order."""
    head = ("| device | target | contender | part | precision | threads | median ms | p90 ms | min ms | max ms | "
            "peak RSS MiB | init s | memory MiB | speed-up | mask IoU | emb max abs | size MiB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        s = r["stats"]
        size = r.get("model_bytes")
        iou, emb = _parity(r)
        lines.append(
            f"| {device_label(r)} | {r['target']} | {contender_label(r)} | {part_label(r)} | {r['precision']} | "
            f"{_fmt(r.get('threads'), 'd') or 'default'} | "
            f"{_fmt(s['median_ms'], '.1f') or _fmt(s['mean_ms'], '.1f') + ' (mean)'} | {_fmt(s['p90_ms'], '.1f')} | "
            f"{_fmt(s['min_ms'], '.1f')} | {_fmt(s['max_ms'], '.1f')} | {alone_peak(r)} | "
            f"{_fmt(r.get('init_s'), '.2f')} | "
            f"{_memory(r)} | {_speedup(r)} | {iou} | {emb} | {_fmt(size / 2**20 if size else None, '.1f')} |"
        )
    return "\n".join(lines) + "\n" + memory_legend(rows)


def memory_legend(rows: list[dict]) -> str:
    kinds = sorted({(r.get("memory") or {}).get("kind") for r in rows} - {None})
    if not kinds:
        return ""
    alone = ["peak RSS = the peak resident memory of a fresh process that opened only this row's contender and ran "
             "only this part (the benchmark's own cases, 3 rounds): what one user of it would see"] \
        if any(alone_peak(r) for r in rows) else []
    text = {"process-rss": "memory = +RSS added when the contender was opened / process peak RSS while this row's "
                           "calls ran (one process holds every contender, so the peak includes the others)",
            "process-peak": "memory* = +RSS added at opening / peak RSS of the whole process at the end (not per row)"}
    lines = alone + [text.get(k, "memory = " + MEMORY_KINDS[k]) for k in kinds]
    return "\n" + "\n".join(f"- {line}" for line in lines) + "\n"


def short_table(rows: list[dict]) -> str:
    """The terminal summary: contender × part median (p90), peak RSS alone, speed-up and mask IoU."""
    lines = []
    for r in rows:
        s = r["stats"]
        med = s["median_ms"] if s["median_ms"] is not None else s["mean_ms"]
        iou, _ = _parity(r)
        lines.append(
            f"{r['name'][:28]:<28} {(r.get('delegate') or '')[:22]:<22} {r['part']:<8} "
            f"{_fmt(med, '9.1f'):>9} ms  (p90 {_fmt(s['p90_ms'], '.1f') or '–':>7})  "
            f"{(alone_peak(r) + ' MiB') if alone_peak(r) else '':>9}  {_speedup(r):>6}  {('IoU ' + iou) if iou else ''}"
            + (f"  [{part_label(r)[len(r['part']) + 2:-1]}]" if r.get("breakdown") else "")
        )
    return "\n".join(lines) + "\n"


def method_note(rows: list[dict], runs: int | None = None, warmup: int | None = None) -> str:
    """The statement of method that heads every generated table, one line per device."""
    seen: dict[str, dict] = {}
    for r in rows:
        seen.setdefault(device_label(r) + r["target"], r)
    lines = []
    for r in seen.values():
        load = r.get("load")
        engines = ", ".join(f"{k} {v}" for k, v in (r.get("engines") or {}).items())
        lines.append(
            f"- **{device_label(r)}** ({r['target']}; {r.get('cores')} cores, {', '.join(r.get('isa') or []) or 'ISA n/a'}), "
            f"{r.get('os')}, Python {r.get('python')}, {engines}; git {r.get('git')}; {r.get('time')}"
            + (f"; load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)" if load else "")
            + "."
        )
    runs = runs or max(r["stats"]["runs"] or 0 for r in rows)
    threads = sorted({r.get("threads") for r in rows}, key=lambda t: (t is None, t))
    return (
        "\n".join(lines) + "\n\n"
        f"Threads: {', '.join('engine default' if t is None else str(t) for t in threads)}. "
        + (f"{warmup} warm-up rounds, then " if warmup is not None else "")
        + f"{runs} timed runs of every case, interleaved (A B C A B C …) in one process so every contender sees the "
        f"same machine, each timed call after a {SETTLE_S:g} s pause that lets the previous engine's spinning "
        "threads go to sleep; median, p90, min and max in milliseconds. Speed-up = the PyTorch fp32 reference's median / "
        "the row's median, both measured in the same run (empty where no torch reference ran: never estimated). "
        "Parity: `pocketsam verify`'s metrics for the row's part (prompt rows: the decoder's), against the reference "
        "named in the row.\n"
    )
