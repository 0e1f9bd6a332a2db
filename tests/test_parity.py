"""Numeric parity of exported ONNX bundles against the PyTorch fp32 reference: the one parametrized table.

Each row of `pocketsam.runtime.parity.PARITY_TABLE` that an ONNX bundle can exercise is a test case here. The
bundles are exported once per session from the full vit_t model (synthetic seed-0 weights) by `export_bundle`, the
same function `pocketsam export` calls, and measured by `verify`'s own code on two real photos (the probe photo
recorded at export, and a second photo through a fresh PyTorch reference).
"""

from __future__ import annotations

import numpy as np
import pytest

from _parity import PHOTOS, assert_row, measure, row_id, table_rows
from pocketsam.runtime.parity import checks_for
from pocketsam.runtime.verify import judge, record_reference

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")
ROWS = table_rows("onnx", PRECISIONS)


@pytest.fixture(scope="module")
def measured(vit_t_bundles, vit_t_model):
    """{precision: {photo: metrics}} for every exported precision, on two real photos."""
    return measure(vit_t_bundles, vit_t_model, "onnx")


@pytest.mark.parametrize("row", ROWS, ids=row_id)
@pytest.mark.parametrize("photo", PHOTOS)
def test_parity_row(row, photo, measured):
    assert_row("onnx", row, photo, measured)


def test_every_precision_has_rows():
    """Each exported precision is judged: the decoder and e2e rows exist (the encoder's are e2e for non-fp32)."""
    for precision in PRECISIONS:
        assert checks_for("decoder", precision, "onnx"), precision
        assert checks_for("e2e", precision, "onnx"), precision
    assert checks_for("encoder", "fp32", "onnx")[0].metric == "embedding_max_abs"


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
