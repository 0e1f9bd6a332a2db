"""The measured parity table of a set of bundles, as Markdown, from the figures each manifest recorded at export:

    python -m pocketsam.benchmarks.parity_docs bundles/onnx-fp32 bundles/onnx-fp16 ... > docs/parity.md

Rows come from `verify`'s metrics against the PyTorch fp32 reference on the probe photo; bounds are the one parity
table's (`pocketsam.runtime.parity`), so the ✓/✗ here is the verdict `pocketsam verify` gives.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pocketsam.runtime.bundle import load_bundle

COLUMNS = (
    ("encoder", "embedding_max_abs", ".2e"),
    ("decoder", "mask_iou", ".4f"),
    ("decoder", "low_res_logits_max_abs", ".2e"),
    ("decoder", "score_max_abs", ".2e"),
    ("e2e", "mask_iou", ".4f"),
    ("e2e", "mask_iou_min", ".4f"),
)


def _row(fmt_name: str, encoder: str, decoder: str, rows: dict[tuple[str, str], dict], extra: list[str]) -> str:
    """One table line from judged rows keyed by (part, metric) (each with value, op, bound, passed)."""
    cells = []
    for part, metric, fmt in COLUMNS:
        r = rows.get((part, metric))
        if r is None:
            cells.append("")
            continue
        bound = "" if r["bound"] is None else f" ({r['op']} {r['bound']:g})"
        cells.append(f"{format(r['value'], fmt)}{bound}")
    judged = [r["passed"] for r in rows.values() if r["passed"] is not None]
    verdict = ("✓ all" if all(judged) else "✗") if judged else "—"
    return f"| {fmt_name} | {encoder} | {decoder} | " + " | ".join(cells + extra) + f" | {verdict} |"


def _head(extra: tuple[str, ...] = ()) -> list[str]:
    head = ("| format | encoder | decoder | " + " | ".join(f"{p} {m}" for p, m, _ in COLUMNS)
            + "".join(f" | {e}" for e in extra) + " | verdict |")
    return [head, "|" + "---|" * (head.count("|") - 1)]


def parity_markdown(bundles: list[Path]) -> str:
    """One row per bundle: format, precisions, the parity figures, and whether every judged check passed."""
    lines = _head()
    for path in bundles:
        b = load_bundle(path)
        rows = {(r["part"], r["metric"]): r for r in b.manifest.get("parity", [])}
        line = _row(b.format, b.encoder.precision, b.decoder.precision, rows, [])
        if not rows:
            line = line.replace("| — |", f"| {b.manifest.get('parity_not_measured', '—')} |")
        lines.append(line)
    return "\n".join(lines) + "\n"


def verify_reports_markdown(reports: list[dict]) -> str:
    """The same table from `pocketsam verify --json` reports (one per bundle, e.g. measured on another machine),
    with the engine that ran each one and the wall time of its verify where the report carries it."""
    lines = _head(("engine", "verify s"))
    for rep in reports:
        for result in rep["results"]:
            rows = {(r["part"], r["metric"]): r for r in result["rows"]}
            seconds = rep.get("seconds")
            lines.append(_row(rep["format"], rep["encoder_precision"], rep["decoder_precision"], rows,
                              [rep.get("engine", "?"), "" if seconds is None else f"{seconds:.0f}"]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    paths = [Path(a) for a in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(parity_markdown(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
