"""The parity-table test machinery shared by every format's suite (ONNX in test_parity.py, TFLite in
test_tflite.py): which rows a format is judged by, the measurement on two real photos, and the one assertion."""

from __future__ import annotations

from pathlib import Path

from pocketsam.runtime.loading import open_bundle
from pocketsam.runtime.parity import BUNDLE_PARTS, PARITY_TABLE, checks_for
from pocketsam.runtime.verify import compare, record_reference

PHOTOS = ("probe", "astronaut")


def table_rows(format: str, precisions: tuple[str, ...]) -> list:
    """(part, precision, check) for every check `format` is judged by: its own rows, else the "*" rows."""
    return [(part, prec, c) for (fmt, part, prec), checks in PARITY_TABLE.items()
            if fmt in ("*", format) and part in BUNDLE_PARTS and prec in precisions
            and checks_for(part, prec, format) == checks
            for c in checks]


def row_id(row) -> str:
    part, prec, check = row
    return f"{part}-{prec}-{check.metric}"


def measure(bundles: dict[str, Path], model, format: str) -> dict[str, dict[str, dict]]:
    """{precision: {photo: metrics}}: each bundle against its export-time probe and a fresh PyTorch reference on
    a second photo (padded as the bundle's decoder pads, so the figures measure the conversion)."""
    from pocketsam.export.calibration import sample_photo
    from pocketsam.export.reference import reference_sessions

    seconds: dict[int | None, dict] = {}
    out = {}
    for precision, path in bundles.items():
        bundle, enc, dec = open_bundle(path)
        assert bundle.format == format
        n = bundle.decoder_points
        if n not in seconds:
            seconds[n] = record_reference(sample_photo("astronaut"), *reference_sessions(model), decoder_points=n)
        out[precision] = {"probe": compare(bundle.load_probe(), enc, dec, n),
                          "astronaut": compare(seconds[n], enc, dec, n)}
    return out


def assert_row(format: str, row, photo: str, measured: dict) -> None:
    part, precision, check = row
    metrics = measured[precision][photo][part]
    value = metrics[check.metric]
    context = ", ".join(f"{k}={v:.6g}" for k, v in metrics.items())
    assert check.passes(value), (
        f"{format} {part} {precision} on {photo}: {check.metric} = {value:.6g}, tolerance {check.op} {check.bound} "
        f"({check.reason}); all metrics: {context}"
    )
