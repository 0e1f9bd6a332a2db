"""Bundles refuse bad files with one specific error each, before any engine sees them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pocketsam.runtime import spec
from pocketsam.runtime.bundle import load_bundle, sha256_of
from pocketsam.runtime.errors import BackendError, BundleError
from pocketsam.runtime.loading import open_bundle
from pocketsam.runtime.predictor import Predictor


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


def _edit_manifest(root: Path, edit) -> None:
    path = root / spec.MANIFEST_NAME
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))


def test_loads_and_describes(tiny_bundle):
    b = load_bundle(tiny_bundle)
    assert b.format == "onnx"
    assert b.checkpoint_description == "random weights, seed 0"
    assert b.manifest["constants"] == spec.constants()
    assert b.decoder_points is None  # ONNX decoders keep the point axis dynamic
    for part in ("encoder", "decoder"):
        assert b.part(part).sha256 == sha256_of(b.part(part).path)


def test_truncated_model_file(bundle_copy):
    enc = bundle_copy / "encoder.onnx"
    enc.write_bytes(enc.read_bytes()[: enc.stat().st_size // 2])
    with pytest.raises(BundleError, match="sha256 .* truncated, modified or from another export"):
        load_bundle(bundle_copy)


def test_truncated_model_file_without_hash_check_is_refused_by_the_engine(bundle_copy):
    dec = bundle_copy / "decoder.onnx"
    dec.write_bytes(dec.read_bytes()[:1000])
    with pytest.raises(BundleError, match="ONNX Runtime cannot load this model"):
        open_bundle(load_bundle(bundle_copy, verify_hashes=False))


def test_sha_mismatch_in_manifest(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m["parts"]["decoder"].update(sha256="0" * 64))
    with pytest.raises(BundleError, match="decoder file is truncated"):
        load_bundle(bundle_copy)


def test_parts_from_different_exports(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m["parts"]["decoder"].update(weights_id="random:vit_t:seed7"))
    with pytest.raises(BundleError, match="come from different weights"):
        load_bundle(bundle_copy)


def test_unknown_spec_version(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m.update(spec_version="999"))
    with pytest.raises(BundleError, match="spec version 999 is not this runtime's 2;"):
        load_bundle(bundle_copy)


def test_unknown_format(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m.update(format="tensorrt"))
    with pytest.raises(BundleError, match="unknown format 'tensorrt'"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: (r / spec.MANIFEST_NAME).unlink(), "not a pocketsam bundle"),
        (lambda r: (r / spec.MANIFEST_NAME).write_text("{not json"), "not valid JSON"),
        (lambda r: (r / "encoder.onnx").unlink(), "encoder file encoder.onnx is missing"),
    ],
    ids=["no-manifest", "bad-json", "missing-part"],
)
def test_damaged_bundle(bundle_copy, damage, message):
    damage(bundle_copy)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_not_a_folder(tmp_path):
    with pytest.raises(BundleError, match="no such bundle folder"):
        load_bundle(tmp_path / "nope")
    f = tmp_path / "file.onnx"
    f.write_bytes(b"x")
    with pytest.raises(BundleError, match="a bundle is a folder"):
        load_bundle(f)


def test_swapped_graph_io_is_refused(bundle_copy):
    """An encoder file in the decoder's place fails the I/O check against the spec, naming both."""
    enc, dec = bundle_copy / "encoder.onnx", bundle_copy / "decoder.onnx"
    shutil.copy(enc, dec)
    with pytest.raises(BundleError, match="do not match the decoder spec"):
        open_bundle(load_bundle(bundle_copy, verify_hashes=False))


def test_probe_tampering(bundle_copy):
    with np.load(bundle_copy / spec.PROBE_NAME) as z:
        arrays = dict(z)
    arrays["image_embeddings"] = arrays["image_embeddings"] + 1
    np.savez_compressed(bundle_copy / spec.PROBE_NAME, **arrays)
    with pytest.raises(BundleError, match="probe"):
        load_bundle(bundle_copy).load_probe()


def test_unknown_backend_and_provider(tiny_bundle):
    with pytest.raises(BackendError, match="unknown backend 'tensorrt'"):
        open_bundle(tiny_bundle, "tensorrt")
    with pytest.raises(BackendError, match="not in this onnxruntime"):
        open_bundle(tiny_bundle, providers=["NoSuchExecutionProvider"])


def test_onnxruntime_sessions_flush_denormals():
    """Subnormal floats count as zero in pocketsam's onnxruntime sessions, as in XNNPACK (runtime/backends/ort.py:
    the decoder's softmax makes them, and x86 FMAs on them are slow); `flush_denormals=False` keeps IEEE."""
    from pocketsam.runtime.backends.ort import session_options

    key = "session.set_denormal_as_zero"
    assert session_options(2).get_session_config_entry(key) == "1"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # onnxruntime's default: off
        session_options(2, flush_denormals=False).get_session_config_entry(key)


def test_missing_engine_names_the_extra(tiny_bundle, tmp_path):
    """Without onnxruntime installed, opening an ONNX bundle says which extra to install."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "onnxruntime.py").write_text("raise ImportError('blocked for the test')\n")
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from pocketsam.runtime.errors import MissingEngineError\n"
        "from pocketsam.runtime.loading import open_bundle\n"
        "try:\n    open_bundle(%r)\nexcept MissingEngineError as e:\n    print(e)\n"
    ) % (str(blocker), str(tiny_bundle))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'pocketsam[onnx]'" in out


def test_predictor_from_bundle(tiny_bundle):
    from pocketsam.export.calibration import sample_photo

    p = Predictor.from_bundle(tiny_bundle, threads=1)
    img = sample_photo("chelsea")
    p.set_image(img)
    masks, scores, low_res = p.predict(np.array([[200.0, 150.0]]), np.array([1]))
    assert masks.shape == (3, *img.shape[:2]) and masks.dtype == bool
    assert scores.shape == (3,) and low_res.shape == (3, spec.LOW_RES_MASK_SIZE, spec.LOW_RES_MASK_SIZE)
    assert p.bundle is not None and p.bundle.root == Path(tiny_bundle)


def test_export_refuses_to_overwrite(tiny_bundle):
    from pocketsam.export.bundle_writer import export_bundle

    with pytest.raises(BundleError, match="exists and is not empty"):
        export_bundle(tiny_bundle, config="tiny", progress=False)


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    """An export that fails midway leaves neither the bundle nor its temporary folder."""
    from pocketsam.export import bundle_writer

    def boom(*a, **k):
        raise RuntimeError("simulated converter crash")

    monkeypatch.setattr(bundle_writer, "record_reference", boom)
    out = tmp_path / "b"
    with pytest.raises(RuntimeError, match="simulated"):
        bundle_writer.export_bundle(out, config="tiny", progress=False)
    assert list(tmp_path.iterdir()) == []
