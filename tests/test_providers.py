"""onnxruntime execution providers (Jetson: TensorRT, CUDA): how they are asked for, and what is reported.

No GPU here. The provider list a GPU build of onnxruntime offers is real: onnxruntime-gpu (PyPI's x86-64 wheel)
installed into a venv of its own lists TensorRT and CUDA, and on this GPU-less machine it cannot start them (their
CUDA/TensorRT libraries are absent) and falls back to the CPU provider. pocketsam must then say so and report the
CPU provider, never the requested ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from pocketsam.cli import build_parser, main, ort_providers
from pocketsam.runtime.backends.ort import providers_label, resolve_providers, tensorrt_provider
from pocketsam.runtime.errors import BackendError

ROOT = Path(__file__).resolve().parent.parent
# onnxruntime.get_available_providers() of onnxruntime-gpu 1.31.1 (recorded here; NVIDIA's Jetson builds carry the
# same three).
GPU_BUILD_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
GPU_WHEEL = "onnxruntime-gpu==1.31.1"  # ~256 MB


def test_tensorrt_options(tmp_path):
    name, options = tensorrt_provider(fp16=True, cache_dir=tmp_path / "trt", exclude_ops=["LayerNormalization"],
                                      layer_norm_fp32=True)
    assert name == "TensorrtExecutionProvider"
    assert options == {
        "trt_fp16_enable": "True",
        "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(tmp_path / "trt"),
        "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(tmp_path / "trt"),
        "trt_op_types_to_exclude": "LayerNormalization",
        "trt_layer_norm_fp32_fallback": "True",
    }
    assert tensorrt_provider() == (name, {"trt_fp16_enable": "False"})  # fp16 is never on by default


def test_resolve_against_a_gpu_build_list():
    names, options = resolve_providers([tensorrt_provider(fp16=True), ("cuda", {"device_id": 0}), "cpu"],
                                       GPU_BUILD_PROVIDERS)
    assert names == GPU_BUILD_PROVIDERS
    assert options == [{"trt_fp16_enable": "True"}, {"device_id": "0"}, {}]
    with pytest.raises(BackendError, match=r"\['TensorrtExecutionProvider'\] not in this onnxruntime.*onnxruntime-gpu"):
        resolve_providers(["tensorrt", "cpu"], ["CPUExecutionProvider"])  # the CPU wheel
    with pytest.raises(BackendError, match="twice"):
        resolve_providers(["cpu", "CPUExecutionProvider"], GPU_BUILD_PROVIDERS)


def test_label_says_what_tensorrt_runs_in():
    # get_provider_options() gives booleans back as "0"/"1" (onnxruntime's TensorRT docs)
    held = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_label(held, {"TensorrtExecutionProvider": {"trt_fp16_enable": "1"}}) == \
        "TensorrtExecutionProvider(fp16),CUDAExecutionProvider,CPUExecutionProvider"
    assert providers_label(held[:1], {"TensorrtExecutionProvider": {"trt_fp16_enable": "0"}}) == \
        "TensorrtExecutionProvider(fp32)"
    assert providers_label(["CPUExecutionProvider"], {}) == "CPUExecutionProvider"


def _args(*argv):
    return build_parser().parse_args(["bench", "b", *argv])


def test_cli_flags_build_the_providers(tmp_path):
    assert ort_providers(_args()) is None
    assert ort_providers(_args("--providers", "cuda,cpu")) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    got = ort_providers(_args("--trt-fp16", "--trt-cache", str(tmp_path), "--trt-fp32-ops",
                              "LayerNormalization,Softmax"))
    assert got[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]  # TensorRT flags alone: tensorrt,cuda,cpu
    assert got[0] == tensorrt_provider(fp16=True, cache_dir=tmp_path, exclude_ops=["LayerNormalization", "Softmax"])
    assert ort_providers(_args("--providers", "tensorrt,cpu", "--no-trt-fp16"))[0] == tensorrt_provider(fp16=False)


@pytest.mark.parametrize("argv, needle", [
    (["--providers", "cuda,cpu", "--trt-fp16"], "add tensorrt to --providers"),
    (["--providers", "tensorrt", "--reference", "probe"], "not in this onnxruntime"),
])
def test_cli_provider_mistakes(tiny_bundle, capsys, argv, needle):
    code = main(["bench", str(tiny_bundle), "--parts", "decoder", "--runs", "1", "--warmup", "0", "--quiet", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


def test_providers_on_a_tflite_bundle_are_refused(tiny_tflite_bundle, capsys):
    code = main(["verify", str(tiny_tflite_bundle), "--providers", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "options of onnxruntime" in err[0], err


def test_predictor_passes_providers_through(tiny_bundle):
    from pocketsam.runtime.predictor import Predictor

    p = Predictor.from_bundle(tiny_bundle, providers=["cpu"])
    assert p.encoder.providers == p.decoder.providers == ["CPUExecutionProvider"]
    assert p.encoder.engine == "onnxruntime" and p.encoder.engine_version


@pytest.fixture(scope="module")
def gpu_build(tmp_path_factory) -> Path:
    """bin/ of a venv holding onnxruntime-gpu (no system site-packages: it must not see the CPU wheel)."""
    env = tmp_path_factory.mktemp("venv-ort-gpu")
    venv.EnvBuilder(with_pip=True).create(env)
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    r = subprocess.run(pip + [GPU_WHEEL, "numpy", "pillow", "threadpoolctl"], capture_output=True, text=True,
                       timeout=1200)
    if r.returncode != 0:
        pytest.fail(f"pip install {GPU_WHEEL} failed:\n{r.stderr[-2000:]}")
    r = subprocess.run(pip + ["--no-deps", str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return env / "bin"


def test_a_gpu_build_without_a_gpu_reports_the_cpu(gpu_build, tiny_bundle, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    script = (
        "import json, warnings, onnxruntime as ort\n"
        "from pocketsam.runtime.predictor import Predictor\n"
        "from pocketsam.runtime.backends.ort import tensorrt_provider\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        f"    p = Predictor.from_bundle({str(tiny_bundle)!r}, providers=[tensorrt_provider(fp16=True, "
        f"cache_dir={str(tmp_path / 'trt')!r}), 'cuda', 'cpu'])\n"
        "print(json.dumps({'available': ort.get_available_providers(), 'held': p.encoder.providers,\n"
        "                  'warnings': [str(x.message) for x in w]}))\n"
    )
    r = subprocess.run([str(gpu_build / "python"), "-c", script], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["available"] == GPU_BUILD_PROVIDERS  # the recorded list is this build's
    assert got["held"] == ["CPUExecutionProvider"]  # no GPU: onnxruntime fell back, and pocketsam reports that
    assert any("did not start TensorrtExecutionProvider, CUDAExecutionProvider" in m for m in got["warnings"])

    rows = tmp_path / "rows.json"
    bench = subprocess.run([str(gpu_build / "pocketsam"), "bench", str(tiny_bundle), "--providers", "tensorrt,cuda,cpu",
                            "--trt-fp16", "--reference", "probe", "--parts", "decoder", "--runs", "1", "--warmup", "0",
                            "--quiet", "--json", str(rows)], capture_output=True, text=True, env=env, timeout=600)
    assert bench.returncode == 0, bench.stderr[-3000:]
    row = json.loads(rows.read_text())["rows"][0]
    assert row["delegate"] == "CPUExecutionProvider" and row["engine"] == "onnxruntime"
    assert row["engines"].get("onnxruntime-gpu") == GPU_WHEEL.split("==")[1]
    assert "did not start TensorrtExecutionProvider" in bench.stderr
