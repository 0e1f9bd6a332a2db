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


def parity_markdown(bundles: list[Path]) -> str:
    """One row per bundle: format, precisions, the parity figures, and whether every judged check passed."""
    head = "| format | encoder | decoder | " + " | ".join(f"{p} {m}" for p, m, _ in COLUMNS) + " | verdict |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for path in bundles:
        b = load_bundle(path)
        rows = {(r["part"], r["metric"]): r for r in b.manifest.get("parity", [])}
        cells = []
        for part, metric, fmt in COLUMNS:
            r = rows.get((part, metric))
            if r is None:
                cells.append("")
                continue
            bound = "" if r["bound"] is None else f" ({r['op']} {r['bound']:g})"
            cells.append(f"{format(r['value'], fmt)}{bound}")
        judged = [r["passed"] for r in rows.values() if r["passed"] is not None]
        verdict = ("✓ all" if all(judged) else "✗") if judged else b.manifest.get("parity_not_measured", "—")
        lines.append(f"| {b.format} | {b.encoder.precision} | {b.decoder.precision} | " + " | ".join(cells)
                     + f" | {verdict} |")
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
