"""Session-scoped bundle fixtures (imported by conftest.py): each bundle is exported once per test session by
`export_bundle`, the same function `pocketsam export` calls."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

PARITY_PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")


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
def vit_t_bundles(tmp_path_factory) -> dict[str, Path]:
    """{precision: bundle} of the full vit_t model, both parts in that precision."""
    root = tmp_path_factory.mktemp("vit_t")
    return {p: _export(root / p, "vit_t", p) for p in PARITY_PRECISIONS}
