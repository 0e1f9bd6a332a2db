"""Benchmark harness: statistics, interleaving, the row schema, reports, plots, merge, reference modes, CLI.

No test asserts a duration: timings come from a fake clock or are only checked for shape."""

from __future__ import annotations

import builtins
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from _bench_fakes import FakeDecoder, FakeEncoder
from pocketsam.benchmarks import harness, report, schema
from pocketsam.benchmarks.local import Contender, bench_local, reference_contender, run_local
from pocketsam.cli import main
from pocketsam.runtime.errors import MissingEngineError

IMAGE = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


# --- statistics and interleaving ------------------------------------------------------------------------------


def test_stats_of_known_values():
    s = harness.Stats.of([0.001 * v for v in (5, 1, 4, 2, 3, 10, 6, 7, 9, 8)])
    assert (s.runs, s.median_ms, s.min_ms, s.max_ms, s.mean_ms) == (10, 5.5, 1.0, 10.0, 5.5)
    assert s.p90_ms == pytest.approx(9.1)  # numpy's linear interpolation between the 9th and 10th values
    with pytest.raises(ValueError):
        harness.Stats.of([])


def test_interleaved_order_warmup_and_fake_clock():
    calls: list[str] = []
    ticks = iter(range(1000))
    cases = {n: (lambda n=n: calls.append(n)) for n in "ABC"}
    steps, pauses = [], []
    times = harness.interleaved(cases, warmup=2, runs=3, on_step=lambda: steps.append(1), clock=lambda: next(ticks),
                                sleep=pauses.append)
    assert calls == list("ABC") * 5  # two untimed rounds, then A B C A B C A B C
    assert len(steps) == 15
    assert pauses == [harness.SETTLE_S] * 9  # one settling pause before every timed call, none in the warm-up
    assert times == {n: [1, 1, 1] for n in "ABC"}  # each timed call spans exactly one tick of the fake clock
    with pytest.raises(ValueError):
        harness.interleaved(cases, warmup=-1, runs=1)


def test_memory_probe_records_every_case():
    probe = harness.MemoryProbe()
    if not probe.available:
        pytest.skip("VmHWM cannot be reset here")
    harness.interleaved({"a": lambda: bytearray(8 << 20), "b": lambda: None}, 0, 2, memory=probe, settle_s=0)
    assert set(probe.peak_mb) == {"a", "b"} and probe.call_delta_mb["a"] >= 0


def test_device_info_fields():
    info = harness.device_info()
    for key in ("device", "cpu", "cores", "isa", "os", "python", "engines", "git", "time", "load"):
        assert key in info
    assert "numpy" in info["engines"]


# --- schema -----------------------------------------------------------------------------------------------------


def _row(**over):
    base = dict(target="local", name="b", engine="onnxruntime", part="encoder", precision="fp32",
                stats={"runs": 3, "median_ms": 2.0, "p90_ms": 3.0, "min_ms": 1.0, "max_ms": 3.0, "mean_ms": 2.0},
                is_reference=False, device="host", time="2026-01-01T00:00:00+00:00", cpu="Test CPU")
    base.update(over)
    return schema.make_row(**base)


def test_make_row_fills_every_key_and_validates():
    r = _row()
    assert r["schema"] == schema.SCHEMA_VERSION and r["speedup"] is None and r["parity"] is None
    with pytest.raises(ValueError, match="unknown row field"):
        _row(colour="red")
    with pytest.raises(ValueError, match="unknown part"):
        _row(part="everywhere")
    with pytest.raises(ValueError, match="speed-up needs the torch reference"):
        _row(speedup=2.0, reference="probe")
    with pytest.raises(ValueError, match="non-negative"):
        _row(stats={"median_ms": -1.0})
    with pytest.raises(ValueError, match="memory kind"):
        _row(memory={"kind": "vibes"})


def test_json_roundtrip_and_legacy_list(tmp_path):
    rows = [_row(), _row(part="decoder", stats={"median_ms": 1.0, "mean_ms": 1.0})]
    report.write_json(rows, tmp_path / "r.json")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["schema"] == schema.SCHEMA_VERSION and len(doc["rows"]) == 2
    (tmp_path / "legacy.json").write_text(json.dumps(rows))
    assert report.read_json([tmp_path / "r.json", tmp_path / "legacy.json"]) == rows + rows
    (tmp_path / "bad.json").write_text(json.dumps({"rows": [{"name": "x"}]}))
    with pytest.raises(ValueError, match="bad.json"):
        report.read_json([tmp_path / "bad.json"])


# --- the local target on fake sessions ----------------------------------------------------------------------


def _fake(name: str, log: list | None = None) -> Contender:
    return Contender(name, "fake", {"encoder": "fp32", "decoder": "fp32"}, FakeEncoder(log, name), FakeDecoder(),
                     0.01, engine_version="0", delegate="cpu", init_rss_delta_mb=1.0)


def test_run_local_interleaves_contenders_and_fills_rows():
    log: list[str] = []
    rows = run_local([_fake("ref", log), _fake("x", log)], IMAGE, ("encoder",), warmup=1, runs=3,
                     reference="torch", progress=False, reference_name="ref")
    # preparing each contender's cases runs its encoder once (ref, x); then 1 warm-up + 3 timed rounds
    # alternate ref x ref x …; then parity runs each encoder once more (reference recording, comparison)
    assert log == ["ref", "x"] + ["ref", "x"] * 4 + ["ref", "x"]
    assert [r["name"] for r in rows] == ["ref", "x"]
    ref, x = rows
    assert ref["is_reference"] and not x["is_reference"]
    assert x["speedup"] == pytest.approx(ref["stats"]["median_ms"] / x["stats"]["median_ms"])
    assert x["stats"]["runs"] == 3 and x["reference"] == "torch" and "embedding_max_abs" in x["parity"]
    assert x["memory"]["kind"] in schema.MEMORY_KINDS and x["memory"]["init_delta_mb"] == 1.0
    for r in rows:
        schema.validate_row(r)


def test_markdown_short_table_and_method():
    rows = run_local([_fake("ref"), _fake("x")], IMAGE, ("decoder", "prompt"), 0, 2, "torch", False,
                     reference_name="ref")
    md = report.to_markdown(rows)
    lines = md.splitlines()
    assert lines[0].startswith("| device | target | contender | part |")
    assert sum(1 for ln in lines if ln.startswith("| ")) == 1 + len(rows)
    assert "| ref |" in md  # the reference's speed-up cell
    assert "×" in md
    assert "x" in report.short_table(rows)
    note = report.method_note(rows, 2, 0)
    assert "interleaved" in note and "load average" in note


def test_everything_part_splits_its_time():
    rows = run_local([_fake("ref"), _fake("x")], IMAGE, ("everything",), 0, 2, "torch", False, reference_name="ref")
    for r in rows:
        assert r["part"] == "everything" and set(r["breakdown"]) == {"encoder_ms", "decoder_ms", "postprocess_ms"}
        assert sum(r["breakdown"].values()) <= r["stats"]["max_ms"] + 1
    assert "everything (encoder " in report.to_markdown(rows) and "decoder " in report.short_table(rows)


def test_plot_png(tmp_path):
    from pocketsam.benchmarks.plot import plot_rows

    rows = [_row(), _row(name="c", stats={"median_ms": 4.0, "p90_ms": 5.0}), _row(part="decoder"),
            _row(part="decoder", cpu="Phone", target="android", stats={"mean_ms": 2.5})]  # no median: mean bar
    out = plot_rows(rows, tmp_path / "p.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


# --- reference modes ------------------------------------------------------------------------------------------


def test_torch_reference_without_torch_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("no torch here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(MissingEngineError, match="--reference probe"):
        reference_contender(None, None)
    with pytest.raises(MissingEngineError, match="needs PyTorch"):
        bench_local([Path("/nonexistent")], IMAGE, ("decoder",), reference="torch", progress=False)


def test_a_failed_memory_measurement_keeps_the_timings(tiny_bundle, monkeypatch):
    """The fresh process measuring a contender's memory alone fails (here: its engine cannot run there): the row
    keeps its timings, without a peak, and the failure is a warning that says why."""
    from pocketsam.benchmarks import memory

    def fail(recipe, image, parts, timeout_s=1800):
        raise RuntimeError(f"measuring {recipe['name']} alone failed: BackendError: no engine here")

    monkeypatch.setattr(memory, "alone_peak_mb", fail)
    with pytest.warns(UserWarning, match="peak RSS alone not measured: .* no engine here"):
        (row,) = bench_local([tiny_bundle], IMAGE, ("decoder",), threads=1, warmup=0, runs=1, reference="none",
                             progress=False)
    assert row["stats"]["median_ms"] > 0 and row["memory"]["alone_peak_mb"] is None


# --- CLI --------------------------------------------------------------------------------------------------------


def test_cli_bench_probe_writes_json_markdown_plot(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    rc = main(["bench", str(tiny_bundle), "--parts", "decoder", "--runs", "1", "--warmup", "0", "--threads", "1",
               "--reference", "probe", "--quiet", "--json", str(out / "r.json"), "--markdown", str(out / "r.md"),
               "--plot", str(out / "r.png")])
    assert rc == 0
    (r,) = report.read_json([out / "r.json"])
    # --reference probe: parity against the bundle's own export-time probe, and no speed-up (nothing invented)
    assert r["reference"] == "probe" and r["speedup"] is None and not r["is_reference"]
    assert r["parity"]["mask_iou"] > 0.999
    assert r["threads"] == 1 and r["model_bytes"] > 0 and r["delegate"] == "CPUExecutionProvider"
    if sys.platform.startswith("linux"):  # peak RSS of a process that held only this bundle and ran only this part
        assert 40 < r["memory"]["alone_peak_mb"] < 2000
        assert f"{r['memory']['alone_peak_mb']:.0f} MiB" in capsys.readouterr().out
        assert "peak RSS = the peak resident memory of a fresh process" in (out / "r.md").read_text()
    assert "## Method" in (out / "r.md").read_text()
    assert (out / "r.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, message", [
    (["bench", "b", "--parts", "encoder,everywhere"], "unknown part"),
    (["bench", "b", "--runs", "0"], "--runs: must be >= 1"),
    (["bench", "b", "--serial", "X"], "only apply to --target android"),
    (["bench", "b", "--compute-units", "ALL"], "only applies to --target apple"),
    (["bench", "b", "--target", "android", "--parts", "prompt"], "encoder and decoder only"),
    (["bench", "b", "--target", "android", "--reference", "torch"], "no PyTorch reference on the phone"),
    (["bench", "merge"], "at least one results file"),
    (["bench", "merge", "a.json", "--threads", "2"], "belong(s) to a measurement"),
])
def test_cli_bench_usage_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_merge_joins_devices(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    report.write_json([_row(cpu="Pi 5")], a)
    report.write_json([_row(cpu="Jetson Orin", name="trt")], b)
    for cmd in (["bench-merge", str(a), str(b)], ["bench", "merge", str(a), str(b)]):
        assert main(cmd + ["--markdown", str(tmp_path / "m.md"), "--plot", str(tmp_path / "m.png"),
                           "--json", str(tmp_path / "m.json")]) == 0
        md = (tmp_path / "m.md").read_text()
        assert "Pi 5" in md and "Jetson Orin" in md
        assert len(report.read_json([tmp_path / "m.json"])) == 2
    (tmp_path / "broken.json").write_text("{")
    assert main(["bench-merge", str(tmp_path / "broken.json")]) == 2
    assert "not a readable results file" in capsys.readouterr().err
