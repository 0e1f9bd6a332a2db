"""The LiteRT backend with each engine a device may have, each really installed into a venv of its own:

- ai-edge-litert 1.4.0: what `pocketsam[tflite]` installs on aarch64 Linux (Raspberry Pi OS, Jetson), the newest
  release with aarch64 wheels; here its x86-64 wheel of the same release (the aarch64 one runs in the ARM64 check,
  tools/arm64_check.py).
- tflite-runtime 2.14.0 (the fallback; numpy < 2, and the `tflite` package for reading the files).

`info`, `verify` and bench rows must name the engine that ran and its version.
"""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest

from _bundles import _export_tflite

ROOT = Path(__file__).resolve().parent.parent


def _venv(path: Path, system_site: bool, packages: list[str]) -> Path:
    venv.EnvBuilder(with_pip=True, system_site_packages=system_site).create(path)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for args in (packages, ["--no-deps", str(ROOT)]):
        r = subprocess.run(pip + args, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            pytest.fail(f"pip install {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return path / "bin"


@pytest.fixture(scope="module")
def litert_14(tmp_path_factory) -> Path:
    # system site-packages for numpy/pillow; the venv's ai-edge-litert 1.4.0 shadows the system's 2.x
    return _venv(tmp_path_factory.mktemp("venv-litert-1.4"), True, ["--no-deps", "ai-edge-litert==1.4.0"])


@pytest.fixture(scope="module")
def tflite_runtime(tmp_path_factory) -> Path:
    return _venv(tmp_path_factory.mktemp("venv-tflite-runtime"), False,
                 ["tflite-runtime==2.14.0", "numpy<2", "pillow", "threadpoolctl", "tflite"])


@pytest.fixture(scope="module")
def tiny_int8_dynamic(tmp_path_factory, tflite_cache) -> Path:
    return _export_tflite(tmp_path_factory.mktemp("tflite-int8d") / "tiny-int8d", "tiny", "int8-dynamic",
                          tflite_cache)


def pocketsam(bin_dir: Path, *argv) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(bin_dir / "pocketsam"), *map(str, argv)], capture_output=True, text=True, env=env,
                          timeout=900)


def _check_engine_everywhere(bin_dir: Path, bundle: Path, tmp_path: Path, engine: str) -> None:
    info = pocketsam(bin_dir, "info", bundle)
    assert info.returncode == 0 and f"engine     {engine}, XNNPACK\n" in info.stdout, info.stdout + info.stderr
    ver = pocketsam(bin_dir, "verify", bundle, "--json", tmp_path / "v.json")
    assert ver.returncode == 0 and ver.stdout.rstrip().endswith("PASS"), ver.stdout + ver.stderr
    assert json.loads((tmp_path / "v.json").read_text())["engine"].startswith(engine + ", XNNPACK on ")
    rows = tmp_path / "rows.json"
    bench = pocketsam(bin_dir, "bench", bundle, "--reference", "probe", "--parts", "decoder", "--runs", "1",
                      "--warmup", "0", "--quiet", "--json", rows)
    assert bench.returncode == 0, bench.stderr
    row = json.loads(rows.read_text())["rows"][0]
    assert f"{row['engine']} {row['engine_version']}" == engine and row["parity"]["mask_iou"] >= 0.999


def test_ai_edge_litert_1_4(litert_14, tiny_tflite_bundle, tiny_int8_dynamic, tmp_path):
    _check_engine_everywhere(litert_14, tiny_tflite_bundle, tmp_path, "ai-edge-litert 1.4.0")
    ver = pocketsam(litert_14, "verify", tiny_int8_dynamic)  # the parity table's int8-dynamic bounds hold on 1.4.0
    assert ver.returncode == 0 and ver.stdout.rstrip().endswith("PASS"), ver.stdout + ver.stderr


def test_tflite_runtime_fallback(tflite_runtime, tiny_tflite_bundle, tiny_int8_dynamic, tmp_path):
    probe = subprocess.run([str(tflite_runtime / "python"), "-c", "import importlib.util as u, numpy; print("
                            "u.find_spec('ai_edge_litert') is None, numpy.__version__)"], capture_output=True, text=True)
    assert probe.stdout.split()[0] == "True" and probe.stdout.split()[1].startswith("1."), probe.stdout + probe.stderr
    _check_engine_everywhere(tflite_runtime, tiny_tflite_bundle, tmp_path, "tflite-runtime 2.14.0")
    assert "using tflite-runtime 2.14.0 because ai-edge-litert is not installed" in pocketsam(
        tflite_runtime, "info", tiny_tflite_bundle).stderr
    # Its dynamic-range int8 decoder kernels give wrong masks (mask IoU 0.24 on vit_t): refused, in one line.
    ver = pocketsam(tflite_runtime, "verify", tiny_int8_dynamic)
    errors = [line for line in ver.stderr.splitlines() if "error:" in line]
    assert ver.returncode == 2 and len(errors) == 1, ver.stderr
    assert "computes this dynamic-range int8 decoder wrong" in errors[0] and "Traceback" not in ver.stderr


def test_xnnpack_status_is_reported(tiny_int8_dynamic):
    """Whether XNNPACK took the graph is read from the interpreter, and builtin dynamic-range kernels are flagged:
    they give other numbers (tiny int8-dynamic on x86: e2e mask IoU 0.90 without XNNPACK, 0.97 with it)."""
    from pocketsam.runtime.loading import open_bundle

    _, enc, dec = open_bundle(tiny_int8_dynamic)
    assert enc.xnnpack is True and dec.xnnpack is True
    with pytest.warns(UserWarning, match="xnnpack=False, so ai-edge-litert .* builtin kernels run its dynamic-range"):
        _, enc, dec = open_bundle(tiny_int8_dynamic, xnnpack=False)
    assert enc.xnnpack is False and dec.xnnpack is False
