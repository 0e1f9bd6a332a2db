"""Plots from benchmark rows: one panel per part, one bar per (device, contender) at the median latency, with a
whisker up to p90. matplotlib's Agg backend: no display needed."""

from __future__ import annotations

from pathlib import Path

from .report import device_label
from .schema import PARTS


def plot_rows(rows: list[dict], out: Path, title: str | None = None) -> Path:
    """Write a PNG bar chart of median latency (p90 whiskers) per part and per device/contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in PARTS if any(r["part"] == p for r in rows)]
    if not parts:
        raise ValueError("no rows to plot")
    devices = list(dict.fromkeys(device_label(r) for r in rows))
    multi_device = len(devices) > 1
    fig, axes = plt.subplots(1, len(parts), figsize=(4.2 * len(parts) + 1, 4.8), squeeze=False)
    colors = plt.get_cmap("tab10")
    names = list(dict.fromkeys(_bar_label(r, multi_device) for r in rows))
    for ax, part in zip(axes[0], parts):
        sel = [r for r in rows if r["part"] == part]
        labels = [_bar_label(r, multi_device) for r in sel]
        med = [_median(r) for r in sel]
        p90 = [r["stats"]["p90_ms"] for r in sel]
        upper = [(p - m) if p is not None and m is not None else 0.0 for p, m in zip(p90, med)]
        x = range(len(sel))
        bars = ax.bar(x, [m or 0.0 for m in med], color=[colors(names.index(lb) % 10) for lb in labels],
                      yerr=[[0.0] * len(sel), upper], capsize=4, ecolor="black")
        for b, m, r in zip(bars, med, sel):
            if m is not None:
                ax.annotate(f"{m:.0f}" if m >= 10 else f"{m:.1f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=7)
        ax.set_title(part)
        ax.set_ylabel("ms (median, whisker: p90)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title or ("median latency per part — " + "; ".join(devices)), fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _median(r: dict) -> float | None:
    s = r["stats"]
    return s["median_ms"] if s["median_ms"] is not None else s["mean_ms"]


def _bar_label(r: dict, with_device: bool) -> str:
    label = r["name"] + (f" [{r['delegate']}]" if r.get("delegate") and r["target"] != "local" else "")
    return f"{device_label(r)[:24]}: {label}" if with_device else label
