"""Numeric parity of exported ONNX bundles against the PyTorch fp32 reference: the one parametrized table.

Each row of `pocketsam.runtime.parity.PARITY_TABLE` that an ONNX bundle can exercise is a test case here. The
bundles are exported once per session from the full vit_t model (synthetic seed-0 weights) by `export_bundle`, the
same function `pocketsam export` calls, and measured by `verify`'s own code on two real photos (the probe photo
recorded at export, and a second photo through a fresh PyTorch reference).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from _bundles import PARITY_PRECISIONS
from _parity import PHOTOS, assert_row, measure, row_id, table_rows
from pocketsam.runtime.parity import checks_for
from pocketsam.runtime.verify import judge, record_reference

ROWS = table_rows("onnx", PARITY_PRECISIONS)


@pytest.fixture(scope="module")
def measured(vit_t_bundles, vit_t_model):
    """{precision: {photo: metrics}} for every exported precision, on two real photos."""
    return measure(vit_t_bundles, vit_t_model, "onnx")


@pytest.mark.parametrize("row", ROWS, ids=row_id)
@pytest.mark.parametrize("photo", PHOTOS)
def test_parity_row(row, photo, measured):
    assert_row("onnx", row, photo, measured)


def test_every_precision_has_rows():
    """Every precision of every format's recipes has its three rows (a row may hold no bound: reported, not judged),
    judged ones bound the e2e mask IoU, and no row names a precision no format exports."""
    from pocketsam.export.formats import FORMATS
    from pocketsam.runtime.parity import ANY_FORMAT, BUNDLE_PARTS, PARITY_TABLE

    for fmt, exporter in FORMATS.items():
        for precision in exporter.precisions:
            for part in BUNDLE_PARTS:
                assert (fmt, part, precision) in PARITY_TABLE or (ANY_FORMAT, part, precision) in PARITY_TABLE, \
                    f"{fmt} {precision}: no {part} row in runtime/parity.py"
            e2e = checks_for("e2e", precision, fmt)
            assert not e2e or any(c.metric == "mask_iou" for c in e2e), (fmt, precision)
    exported = {p for f in FORMATS.values() for p in f.precisions}
    assert {p for _, part, p in PARITY_TABLE if part in BUNDLE_PARTS} <= exported
    assert checks_for("encoder", "fp32", "onnx")[0].metric == "embedding_max_abs"


def test_the_conversion_check_reads_its_bound_from_the_table():
    """Every converted graph is checked against eager PyTorch at export with the table's conversion bound, relative
    to the output's range; a frozen axis (wrong shape) or a real difference is an ExportError."""
    from pocketsam.export.core import CONVERSION_CHECK, ExportError, check_conversion
    from pocketsam.runtime import spec

    assert checks_for("conversion", "fp32") == (CONVERSION_CHECK,)
    want = {"image_embeddings": np.full((1, 256, 64, 64), 10.0, np.float32)}
    near = {"image_embeddings": want["image_embeddings"] + 0.9 * CONVERSION_CHECK.bound * 10}
    check_conversion(Path("encoder.onnx"), spec.ENCODER, want, near)
    far = {"image_embeddings": want["image_embeddings"] + 1.1 * CONVERSION_CHECK.bound * 10}
    with pytest.raises(ExportError, match="image_embeddings differs from PyTorch"):
        check_conversion(Path("encoder.onnx"), spec.ENCODER, want, far)
    with pytest.raises(ExportError, match="shapes"):
        check_conversion(Path("encoder.onnx"), spec.ENCODER, want, {"image_embeddings": np.zeros((1, 256, 64, 1))})


def test_the_weaker_precision_judges_e2e():
    from pocketsam.runtime.parity import weaker

    assert weaker("fp32", "fp16") == weaker("fp16", "fp32") == "fp16"
    assert weaker("fp16", "int8-dynamic") == "int8-dynamic"
    assert weaker("int8-dynamic", "int8-static") == "int8-static"  # equal bounds: the later row
    assert weaker("fp32", "int8", "tflite") == "int8"
    assert weaker("int8", "w8a8", "coreml") == "w8a8"  # reported, not judged: weaker than any judged one


def test_export_records_its_parity(vit_t_bundles):
    """The manifest carries the parity rows measured at export, and they agree with the table's verdicts."""
    from pocketsam.runtime.bundle import load_bundle

    for precision, path in vit_t_bundles.items():
        rows = load_bundle(path).manifest["parity"]
        judged = [r for r in rows if r["passed"] is not None]
        assert judged, precision
        assert all(r["passed"] for r in judged), (precision, [r for r in judged if not r["passed"]])


def test_judge_marks_failures():
    """A metric outside its bound is a failed row (the ✗ path of verify), not silently passed."""
    metrics = {"encoder": {"embedding_max_abs": 0.5}, "decoder": {"mask_iou": 0.5}, "e2e": {"mask_iou": 1.0}}
    rows = {(r.part, r.metric): r for r in judge(metrics, "fp32", "fp32")}
    assert rows[("encoder", "embedding_max_abs")].passed is False
    assert rows[("decoder", "mask_iou")].passed is False
    assert rows[("e2e", "mask_iou")].passed is True
    assert "✗" in rows[("decoder", "mask_iou")].line()


def test_probe_is_reproducible(vit_t_bundles, vit_t_model):
    """The probe recorded at export equals a fresh PyTorch run: verify without torch checks the same thing."""
    from pocketsam.export.reference import reference_sessions
    from pocketsam.runtime.bundle import load_bundle

    probe = load_bundle(vit_t_bundles["fp32"]).load_probe()
    fresh = record_reference(probe["image"], *reference_sessions(vit_t_model))
    assert set(fresh) == set(probe)
    for key in probe:
        np.testing.assert_allclose(fresh[key], probe[key], atol=1e-5, err_msg=key)
