#!/usr/bin/env python3
"""ARM64 parity check: pocketsam's runtime, installed from aarch64 wheels into an emulated Debian 12 arm64 userland,
runs `pocketsam verify --reference probe` on bundles exported on this (x86-64) host.

    sudo python3 tools/arm64_check.py [--work DIR] [--json OUT.json] [--markdown OUT.md] [BUNDLE ...]

What it does, each step skipped when its result is already in --work (default /var/tmp/pocketsam-arm64):
1. Debian packages debootstrap, qemu-user-static, binfmt-support (apt-get, when missing); binfmt_misc mounted and
   the qemu-aarch64 handler enabled, so the kernel runs aarch64 ELF files through qemu-user.
2. An arm64 Debian 12 (bookworm) root: `debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv`.
3. Wheels fetched here for the root's CPython (`pip download --platform manylinux_*_aarch64 --only-binary=:all:`);
   pocketsam itself built as a wheel from this checkout. pip evaluates environment markers for the host, not for
   --platform, so the aarch64 requirements are read from the wheel's own metadata with aarch64 markers.
4. In the root (pip there cannot verify this network's TLS, and needs no network): a venv, then
   `pip install --no-index --find-links WHEELS 'pocketsam[onnx,tflite]'` — the root's pip evaluates the markers
   itself, so this is the install a Raspberry Pi would do.
5. Bundles: the ones given, else ONNX fp32 + int8-dynamic and TFLite fp32 + int8-dynamic exported here (vit_t,
   synthetic seed-0 weights; needs `pocketsam[export,export-tflite]`).
6. `pocketsam verify BUNDLE --reference probe --json` inside the root for each bundle, under QEMU_CPU=cortex-a76
   (the Raspberry Pi 5's core: ARMv8.2 with dot product, no SVE, no i8mm; qemu's default "max" CPU would let the
   engines pick SVE/i8mm kernels no Pi or Jetson Orin has), with the CPU lists a board's /sys has (`cpu_lists`: so
   XNNPACK starts, as on a Pi). Parity is judged by the same table as on x86
   (`pocketsam.runtime.parity`); exit 1 when any bundle fails it.

Emulation is ~200x slower than the host: one vit_t encoder run takes minutes. Run as root (chroot, mounts).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = "bookworm"  # Debian 12: Raspberry Pi OS 12's base, Python 3.11
MIRROR = os.environ.get("POCKETSAM_DEBIAN_MIRROR", "http://deb.debian.org/debian")
QEMU_CPU = "cortex-a76"
EXTRAS = ("onnx", "tflite")
# The bundles exported when none is given: (format, precision of both parts).
DEFAULT_BUNDLES = (("onnx", "fp32"), ("onnx", "int8-dynamic"), ("tflite", "fp32"), ("tflite", "int8-dynamic"))
GUEST_ENV = ["PATH=/opt/pocketsam/bin:/usr/bin:/bin", "HOME=/root", "LC_ALL=C.UTF-8", f"QEMU_CPU={QEMU_CPU}"]


def log(msg: str) -> None:
    print(f"[arm64 {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def ensure_host_tools() -> None:
    missing = [p for p, exe in (("debootstrap", "debootstrap"), ("qemu-user-static", "qemu-aarch64-static"),
                                ("binfmt-support", "update-binfmts")) if shutil.which(exe) is None]
    if missing:
        log(f"apt-get install {' '.join(missing)}")
        run(["apt-get", "update", "-qq"])
        run(["apt-get", "install", "-y", "-qq", *missing], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            stdout=subprocess.DEVNULL)
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        run(["mount", "binfmt_misc", "-t", "binfmt_misc", str(binfmt)])
    if not (binfmt / "qemu-aarch64").exists():
        run(["update-binfmts", "--enable", "qemu-aarch64"])
    if "enabled" not in (binfmt / "qemu-aarch64").read_text():
        raise SystemExit("the qemu-aarch64 binfmt handler is registered but disabled")


def release_mounts(root: Path) -> None:
    """Unmount what an interrupted run left mounted inside the root, so nothing ever deletes through a mount."""
    for point in (root / "proc", root / "sys"):
        if os.path.ismount(point):
            run(["umount", "-R", str(point)])


def ensure_root(root: Path) -> None:
    release_mounts(root)
    done = root / ".pocketsam-root-complete"
    if done.exists():
        return
    if root.exists():
        shutil.rmtree(root)
    log(f"debootstrap arm64 {SUITE} -> {root} (a few minutes)")
    r = subprocess.run(["debootstrap", "--arch=arm64", "--variant=minbase", "--include=python3,python3-venv", SUITE,
                        str(root), MIRROR], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        detail = root / "debootstrap" / "debootstrap.log"
        tail = (detail.read_text(errors="replace") if detail.exists() else r.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"debootstrap failed (exit {r.returncode}); its last lines:\n" + "\n".join(tail))
    done.write_text(SUITE + "\n")


def cpu_lists(root: Path) -> None:
    """/sys/devices/system/cpu/{possible,present} in the root, as a board's kernel shows them.

    Both engines find the CPU through pytorch's cpuinfo, which reads these lists. The host's /sys (x86 topology)
    makes it crash under qemu-user (SIGSEGV when onnxruntime opens a session); with no /sys at all it fails to
    initialize, and then XNNPACK does not start: LiteRT silently runs its builtin kernels instead, which is not what
    a Raspberry Pi runs (and its builtin dynamic-range int8 kernels miss the parity table, docs/edge.md). With these
    two files cpuinfo initializes, takes the ISA from the HWCAPs qemu reports for QEMU_CPU, and XNNPACK runs.
    """
    cpu = root / "sys" / "devices" / "system" / "cpu"
    cpu.mkdir(parents=True, exist_ok=True)
    cores = f"0-{(os.cpu_count() or 1) - 1}"
    for name in ("possible", "present", "online"):
        (cpu / name).write_text(cores + "\n")


class Mounted:
    """/proc inside the root while it runs (not the host's /sys: see `cpu_lists`)."""

    def __init__(self, root: Path) -> None:
        self.points = [(root / "proc", ["-t", "proc", "proc"])]

    def __enter__(self):
        for point, how in self.points:
            run(["mount", *how, str(point)])
        return self

    def __exit__(self, *exc):
        for point, _ in reversed(self.points):
            subprocess.run(["umount", "-R", str(point)])
        return False


def guest(root: Path, *argv: str, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["chroot", str(root), "/usr/bin/env", "-i", *GUEST_ENV, *argv], text=True,
                          capture_output=capture)


def aarch64_requirements(wheel: Path, python: str) -> list[str]:
    """pocketsam's requirements with EXTRAS, markers evaluated for aarch64 Linux and the root's CPython."""
    from email.parser import Parser
    from zipfile import ZipFile

    from packaging.requirements import Requirement

    with ZipFile(wheel) as z:
        meta = Parser().parsestr(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode())
    env = {"platform_machine": "aarch64", "sys_platform": "linux", "platform_system": "Linux",
           "python_version": python, "python_full_version": python + ".0", "implementation_name": "cpython"}
    out = []
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in ("",) + EXTRAS):
            req.marker = None
            out.append(str(req))
    return out


def fetch_wheels(root: Path, wheels: Path) -> None:
    py = guest(root, "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])", capture=True)
    if py.returncode != 0:
        raise SystemExit(f"python3 does not run in the arm64 root: {py.stderr.strip()}")
    python = py.stdout.strip()
    if wheels.exists():
        shutil.rmtree(wheels)
    wheels.mkdir(parents=True)
    log(f"pocketsam wheel + aarch64 wheels for CPython {python}")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)])
    wheel = next(wheels.glob("pocketsam-*.whl"))
    reqs = aarch64_requirements(wheel, python)
    platforms = [a for tag in ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
                 for a in ("--platform", tag)]
    run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", *platforms, "--python-version",
         python, "--implementation", "cp", "-d", str(wheels), *reqs])


def install(root: Path, wheels: Path) -> None:
    target = root / "opt" / "wheels"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(wheels, target)
    shutil.rmtree(root / "opt" / "pocketsam", ignore_errors=True)
    log("venv + pip install --no-index 'pocketsam[onnx,tflite]' in the arm64 root")
    r = guest(root, "/bin/sh", "-c", "python3 -m venv /opt/pocketsam && /opt/pocketsam/bin/pip install -q "
              "--no-index --find-links /opt/wheels 'pocketsam[" + ",".join(EXTRAS) + "]'")
    if r.returncode != 0:
        raise SystemExit("pip install in the arm64 root failed")


def export_bundles(out: Path) -> list[Path]:
    import warnings

    from pocketsam.export.bundle_writer import export_bundle

    cache = out / "tflite-cache"
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, precision in DEFAULT_BUNDLES:
        path = out / f"{fmt}-{precision}"
        if not (path / "manifest.json").exists():
            log(f"export {fmt} {precision} (host)")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_bundle(path, format=fmt, encoder_precision=precision, decoder_precision=precision,
                              progress=False, overwrite=True, **({"cache_dir": cache} if fmt == "tflite" else {}))
        paths.append(path)
    return paths


def verify(root: Path, bundles: list[Path], threads: int) -> list[dict]:
    results = []
    staged = root / "opt" / "bundles"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    for i, bundle in enumerate(bundles):
        inside = f"/opt/bundles/{i}-{bundle.name}"
        shutil.copytree(bundle, root / inside.lstrip("/"))
        log(f"verify {bundle} in the arm64 root ({i + 1}/{len(bundles)})")
        t0 = time.monotonic()
        r = guest(root, "pocketsam", "verify", inside, "--reference", "probe", "--threads", str(threads), "--json",
                  inside + ".json", capture=True)
        seconds = time.monotonic() - t0
        sys.stdout.write(r.stdout)
        report_path = root / (inside + ".json").lstrip("/")
        if r.returncode not in (0, 1) or not report_path.exists():
            sys.stdout.write(r.stderr)
            raise SystemExit(f"pocketsam verify did not run in the arm64 root (exit {r.returncode})")
        report = json.loads(report_path.read_text())
        report.update(bundle=str(bundle), seconds=round(seconds, 1), qemu_cpu=QEMU_CPU)
        results.append(report)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", nargs="*", type=Path, metavar="BUNDLE")
    p.add_argument("--work", type=Path, default=Path("/var/tmp/pocketsam-arm64"))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--json", type=Path, help="the verify reports, one per bundle, with their wall times")
    p.add_argument("--markdown", type=Path, help="the parity table (docs/edge.md's ARM64 table)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: the check uses chroot and mount")
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so the root's /proc is unmounted on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    start = time.monotonic()
    ensure_host_tools()
    root = args.work / "root"
    ensure_root(root)
    cpu_lists(root)
    with Mounted(root):
        fetch_wheels(root, args.work / "wheels")
        install(root, args.work / "wheels")
        bundles = args.bundles or export_bundles(args.work / "bundles")
        results = verify(root, bundles, args.threads)
    total = time.monotonic() - start
    from pocketsam.benchmarks.parity_docs import verify_reports_markdown

    table = verify_reports_markdown(results)
    print(table)
    failed = [r["bundle"] for r in results if not r["passed"]]
    log(f"done in {total:.0f} s; " + (f"FAIL: {', '.join(failed)}" if failed else "every bundle PASS on aarch64"))
    if args.json:
        args.json.write_text(json.dumps({"seconds": round(total, 1), "reports": results}, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
