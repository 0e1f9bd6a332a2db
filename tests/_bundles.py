"""Session-scoped bundle fixtures (imported by conftest.py): each bundle is exported once per test session by
`export_bundle`, the same function `pocketsam export` calls."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from pocketsam.export.formats import FORMATS  # torch-free: the recipes' precisions

PARITY_PRECISIONS = FORMATS["onnx"].precisions  # every ONNX precision, exported once per session


def _export(out: Path, config: str, precision: str = "fp32") -> Path:
    from pocketsam.export.bundle_writer import export_bundle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "random weights, seed 0": expected in tests
        result = export_bundle(out, config=config, encoder_precision=precision, decoder_precision=precision,
                               progress=False)
    return result.bundle.root


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """An fp32 ONNX bundle of the shrunk model: same I/O as vit_t, for plumbing tests."""
    return _export(tmp_path_factory.mktemp("bundles") / "tiny-fp32", "tiny")


@pytest.fixture(scope="session")
def vit_t_model():
    """The full vit_t model with the synthetic seed-0 weights (the weights every vit_t bundle here is made from)."""
    from pocketsam.export.model import build_mobile_sam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_mobile_sam(seed=0)


@pytest.fixture(scope="session")
def vit_t_fp32_bundle(tmp_path_factory) -> Path:
    """The full vit_t model (seed-0 weights) as the default fp32 ONNX bundle (memory and mask-generator tests);
    `vit_t_bundles` reuses it, so a session exports it once."""
    return _export(tmp_path_factory.mktemp("vit_t-fp32") / "fp32", "vit_t", "fp32")


@pytest.fixture(scope="session")
def vit_t_bundles(tmp_path_factory, vit_t_fp32_bundle) -> dict[str, Path]:
    """{precision: bundle} of the full vit_t model, both parts in that precision."""
    root = tmp_path_factory.mktemp("vit_t")
    return {p: vit_t_fp32_bundle if p == "fp32" else _export(root / p, "vit_t", p) for p in PARITY_PRECISIONS}


# --- TFLite (litert-torch); skipped where the converter is not installed ----------------------------------------

# Every TFLite precision, full int8 included (its calibration runs in C++ now: ~2 min for the whole int8 export
# from the cached conversion, where Python op-by-op calibration took ~9 min).
TFLITE_PRECISIONS = FORMATS["tflite"].precisions
TFLITE_TINY_BATCH = 2  # the tiny bundle's batched decoder signature (exercises chunking + padding of batches)


@pytest.fixture(scope="session")
def tflite_cache(tmp_path_factory) -> Path:
    """Converted fp32 .tflite files, shared by every TFLite export of the session (litert-torch converts once)."""
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_litert")
    return tmp_path_factory.mktemp("tflite-cache")


def _export_tflite(out: Path, config: str, precision: str, cache: Path, **options) -> Path:
    from pocketsam.export.bundle_writer import export_bundle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = export_bundle(out, format="tflite", config=config, encoder_precision=precision,
                               decoder_precision=precision, progress=False, cache_dir=cache, **options)
    return result.bundle.root


@pytest.fixture(scope="session")
def tiny_tflite_bundle(tmp_path_factory, tflite_cache) -> Path:
    """An fp32 TFLite bundle of the shrunk model, its decoder with a batch-2 signature besides batch 1."""
    return _export_tflite(tmp_path_factory.mktemp("tflite") / "tiny-fp32", "tiny", "fp32", tflite_cache,
                          decoder_batch=TFLITE_TINY_BATCH)


@pytest.fixture(scope="session")
def vit_t_tflite_bundles(tmp_path_factory, tflite_cache) -> dict[str, Path]:
    """{precision: TFLite bundle} of the full vit_t model (seed-0 weights), both parts in that precision."""
    root = tmp_path_factory.mktemp("vit_t_tflite")
    return {p: _export_tflite(root / p, "vit_t", p, tflite_cache) for p in TFLITE_PRECISIONS}


# --- CoreML (coremltools); prediction needs macOS, conversion and structure checks run anywhere ----------------

# Photos for the fp16 audit that picks each fp16 export's fp32 ops: the first two sample photos (chelsea,
# astronaut), the same two tests/test_fp16_audit.py audits, so verdict and export are compared on equal terms.
COREML_CALIBRATION = 2
# Every compressed CoreML precision (the parity table judges them on macOS; "w8a8" is exported and reported there,
# not judged). fp32 CoreML is the unconverted graph's arithmetic and is covered by the structure tests.
COREML_PRECISIONS = tuple(p for p in FORMATS["coreml"].precisions if p != "fp32")


def export_coreml(out: Path, config: str, encoder: str, decoder: str, **kwargs) -> Path:
    from pocketsam.export.bundle_writer import export_bundle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = export_bundle(out, format="coreml", config=config, encoder_precision=encoder,
                               decoder_precision=decoder, progress=False, calibration_limit=COREML_CALIBRATION,
                               **kwargs)
    return result.bundle.root


@pytest.fixture(scope="session")
def coreml_tiny_bundles(tmp_path_factory) -> dict[str, Path]:
    """Tiny-model CoreML bundles covering fp32, int8 and both palettizations (plumbing and structure tests)."""
    pytest.importorskip("coremltools")
    root = tmp_path_factory.mktemp("coreml-tiny")
    return {
        "fp32+int8": export_coreml(root / "fp32-int8", "tiny", "fp32", "int8"),
        "palettized-4+palettized-6": export_coreml(root / "pal", "tiny", "palettized-4", "palettized-6"),
    }


@pytest.fixture(scope="session")
def coreml_vit_t_fp16(tmp_path_factory) -> Path:
    """The full vit_t model (seed-0 weights) as an fp16 CoreML bundle: what the Neural Engine runs."""
    pytest.importorskip("coremltools")
    return export_coreml(tmp_path_factory.mktemp("coreml-vit_t") / "fp16", "vit_t", "fp16", "fp16")


@pytest.fixture(scope="session")
def coreml_vit_t_bundles(tmp_path_factory, request) -> dict[str, Path]:
    """{precision: vit_t CoreML bundle} for the parity table; macOS only (elsewhere nothing can run them, and
    nothing is exported: the platform is checked first)."""
    from pocketsam.runtime.backends.coreml import prediction_unavailable

    why = prediction_unavailable()
    if why is not None:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("coreml-vit_t-all")
    out = {"fp16": request.getfixturevalue("coreml_vit_t_fp16")}
    for p in COREML_PRECISIONS[1:]:
        out[p] = export_coreml(root / p, "vit_t", p, p)
    return out
