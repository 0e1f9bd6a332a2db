"""The `android` target: push each bundle's model files and the vendors' own benchmark tools over adb, run them on
the phone, and parse what they print into the same rows as the local target.

- `.tflite` parts: TensorFlow Lite's `benchmark_model` (XNNPACK with `--num_threads`, `--use_gpu`, `--use_nnapi`
  with `--nnapi_accelerator_name`).
- `.onnx` parts: ONNX Runtime's `onnxruntime_perf_test` (`-e cpu|xnnpack|nnapi`, inputs generated with `-I`).

The binaries are given by path (built from source or downloaded by the user; neither project ships them in a
package). Only the `encoder` and `decoder` parts exist here: `prompt` and `e2e` need the Python runtime on the
device. The tools print no comparable outputs, so rows carry no parity (run `pocketsam verify` with that engine) and
no speed-up (no reference runs on the phone).

What each tool reports, and what becomes of it (never estimated when it is missing):
- benchmark_model: `count=… first=… curr=… min=… max=… avg=… std=…[ p5=… median=… p95=…]` for the regular runs,
  `Inference timings in us: Init: …, First inference: …, Warmup (avg): …, Inference (avg): …`, and memory as
  `Memory footprint delta from the start of the tool (MB): init=… overall=…` (older builds: `Peak memory footprint
  (MB): init=… overall=…`). No p90: that cell stays None; median only where the build prints it.
- onnxruntime_perf_test: `Session creation time cost: … s`, `Total inference requests: …`, `Average inference time
  cost: … ms`, `Peak working set size: … bytes`, and `Min/Max/P50/P90/… Latency: … s` (newer builds; older ones
  write `P90 Latency is … sec`, the oldest print none).
"""

from __future__ import annotations

import datetime as _dt
import re
import shlex
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from pocketsam.runtime import spec
from pocketsam.runtime.bundle import load_bundle
from pocketsam.runtime.errors import BackendError

from .harness import git_revision
from .schema import make_row

REMOTE_DIR = "/data/local/tmp/pocketsam"
TFLITE_DELEGATES = ("cpu", "gpu", "nnapi")
ORT_DELEGATES = ("cpu", "xnnpack", "nnapi")
ANDROID_PARTS = ("encoder", "decoder")

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"


# --- parsing the tools' output -------------------------------------------------------------------------------


def _kv(line: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(\w+)=" + _NUM, line)}


def parse_benchmark_model(text: str) -> dict[str, float | None]:
    """Timings (ms) and memory (MB) from TFLite benchmark_model's output; raises ValueError if it has no result."""
    timings = re.search(r"Inference timings in us: Init: " + _NUM + r", First inference: " + _NUM +
                        r", Warmup \(avg\): " + _NUM + r", Inference \(avg\): " + _NUM, text)
    if not timings:
        raise ValueError("no 'Inference timings in us' line (did benchmark_model fail?)")
    before = text[: timings.start()]
    counts = [line for line in before.splitlines() if re.search(r"\bcount=\d", line)]
    run = _kv(counts[-1]) if counts else {}
    init_us, first_us, warm_us, avg_us = (float(x) for x in timings.groups())
    out: dict[str, float | None] = {
        "init_s": init_us / 1e6,
        "first_ms": first_us / 1e3,
        "warmup_avg_ms": warm_us / 1e3,
        "mean_ms": avg_us / 1e3,
        "runs": run.get("count"),
        "min_ms": run["min"] / 1e3 if "min" in run else None,
        "max_ms": run["max"] / 1e3 if "max" in run else None,
        "median_ms": run["median"] / 1e3 if "median" in run else None,
        "p90_ms": None,  # benchmark_model prints p5/median/p95 at most: p90 is not estimated
        "mem_init_mb": None,
        "mem_overall_mb": None,
        "mem_peak_mb": None,
    }
    mem = re.search(r"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): init=" +
                    _NUM + r" overall=" + _NUM, text)
    if mem:
        out["mem_init_mb"], out["mem_overall_mb"] = float(mem.group(1)), float(mem.group(2))
    peak = re.search(r"Overall peak memory footprint \(MB\) via periodic monitoring: " + _NUM, text)
    if peak:
        out["mem_peak_mb"] = float(peak.group(1))
    version = re.search(r"Tensorflow Version : (\S+)", text)
    out["version"] = version.group(1) if version else None  # type: ignore[assignment]
    return out


def _latency_s(text: str, name: str) -> float | None:
    m = re.search(name + r" Latency(?::| is) " + _NUM + r" s", text)
    return float(m.group(1)) if m else None


def parse_perf_test(text: str) -> dict[str, float | None]:
    """Timings (ms), session creation (s) and peak working set (bytes) from onnxruntime_perf_test's output."""
    avg = re.search(r"Average (?:inference )?time cost: ?" + _NUM + r" ms", text)
    if not avg:
        raise ValueError("no 'Average inference time cost' line (did onnxruntime_perf_test fail?)")

    def num(pattern: str) -> float | None:
        m = re.search(pattern + _NUM, text)
        return float(m.group(1)) if m else None

    def ms(name: str) -> float | None:
        v = _latency_s(text, name)
        return None if v is None else v * 1e3

    return {
        "init_s": num(r"Session creation time cost: ?"),
        "first_ms": num(r"First inference time cost: ?"),
        "mean_ms": float(avg.group(1)),
        "runs": num(r"Total inference requests: ?") or num(r"Total iterations: ?") or num(r"Runs: ?"),
        "min_ms": ms("Min"),
        "max_ms": ms("Max"),
        "median_ms": ms("P50"),
        "p90_ms": ms("P90"),
        "peak_working_set_bytes": num(r"Peak working set size: ?"),
    }


# --- adb -----------------------------------------------------------------------------------------------------


@dataclass
class Adb:
    """`adb [-s SERIAL] …` with errors as BackendError. `runner` is subprocess.run (tests pass a fake adb path)."""

    adb: str = "adb"
    serial: str | None = None
    runner: Callable[..., subprocess.CompletedProcess] = subprocess.run

    def _call(self, *args: str, check: bool = True) -> str:
        cmd = [self.adb] + (["-s", self.serial] if self.serial else []) + list(args)
        try:
            proc = self.runner(cmd, capture_output=True, text=True, timeout=3600)
        except FileNotFoundError:
            raise BackendError(f"adb not found at {self.adb!r} (install platform-tools, or pass --adb PATH)") from None
        if check and proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BackendError(f"{' '.join(cmd[:4])} … failed ({proc.returncode}): {tail[0]}")
        return proc.stdout + proc.stderr

    def shell(self, command: str, check: bool = True) -> str:
        return self._call("shell", command, check=check)

    def push(self, local: Path, remote: str) -> None:
        self._call("push", str(local), remote)

    def getprop(self, name: str) -> str:
        return self.shell(f"getprop {name}").strip()


def android_device_info(adb: Adb) -> dict[str, object]:
    """The phone's identity in the row's device fields (model, SoC, cores, CPU features, Android version)."""
    cpuinfo = adb.shell("cat /proc/cpuinfo", check=False)
    features: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.lower().startswith("features"):
            features |= set(line.split(":", 1)[1].split())
    cores = sum(1 for line in cpuinfo.splitlines() if re.match(r"processor\s*:", line)) or None
    soc = adb.getprop("ro.soc.model") or adb.getprop("ro.board.platform")
    model = f"{adb.getprop('ro.product.manufacturer')} {adb.getprop('ro.product.model')}".strip()
    from .harness import _ISA_FLAGS

    return {
        "device": model or (adb.serial or "android"),
        "cpu": f"{model} ({soc})" if soc else model,
        "cores": cores,
        "isa": [f for f in _ISA_FLAGS if f in features],
        "os": f"Android {adb.getprop('ro.build.version.release')} (API {adb.getprop('ro.build.version.sdk')})",
        "machine": adb.getprop("ro.product.cpu.abi"),
        "python": None,
        "engines": {},
        "git": git_revision(),
        "load": None,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# --- the target ----------------------------------------------------------------------------------------------


@dataclass
class AndroidConfig:
    """How to reach the phone and which tools and delegates to run."""

    serial: str | None = None
    adb: str = "adb"
    benchmark_model: Path | None = None  # TFLite's benchmark_model built for the phone's ABI
    perf_test: Path | None = None  # ONNX Runtime's onnxruntime_perf_test built for Android
    delegates: Sequence[str] = ("cpu",)  # cpu (XNNPACK for TFLite), gpu, nnapi, xnnpack (ORT's EP)
    nnapi_accelerator: str | None = None  # e.g. "qti-dsp", "google-edgetpu"; None: NNAPI picks
    threads: int | None = None
    warmup: int = 2
    runs: int = 10
    remote_dir: str = REMOTE_DIR
    runner: Callable[..., subprocess.CompletedProcess] = field(default=subprocess.run, repr=False)


def tflite_command(tool: str, model: str, delegate: str, cfg: AndroidConfig) -> str:
    args = [tool, f"--graph={model}", f"--warmup_runs={cfg.warmup}", f"--num_runs={cfg.runs}"]
    if cfg.threads:
        args.append(f"--num_threads={cfg.threads}")
    if delegate == "cpu":
        args.append("--use_xnnpack=true")
    elif delegate == "gpu":
        args.append("--use_gpu=true")
    elif delegate == "nnapi":
        args.append("--use_nnapi=true")
        if cfg.nnapi_accelerator:
            args.append(f"--nnapi_accelerator_name={cfg.nnapi_accelerator}")
    else:
        raise BackendError(f"benchmark_model has no delegate {delegate!r} (choose from {', '.join(TFLITE_DELEGATES)})")
    return " ".join(shlex.quote(a) for a in args)


def ort_command(tool: str, model: str, delegate: str, cfg: AndroidConfig) -> str:
    if delegate not in ORT_DELEGATES:
        raise BackendError(f"onnxruntime_perf_test has no delegate {delegate!r} (choose from {', '.join(ORT_DELEGATES)})")
    args = [tool, "-I", "-m", "times", "-r", str(cfg.runs), "-e", delegate]
    if cfg.threads:
        args += ["-x", str(cfg.threads)]
    return " ".join(shlex.quote(a) for a in args + [model])


def _row(bundle, part: str, tool: str, delegate: str, parsed: dict, cfg: AndroidConfig, device: dict) -> dict:
    stats = {k: parsed.get(k) for k in ("median_ms", "p90_ms", "min_ms", "max_ms", "mean_ms")}
    stats["runs"] = int(parsed["runs"]) if parsed.get("runs") is not None else None
    if tool == "benchmark_model":
        memory = {"kind": "tflite-footprint", "init_delta_mb": parsed.get("mem_init_mb"),
                  "peak_mb": parsed.get("mem_peak_mb") or parsed.get("mem_overall_mb"), "call_delta_mb": None}
        dlg = f"nnapi:{cfg.nnapi_accelerator}" if delegate == "nnapi" and cfg.nnapi_accelerator else delegate
        dlg = "xnnpack" if delegate == "cpu" else dlg
    else:
        ws = parsed.get("peak_working_set_bytes")
        memory = {"kind": "ort-peak-working-set", "init_delta_mb": None,
                  "peak_mb": ws / 2**20 if ws is not None else None, "call_delta_mb": None}
        dlg = delegate
    return make_row(
        target="android", name=bundle.root.name, engine=tool, engine_version=parsed.get("version"),
        delegate=dlg, part=part, format=bundle.format, precision=bundle.part(part).precision,
        threads=cfg.threads, stats=stats, init_s=parsed.get("init_s"), memory=memory,
        model_bytes=bundle.part(part).size_bytes, is_reference=False, reference=None, speedup=None, parity=None,
        note="first inference %.1f ms; parity not measured on the device" % parsed["first_ms"]
        if parsed.get("first_ms") is not None else "parity not measured on the device",
        **device,
    )


def bench_android(bundles: Sequence[Path], parts: Sequence[str], cfg: AndroidConfig,
                  progress: bool = True) -> list[dict]:
    """Run every (bundle, part, delegate) on the phone; one row each. A delegate the tool rejects is a warning
    naming it, not a crash of the whole run."""
    parts = [p for p in parts if p in ANDROID_PARTS]
    if not parts:
        raise BackendError("the android target times the encoder and decoder parts only (--parts encoder,decoder)")
    loaded = [load_bundle(p) for p in bundles]
    for b in loaded:
        if b.format not in ("tflite", "onnx"):
            raise BackendError(f"{b.root}: the android target runs tflite and onnx bundles, not {b.format}")
        tool = cfg.benchmark_model if b.format == "tflite" else cfg.perf_test
        if tool is None:
            flag = "--benchmark-model" if b.format == "tflite" else "--perf-test"
            raise BackendError(f"{b.root} is a {b.format} bundle: give the Android binary with {flag} PATH")
        if not Path(tool).exists():
            raise BackendError(f"{tool}: no such file")
    adb = Adb(cfg.adb, cfg.serial, cfg.runner)
    device = android_device_info(adb)
    adb.shell(f"mkdir -p {cfg.remote_dir}")
    remote_tools: dict[str, str] = {}
    for local, name in ((cfg.benchmark_model, "benchmark_model"), (cfg.perf_test, "onnxruntime_perf_test")):
        if local is not None and any((b.format == "tflite") == (name == "benchmark_model") for b in loaded):
            remote = f"{cfg.remote_dir}/{Path(local).name}"
            adb.push(Path(local), remote)
            adb.shell(f"chmod +x {remote}")
            remote_tools[name] = remote
    jobs = []
    for b in loaded:
        tool = "benchmark_model" if b.format == "tflite" else "onnxruntime_perf_test"
        for part in parts:
            remote_model = f"{cfg.remote_dir}/{b.root.name}/{b.part(part).path.name}"
            jobs.append((b, part, tool, remote_model))
    rows = []
    delegates = list(cfg.delegates)
    from .local import _progress

    with _progress(len(jobs) * len(delegates), progress) as bar:
        for b, part, tool, remote_model in jobs:
            adb.shell(f"mkdir -p {cfg.remote_dir}/{b.root.name}")
            adb.push(b.part(part).path, remote_model)
            if (tool == "onnxruntime_perf_test" and part == "decoder"
                    and spec.has_image_cache(list(b.manifest["parts"]["decoder"].get("shapes", {})))):
                warnings.warn(f"{b.root.name} decoder: onnxruntime_perf_test -I feeds random inputs, so the image "
                              "cache's use_image_cache flag is random too: the row mixes clicks that read the cache "
                              "and clicks that compute it (time the decoder in place with the local target)")
            for delegate in delegates:
                bar.update()
                if tool == "onnxruntime_perf_test" and delegate == "gpu":
                    warnings.warn(f"{b.root.name} {part}: onnxruntime_perf_test has no GPU provider on Android; skipped")
                    continue
                make = tflite_command if tool == "benchmark_model" else ort_command
                text = adb.shell(make(remote_tools[tool], remote_model, delegate, cfg), check=False)
                try:
                    parsed = (parse_benchmark_model if tool == "benchmark_model" else parse_perf_test)(text)
                except ValueError as e:
                    last = next((ln for ln in reversed(text.strip().splitlines()) if ln.strip()), "no output")
                    warnings.warn(f"{b.root.name} {part} [{delegate}]: {e}; last line: {last.strip()}")
                    continue
                rows.append(_row(b, part, tool, delegate, parsed, cfg, device))
    return rows
