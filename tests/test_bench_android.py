"""The android target against a fake `adb` that replays real recorded output of TFLite's benchmark_model and ONNX
Runtime's onnxruntime_perf_test (tests/fixtures/bench/README.md says where each recording comes from)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from pocketsam.benchmarks import android, report, schema
from pocketsam.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "bench"


def test_parse_benchmark_model_current_format():
    p = android.parse_benchmark_model((FIXTURES / "benchmark_model_nnapi_synap.txt").read_text())
    assert p["init_s"] == pytest.approx(0.066002)
    assert p["mean_ms"] == pytest.approx(1.88574) and p["runs"] == 520
    assert (p["min_ms"], p["max_ms"]) == (pytest.approx(1.171), pytest.approx(9.925))
    assert p["median_ms"] is None and p["p90_ms"] is None  # not printed by this build: left empty
    assert (p["mem_init_mb"], p["mem_overall_mb"]) == (pytest.approx(7.40234), pytest.approx(7.83203))
    assert p["version"] == "2.15.0" and p["first_ms"] == pytest.approx(637.079)


def test_parse_benchmark_model_logcat_with_median_and_exponents():
    p = android.parse_benchmark_model((FIXTURES / "benchmark_model_xnnpack_logcat.txt").read_text())
    assert p["mean_ms"] == pytest.approx(2719.85) and p["runs"] == 10  # "avg=2.71985e+06" us
    assert p["median_ms"] == pytest.approx(2709.263) and p["min_ms"] == pytest.approx(2640.862)
    assert p["mem_overall_mb"] == pytest.approx(337.0)


def test_parse_benchmark_model_old_format():
    p = android.parse_benchmark_model((FIXTURES / "benchmark_model_cpu_old.txt").read_text())
    assert p["runs"] == 50 and p["mean_ms"] == pytest.approx(33.2094)  # the regular runs, not the warm-up line
    assert p["max_ms"] == pytest.approx(34.005) and p["mem_overall_mb"] == pytest.approx(12.8672)
    with pytest.raises(ValueError, match="Inference timings"):
        android.parse_benchmark_model("ERROR: Failed to apply GPU delegate.\nBenchmarking failed.")


def test_parse_perf_test_formats():
    p = android.parse_perf_test((FIXTURES / "perf_test_percentiles.txt").read_text())
    assert p["runs"] == 10 and p["mean_ms"] == pytest.approx(82.3382) and p["init_s"] == pytest.approx(1.14476)
    assert p["median_ms"] == pytest.approx(82.6095) and p["p90_ms"] == pytest.approx(83.8817)
    assert p["min_ms"] == pytest.approx(80.8129) and p["peak_working_set_bytes"] == 78946304
    old = android.parse_perf_test((FIXTURES / "perf_test_android_acl.txt").read_text())
    assert old["mean_ms"] == pytest.approx(144.871) and old["runs"] == 10 and old["p90_ms"] is None
    assert old["peak_working_set_bytes"] == 158171136
    with pytest.raises(ValueError):
        android.parse_perf_test("Error: model file not found")


FAKE_ADB = r'''#!{python}
"""Fake adb: logs its argv, answers getprop/cpuinfo, replays recorded tool output."""
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as f:
    f.write(json.dumps(args) + "\n")
if args[:1] == ["-s"]:
    args = args[2:]
fx = Path(os.environ["FAKE_ADB_FIXTURES"])
if args[0] == "push":
    print(f"{{args[1]}}: 1 file pushed, 0 skipped.")
elif args[0] == "shell":
    cmd = args[1]
    props = {{"ro.product.manufacturer": "Google", "ro.product.model": "Pixel 8", "ro.soc.model": "Tensor G3",
             "ro.build.version.release": "15", "ro.build.version.sdk": "35", "ro.product.cpu.abi": "arm64-v8a"}}
    if cmd.startswith("getprop "):
        print(props.get(cmd.split()[1], ""))
    elif cmd == "cat /proc/cpuinfo":
        print("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\nprocessor\t: 1\nFeatures\t: fp asimd asimddp i8mm")
    elif "benchmark_model" in cmd:
        name = "benchmark_model_nnapi_synap.txt" if "--use_nnapi" in cmd else "benchmark_model_xnnpack_logcat.txt"
        if "--use_gpu" in cmd:
            print("ERROR: Failed to create GPU delegate")
            sys.exit(1)
        print((fx / name).read_text(), end="")
    elif "onnxruntime_perf_test" in cmd:
        print((fx / "perf_test_percentiles.txt").read_text(), end="")
'''


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    path = tmp_path / "adb"
    path.write_text(FAKE_ADB.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "adb.log"
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_FIXTURES", str(FIXTURES))
    return path, log


def test_android_target_end_to_end(fake_adb, tiny_bundle, tiny_tflite_bundle, tmp_path, capsys):
    adb, log = fake_adb
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "benchmark_model").write_text("elf")
    (tools / "onnxruntime_perf_test").write_text("elf")
    tfl = shutil.copytree(tiny_tflite_bundle, tmp_path / "tiny-tflite")  # the phone's copy names the bundle
    out = tmp_path / "phone.json"
    rc = main(["bench", str(tfl), str(tiny_bundle), "--target", "android", "--serial", "R58M", "--adb", str(adb),
               "--benchmark-model", str(tools / "benchmark_model"), "--perf-test", str(tools / "onnxruntime_perf_test"),
               "--delegates", "cpu,gpu,nnapi", "--nnapi-accelerator", "synap-npu", "--threads", "4",
               "--parts", "encoder,decoder", "--runs", "20", "--quiet", "--json", str(out)])
    assert rc == 0
    rows = report.read_json([out])
    by = {(r["name"], r["part"], r["delegate"]): r for r in rows}
    # tflite: cpu (xnnpack) and nnapi for both parts; gpu failed on the device and is a warning, not a row.
    # onnx: cpu and nnapi through perf_test (no GPU provider there: skipped with a warning).
    assert set(by) == {(n, p, d) for p in ("encoder", "decoder")
                       for n, d in (("tiny-tflite", "xnnpack"), ("tiny-tflite", "nnapi:synap-npu"),
                                    ("tiny-fp32", "cpu"), ("tiny-fp32", "nnapi"))}
    err = capsys.readouterr().err  # the CLI prints warnings as one "note:" line each
    assert "[gpu]: no 'Inference timings in us' line" in err and "ERROR: Failed to create GPU delegate" in err
    assert "onnxruntime_perf_test has no GPU provider" in err
    x = by[("tiny-tflite", "encoder", "xnnpack")]
    assert x["engine"] == "benchmark_model" and x["target"] == "android" and x["threads"] == 4
    assert x["stats"]["median_ms"] == pytest.approx(2709.263) and x["stats"]["p90_ms"] is None
    assert x["memory"] == {"kind": "tflite-footprint", "init_delta_mb": 286.73, "peak_mb": 337.0,
                           "call_delta_mb": None}
    assert x["speedup"] is None and x["parity"] is None and x["reference"] is None
    assert x["cpu"] == "Google Pixel 8 (Tensor G3)" and x["cores"] == 2 and "i8mm" in x["isa"]
    assert x["os"] == "Android 15 (API 35)"
    o = by[("tiny-fp32", "decoder", "nnapi")]
    assert o["engine"] == "onnxruntime_perf_test" and o["stats"]["p90_ms"] == pytest.approx(83.8817)
    assert o["memory"]["peak_mb"] == pytest.approx(78946304 / 2**20) and o["init_s"] == pytest.approx(1.14476)
    for r in rows:
        schema.validate_row(r)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(c[:2] == ["-s", "R58M"] for c in calls)
    shell = [c[3] for c in calls if c[2] == "shell"]
    tfl_cmds = [c for c in shell if "benchmark_model" in c and "--graph=" in c]
    assert any("--use_nnapi=true" in c and "--nnapi_accelerator_name=synap-npu" in c for c in tfl_cmds)
    assert all("--num_threads=4" in c and "--num_runs=20" in c for c in tfl_cmds)
    ort_cmds = [c for c in shell if "onnxruntime_perf_test" in c and " -I " in c]
    assert any("-e nnapi" in c and "-x 4" in c and "-r 20" in c for c in ort_cmds)
    pushed = [c[4] for c in calls if c[2] == "push"]
    assert "/data/local/tmp/pocketsam/tiny-tflite/encoder.tflite" in pushed


def test_android_needs_the_tool_for_the_format(tiny_bundle, fake_adb, capsys):
    adb, _ = fake_adb
    assert main(["bench", str(tiny_bundle), "--target", "android", "--adb", str(adb), "--parts", "encoder"]) == 2
    assert "--perf-test PATH" in capsys.readouterr().err
