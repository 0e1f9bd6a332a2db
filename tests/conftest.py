"""Shared fixtures and the test tiers. Bundle fixtures (exported once per session) live in _bundles.py.

Tiers: CI runs the whole default suite. `python3 -m pytest -q -m "not full and not heavy"` is the inner loop: no
full-size model (`full`), no converter run of litert-torch or coremltools, no fresh virtual environment and no other
toolchain (Kotlin, Swift, sshd) (`heavy`).
"""

import pytest

# Every bundle fixture is registered here, once: imported into several test modules instead, each import would be a
# fixture of its own and a session-scoped export would run once per module.
from _bundles import (  # noqa: F401  (pytest fixtures)
    coreml_tiny_bundles,
    coreml_vit_t_bundles,
    coreml_vit_t_fp16,
    tflite_cache,
    tiny_bundle,
    tiny_tflite_bundle,
    vit_t_bundles,
    vit_t_fp32_bundle,
    vit_t_model,
    vit_t_tflite_bundles,
)

# Fixtures that build, run or export the full-size vit_t model (minutes each on 2 cores). Every test that uses one,
# directly or through another fixture, is marked `full`.
FULL_SIZE_FIXTURES = {"vit_t_model", "vit_t_bundles", "vit_t_fp32_bundle", "vit_t_tflite_bundles",
                      "coreml_vit_t_bundles", "coreml_vit_t_fp16", "vit_t_checkpoint"}
# Tests that run a converter on the tiny model (litert-torch, coremltools: tens of seconds each), and test modules
# that install a virtual environment or drive another toolchain: marked `heavy`.
HEAVY_FIXTURES = {"tflite_cache", "coreml_tiny_bundles"}
HEAVY_MODULES = {"test_torch_free", "test_litert_engines", "test_providers", "test_android_demo", "test_ios_demo",
                 "test_bench_ssh", "test_fp16_audit", "test_arm64"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if FULL_SIZE_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.full)
        if HEAVY_FIXTURES & set(item.fixturenames) or item.module.__name__ in HEAVY_MODULES:
            item.add_marker(pytest.mark.heavy)


# --- model and checkpoint fixtures (tests/test_model.py, tests/test_checkpoint.py) --------------------------------
import warnings  # noqa: E402


@pytest.fixture(scope="session")
def vit_t_checkpoint(tmp_path_factory):
    """Path of `synthetic_state_dict(0)` saved with torch.save (~40 MB, written once per session)."""
    import torch

    from pocketsam.export.checkpoint import synthetic_state_dict

    path = tmp_path_factory.mktemp("checkpoints") / "synthetic_seed0_vit_t.pt"
    torch.save(synthetic_state_dict(0), path)
    return path


@pytest.fixture(scope="session")
def tiny_model():
    """The shrunk model (same I/O shapes as vit_t) with synthetic seed-0 weights."""
    from pocketsam.export.model import RandomWeightsWarning, build_mobile_sam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return build_mobile_sam(seed=0, config="tiny")
