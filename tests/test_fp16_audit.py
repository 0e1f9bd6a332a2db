"""The fp16 audit (`pocketsam.export.fp16_audit`): fp16 numerics checked without a Mac, and its agreement with the
op precisions the CoreML fp16 export chooses.

Two models: vit_t with the synthetic seed-0 weights (the audit's verdict on it, with the numbers printed), and a
tiny model whose neck feeds a LayerNorm activations large enough to overflow fp16 (the failure this model family is
known for), so that the audit has something to find and the export something to keep in fp32.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from _bundles import COREML_CALIBRATION, export_coreml

from pocketsam.export.calibration import SAMPLE_PHOTOS, sample_photo
from pocketsam.export.fp16_audit import FP16_MAX, HEADROOM, audit_fp16, coreml_agreement
from pocketsam.runtime.parity import checks_for

PHOTOS = SAMPLE_PHOTOS[:COREML_CALIBRATION]  # what the CoreML fixtures calibrate on
FP16_BOUND = next(c.bound for c in checks_for("e2e", "fp16") if c.metric == "mask_iou")
# x3000 on the 1x1 conv before the neck's first LayerNorm2d: the conv's output (~4.7e4) still fits fp16 but sits
# inside the 4x headroom, and the LayerNorm's squared deviations (~2e9) overflow. LayerNorm is scale-invariant, so
# the fp32 model's output is unchanged (the reference stays the same model).
NECK_SCALE = 3000.0
KEPT = ["image_encoder.neck.0", "image_encoder.neck.1"]


@pytest.fixture(scope="module")
def overflow_model():
    from pocketsam.export.model import build_mobile_sam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_mobile_sam(config="tiny")
    with torch.no_grad():
        model.image_encoder.neck[0].weight.mul_(NECK_SCALE)
    return model


@pytest.fixture(scope="module")
def overflow_audit(overflow_model):
    return audit_fp16(overflow_model, [(n, sample_photo(n)) for n in PHOTOS])


def test_audit_finds_the_layernorm_overflow(overflow_audit, capsys):
    a = overflow_audit
    with capsys.disabled():
        print("\n" + a.to_text(top=4))
    assert a.keep_fp32 == {"encoder": KEPT, "decoder": []}
    rows = {r["path"]: r for r in a.layers["encoder"]}
    assert rows["image_encoder.neck.1"]["ln_max_sq"] > FP16_MAX  # the squares overflow
    assert FP16_MAX / HEADROOM <= rows["image_encoder.neck.0"]["max_abs"] < FP16_MAX  # flagged by the headroom
    # all in fp16 the embedding is wrecked (LayerNorm of an overflowed variance); keeping the two modules fixes it
    assert a.worst("naive", "e2e", "mask_iou") < 0.5 and not a.naive_passed
    assert a.worst("policy", "e2e", "mask_iou") >= FP16_BOUND and a.passed
    assert a.worst("policy", "encoder", "embedding_max_rel") < 0.01


def test_export_keeps_exactly_the_audited_ops(overflow_model, overflow_audit, tmp_path):
    """The CoreML fp16 export, audited on the same photos, keeps exactly the flagged modules' ops in fp32."""
    pytest.importorskip("coremltools")
    from pocketsam.runtime.coreml_structure import read_structure

    ckpt = tmp_path / "overflow.pt"
    torch.save(overflow_model.state_dict(), ckpt)
    bundle = export_coreml(tmp_path / "b", "tiny", "fp16", "fp16", checkpoint=ckpt)
    assert coreml_agreement(bundle, overflow_audit.keep_fp32) == []
    enc = read_structure(bundle / "encoder.mlpackage")
    kinds = {name.rsplit("_", 1)[0] for name in enc.fp32_ops}
    assert {"conv2d", "layer_norm"} <= kinds, enc.fp32_ops  # the neck's conv and LayerNorm compute in fp32
    assert enc.compute["fp16"] > 10 * enc.compute["fp32"]  # and only they: the rest stays on the fp16 path
    dec = read_structure(bundle / "decoder.mlpackage")
    assert dec.fp32_ops == []
    # a verdict that differs from the file is reported, not silently accepted
    assert coreml_agreement(bundle, {"encoder": KEPT[1:], "decoder": []})


@pytest.fixture(scope="module")
def vit_t_audit(vit_t_model):
    return audit_fp16(vit_t_model, [(n, sample_photo(n)) for n in PHOTOS])


@pytest.mark.slow  # full vit_t fp16 audit / conversion: ~4-7 min on 2 cores; run with -m slow
def test_vit_t_audit_verdict(vit_t_audit, capsys):
    """vit_t, synthetic seed-0 weights, real photos: the verdict and its numbers (printed for the report)."""
    a = vit_t_audit
    with capsys.disabled():
        print("\n" + a.to_text(top=5))
    assert a.passed, a.to_text()
    for mode in ("naive", "policy"):
        assert sum(a.nonfinite[mode].values()) == 0
    # Every row is measured: the encoder's ~170 modules and the decoder's, with finite peaks.
    assert len(a.layers["encoder"]) > 100 and all(np.isfinite(r["peak"]) for r in a.layers["encoder"])
    # Error is real but small: fp16 does change the embedding (the emulation is not a no-op).
    assert 0 < a.worst("policy", "encoder", "embedding_max_rel") < 0.02


@pytest.mark.slow  # full vit_t fp16 audit / conversion: ~4-7 min on 2 cores; run with -m slow
def test_vit_t_export_agrees_with_the_audit(vit_t_audit, coreml_vit_t_fp16):
    assert coreml_agreement(coreml_vit_t_fp16, vit_t_audit.keep_fp32) == []


def test_audit_cli(capsys, tmp_path):
    from pocketsam.cli import main

    rc = main(["audit-fp16", "--config", "tiny", "--limit", "1", "--json", str(tmp_path / "a.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "verdict: fp16 with the kept modules is SAFE" in out
    import json

    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["passed"] is True and doc["images"] == ["chelsea"]
