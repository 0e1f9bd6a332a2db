"""Timing harness: warm-up, then interleaved timed runs (A B A B …), robust statistics, and the machine's identity.

These machines are noisy (shared cores, frequency scaling): one run means nothing, and two cases timed one after
the other see different machines. Interleaving gives every case the same conditions; medians and ratios of medians
are what we report.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Stats:
    """Latency statistics of one case, in milliseconds."""

    runs: int
    median_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> "Stats":
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        if ms.size == 0:
            raise ValueError("no timed runs")
        return cls(
            runs=int(ms.size),
            median_ms=float(np.median(ms)),
            p90_ms=float(np.percentile(ms, 90)),
            min_ms=float(ms.min()),
            max_ms=float(ms.max()),
            mean_ms=float(ms.mean()),
        )

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


# Pause before every timed call. Engines keep their worker threads spinning for a while after a call returns
# (onnxruntime's intra-op pool, XNNPACK's pthreadpool, torch's OpenMP team); back to back, the next contender then
# shares the cores with those spinners. With 0.2 s both contenders time as they do alone (docs/performance.md).
SETTLE_S = 0.2


def interleaved(
    cases: dict[str, Callable[[], object]],
    warmup: int,
    runs: int,
    on_step: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    memory: "MemoryProbe | None" = None,
    settle_s: float = SETTLE_S,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, list[float]]:
    """Time every case `runs` times, in the order A B C A B C …, after `warmup` untimed rounds of each.

    Every timed call is preceded by an untimed pause of `settle_s` seconds, so the previous case's spinning
    worker threads are asleep (see SETTLE_S). Returns seconds per run, per case. `on_step` is called after every
    single call (progress bars). `memory`, if given, is told before and after every timed call (outside the timed
    interval) which case ran.
    """
    if runs < 1 or warmup < 0:
        raise ValueError("runs must be >= 1 and warmup >= 0")
    for _ in range(warmup):
        for fn in cases.values():
            fn()
            if on_step:
                on_step()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, fn in cases.items():
            if settle_s > 0:
                sleep(settle_s)
            if memory is not None:
                memory.before()
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
            if memory is not None:
                memory.after(name)
            if on_step:
                on_step()
    return times


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The ISA extensions that decide which kernels an engine can use (fp32 FMA width, int8 dot products, AMX tiles).
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8",
              "amx_bf16", "asimd", "asimddp", "sve", "i8mm")


def _isa_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags |= set(line.split(":", 1)[1].split())
    return [f for f in _ISA_FLAGS if f in flags]


def git_revision() -> str | None:
    """The repository's HEAD (with "+dirty" when the tree has changes), or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True,
                               timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


# Engines whose versions every row carries (read from package metadata: nothing is imported).
ENGINE_PACKAGES = ("numpy", "torch", "onnxruntime", "onnxruntime-gpu", "ai-edge-litert", "tflite-runtime",
                   "coremltools")


def engine_versions() -> dict[str, str]:
    """{package: version} of the installed engines (absent packages are left out)."""
    from importlib import metadata

    found = {}
    for name in ENGINE_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (how busy the machine was), or None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def device_info() -> dict[str, object]:
    """Where a row was measured: CPU, cores, ISA flags, OS, Python, engine versions, git revision, load, time (UTC)."""
    return {
        "device": platform.node(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "isa": _isa_flags(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "engines": engine_versions(),
        "git": git_revision(),
        "load": load_average(),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if platform.system() != "Darwin" else peak / 2**20  # KiB on Linux, bytes on macOS


def _status_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float | None:
    """Current resident memory of this process in MiB (Linux), or None."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


class MemoryProbe:
    """Per-case peak RSS inside one process (Linux): before each timed call the kernel's high-water mark VmHWM is
    reset (`echo 5 > /proc/self/clear_refs`); after it, VmHWM is the process's peak during that call.

    `peak_mb[case]` is the highest process RSS seen during any call of that case (it includes everything already
    resident: other contenders' models too); `call_delta_mb[case]` the largest rise above the RSS just before a call
    (the call's transient working memory). `available` is False where the mark cannot be reset; then nothing is
    recorded and rows fall back to the process peak, labelled as such.
    """

    def __init__(self) -> None:
        self.peak_mb: dict[str, float] = {}
        self.call_delta_mb: dict[str, float] = {}
        self._start: float | None = None
        self.available = self._reset() and _status_kb("VmHWM") is not None

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def before(self) -> None:
        if self.available:
            self._reset()
            self._start = rss_mb()

    def after(self, case: str) -> None:
        if not self.available or self._start is None:
            return
        hwm = _status_kb("VmHWM") / 1024
        self.peak_mb[case] = max(self.peak_mb.get(case, 0.0), hwm)
        self.call_delta_mb[case] = max(self.call_delta_mb.get(case, 0.0), hwm - self._start)
