"""Benchmark reports: JSON rows in, Markdown tables and plots out. Rows are the data; tables are generated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable


def write_json(rows: list[dict], path: Path) -> None:
    Path(path).write_text(json.dumps(rows, indent=1) + "\n")


def read_json(paths: Iterable[Path]) -> list[dict]:
    rows: list[dict] = []
    for p in paths:
        rows.extend(json.loads(Path(p).read_text()))
    return rows


def _fmt(v: object, spec: str) -> str:
    return "" if v is None else format(v, spec)


def to_markdown(rows: list[dict]) -> str:
    """One table: device, contender, part, precision, median / p90 ms, speed-up vs the reference, parity."""
    head = ("| device | name | part | precision | median ms | p90 ms | min ms | speed-up | mask IoU | "
            "emb max abs | size MiB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        s, par = r["stats"], r.get("parity") or {}
        size = r.get("model_bytes")
        speedup = "ref" if r.get("is_reference") else (f"{r['speedup']:.2f}×" if r.get("speedup") else "")
        lines.append(
            f"| {r.get('cpu', r.get('device', ''))} | {r['name']} | {r['part']} | {r['precision']} | "
            f"{s['median_ms']:.1f} | {s['p90_ms']:.1f} | {s['min_ms']:.1f} | "
            f"{speedup} | "
            f"{_fmt(par.get('mask_iou'), '.4f')} | {_fmt(par.get('embedding_max_abs'), '.2e')} | "
            f"{_fmt(size / 2**20 if size else None, '.1f')} |"
        )
    return "\n".join(lines) + "\n"


def method_note(rows: list[dict], runs: int, warmup: int) -> str:
    """The statement of method that heads every generated table."""
    r = rows[0]
    return (
        f"Measured on {r.get('cpu')} ({r.get('cores')} cores, {', '.join(r.get('isa', []))}), {r.get('os')}, "
        f"Python {r.get('python')}, git {r.get('git')}, {r.get('time')}. Threads: {r.get('threads') or 'engine default'}. "
        f"{warmup} warm-up rounds, then {runs} interleaved timed runs of every case (A B A B …); median, p90 and min "
        "in milliseconds. Speed-up = the PyTorch reference's median / the row's median, measured in the same run. "
        "Parity: `verify`'s metrics against the PyTorch fp32 reference on the same photo.\n"
    )
