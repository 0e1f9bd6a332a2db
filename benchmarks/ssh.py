"""The `ssh` target: bench bundles on a board (Raspberry Pi, Jetson) that has the torch-free runtime installed.

    pocketsam bench --target ssh://pi@raspberrypi.local[:22] bundles/onnx-fp32 bundles/tflite-int8-dynamic

1. `ssh` (OpenSSH, non-interactive: BatchMode, a connect timeout) checks the board answers and that the
   `pocketsam --version` there is this one's (a bench row is only comparable with its own runtime's).
2. Each bundle is copied once, by hash: its identity is the sha256 of its `manifest.json` (which records the sha256
   of every file it holds), and it lands in `REMOTE_CACHE/<hash[:16]>-<name>/` as a tar stream over ssh, unpacked
   into a temporary folder and renamed when complete. A bundle already there is not copied again; the free space
   of the cache folder is checked first (`df`), and a disk that fills up during the copy is reported as such.
3. The board runs its own `pocketsam bench --reference probe --json` on the copied bundles (parity against each
   bundle's probe, no torch there) and the rows come back into this report with target "ssh" and the board's own
   device fields, so `bench-merge` joins them with any other device's.

Every failure a user can meet (host unreachable, authentication refused, no pocketsam on the board, another
pocketsam version there, a full disk) is a one-line `TargetError`: the CLI prints it and exits 2.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from pocketsam.runtime.bundle import load_bundle
from pocketsam.runtime.errors import PocketSamError

from .schema import rows_of

SCHEME = "ssh://"
DEFAULT_REMOTE_CACHE = "~/.cache/pocketsam/bundles"
CONNECT_TIMEOUT_S = 10
# ssh's own exit status when the connection or authentication fails (a remote command's status otherwise).
SSH_FAILED = 255
COMMAND_NOT_FOUND = 127


class TargetError(PocketSamError, RuntimeError):
    """The remote board cannot be reached, refuses us, lacks pocketsam (or has another version), or is full."""


@dataclass(frozen=True)
class SshTarget:
    """Where to run: `ssh://[user@]host[:port]`."""

    host: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        return SCHEME + self.destination + (f":{self.port}" if self.port else "")


def parse_target(text: str) -> SshTarget:
    """`ssh://[user@]host[:port]` (IPv6 hosts in brackets: ssh://pi@[fe80::1]:2222); ValueError otherwise."""
    if not text.startswith(SCHEME):
        raise ValueError(f"not an ssh target: {text!r} (expected ssh://[user@]host[:port])")
    m = re.fullmatch(r"(?:([^@/:\s]+)@)?(\[[0-9A-Fa-f:.]+\]|[^@/:\[\]\s]+)(?::(\d{1,5}))?/?", text[len(SCHEME):])
    if not m:
        raise ValueError(f"not an ssh target: {text!r} (expected ssh://[user@]host[:port])")
    user, host, port = m.groups()
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: port {port} is not in 1..65535")
    return SshTarget(host.strip("[]"), user, int(port) if port else None)


@dataclass
class SshConfig:
    """How to reach the board and what to run there.

    ssh_config: an OpenSSH client config file (`ssh -F`; identity, known hosts, jump hosts), else ~/.ssh/config.
    remote_pocketsam: the `pocketsam` command on the board (a venv's `~/venv/bin/pocketsam`: non-interactive ssh
    sessions do not read the shell profile that would put a venv on PATH). remote_cache: where bundles are kept.
    """

    target: SshTarget
    ssh_config: Path | None = None
    remote_pocketsam: str = "pocketsam"
    remote_cache: str = DEFAULT_REMOTE_CACHE
    connect_timeout_s: int = CONNECT_TIMEOUT_S
    extra_options: list[str] = field(default_factory=list)

    def ssh_argv(self) -> list[str]:
        argv = ["ssh"]
        if self.ssh_config is not None:
            argv += ["-F", str(self.ssh_config)]
        if self.target.port:
            argv += ["-p", str(self.target.port)]
        # BatchMode: never prompt (a password prompt would hang a benchmark); keep-alives bound a dead link.
        argv += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}",
                 "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", *self.extra_options]
        return argv + [self.target.destination]


def _remote_path(path: str) -> str:
    """A remote path for a POSIX shell: `~/x` stays expandable, everything else is quoted."""
    if path == "~" or path.startswith("~/"):
        return '"$HOME"' + (shlex.quote(path[1:]) if len(path) > 1 else "")
    return shlex.quote(path)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _connection_error(cfg: SshConfig, stderr: str) -> TargetError:
    """The one-line message for ssh's own failure (exit 255), by what ssh printed."""
    line = _last_line(stderr)
    where = str(cfg.target)
    if "Permission denied" in stderr or "Too many authentication failures" in stderr:
        return TargetError(f"{where}: authentication refused ({line}); check the key (ssh-copy-id, or IdentityFile "
                           "in --ssh-config) and the user name")
    if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        return TargetError(f"{where}: host key not trusted ({line}); connect once with ssh to accept it")
    if "Could not resolve hostname" in stderr:
        return TargetError(f"{where}: unknown host ({line})")
    return TargetError(f"{where}: unreachable ({line})")


@dataclass(frozen=True)
class Result:
    """A remote command's exit status and output (stderr empty when it went to this terminal)."""

    returncode: int
    stdout: str
    stderr: str


class Remote:
    """Commands on the board over ssh; every failure a TargetError with one line."""

    def __init__(self, cfg: SshConfig, runner=subprocess.run) -> None:
        self.cfg = cfg
        self._run = runner

    def run(self, command: str, stdin: bytes | None = None, timeout: float = 600,
            stream_stderr: bool = False) -> Result:
        """Run a shell command on the board; raise TargetError when ssh itself fails (exit 255).

        stream_stderr: the command's stderr goes to this terminal as it comes (the board's progress bars)."""
        try:
            proc = self._run(self.cfg.ssh_argv() + [command], input=stdin, stdout=subprocess.PIPE,
                             stderr=None if stream_stderr else subprocess.PIPE, timeout=timeout)
        except FileNotFoundError:
            raise TargetError("ssh is not installed here (Debian/Ubuntu: apt-get install openssh-client)") from None
        except subprocess.TimeoutExpired:
            raise TargetError(f"{self.cfg.target}: no answer to {command.split()[0]!r} within {timeout:.0f} s") from None
        res = Result(proc.returncode, (proc.stdout or b"").decode(errors="replace"),
                     (proc.stderr or b"").decode(errors="replace"))
        if res.returncode == SSH_FAILED:
            if stream_stderr:
                raise TargetError(f"{self.cfg.target}: the ssh connection failed (exit 255; ssh's message is above)")
            raise _connection_error(self.cfg, res.stderr)
        return res

    def pocketsam(self, *argv: str) -> str:
        return " ".join([self.cfg.remote_pocketsam] + [shlex.quote(a) for a in argv])


def check_version(remote: Remote, local_version: str) -> str:
    """The board's pocketsam version; TargetError when there is none or it is not `local_version`."""
    proc = remote.run(remote.pocketsam("--version"), timeout=120)
    out = proc.stdout.strip()
    if proc.returncode == COMMAND_NOT_FOUND or (proc.returncode != 0 and "not found" in proc.stderr):
        raise TargetError(f"{remote.cfg.target}: no pocketsam there ({_last_line(proc.stderr)}); install it on "
                          "the board (pip install 'pocketsam[onnx]' or '[tflite]') or give --remote-pocketsam PATH")
    m = re.fullmatch(r"pocketsam (\S+)", out.splitlines()[-1] if out else "")
    if proc.returncode != 0 or not m:
        raise TargetError(f"{remote.cfg.target}: `{remote.cfg.remote_pocketsam} --version` did not answer like "
                          f"pocketsam (exit {proc.returncode}: {_last_line(proc.stderr or out)})")
    if m.group(1) != local_version:
        raise TargetError(f"{remote.cfg.target}: pocketsam {m.group(1)} there, {local_version} here; install the "
                          f"same version on the board (pip install 'pocketsam=={local_version}')")
    return m.group(1)


def bundle_key(path: Path) -> str:
    """`<sha256 of manifest.json, 16 hex>-<folder name>`: the manifest pins every file's sha256."""
    digest = hashlib.sha256((Path(path) / "manifest.json").read_bytes()).hexdigest()[:16]
    return f"{digest}-{Path(path).name}"


def _tar_bytes(folder: Path) -> bytes:
    """The bundle's files (flat folder, or a CoreML .mlpackage tree) as an uncompressed tar: models do not
    compress, and the board's CPU is better spent elsewhere."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                tar.add(f, arcname=str(f.relative_to(folder)), recursive=False)
    return buf.getvalue()


def _free_bytes(remote: Remote, cache: str) -> int | None:
    """Free bytes in the remote cache folder (created if missing), from POSIX `df -Pk`; None if df says nothing."""
    proc = remote.run(f"mkdir -p {cache} && df -Pk {cache}", timeout=60)
    if proc.returncode != 0:
        raise TargetError(f"{remote.cfg.target}: cannot use {remote.cfg.remote_cache} ({_last_line(proc.stderr)})")
    rows = [line.split() for line in proc.stdout.strip().splitlines()[1:]]
    try:
        return int(rows[-1][3]) * 1024
    except (IndexError, ValueError):
        return None


def copy_bundles(remote: Remote, bundles: Sequence[Path], progress: bool = True) -> dict[Path, str]:
    """{local bundle: remote folder}; each bundle copied only when its hash is not on the board yet."""
    cache = _remote_path(remote.cfg.remote_cache)
    free = _free_bytes(remote, cache)
    names = {Path(b): bundle_key(b) for b in bundles}
    listing = remote.run(f"cd {cache} && for d in */; do [ -f \"$d.complete\" ] && echo \"${{d%/}}\"; done; true",
                         timeout=60)
    present = set(listing.stdout.split())
    out = {}
    for bundle, key in names.items():
        out[bundle] = f"{remote.cfg.remote_cache.rstrip('/')}/{key}"
        if key in present:
            _say(progress, f"{bundle}: already on {remote.cfg.target} ({key})")
            continue
        payload = _tar_bytes(bundle)
        if free is not None and len(payload) > free:
            raise TargetError(f"{remote.cfg.target}: the remote disk is full: {bundle.name} needs "
                              f"{len(payload) / 2**20:.1f} MiB, {remote.cfg.remote_cache} has "
                              f"{free / 2**20:.1f} MiB free")
        _say(progress, f"{bundle}: copying {len(payload) / 2**20:.1f} MiB to {remote.cfg.target} ({key})")
        tmp = f"{cache}/.{shlex.quote(key)}.partial"
        final = f"{cache}/{shlex.quote(key)}"
        proc = remote.run(f"rm -rf {tmp} && mkdir -p {tmp} && tar -xf - -C {tmp} && touch {tmp}/.complete && "
                          f"rm -rf {final} && mv {tmp} {final}", stdin=payload, timeout=3600)
        if proc.returncode != 0:
            remote.run(f"rm -rf {tmp}", timeout=60)
            err = proc.stderr
            full = [line.strip() for line in err.splitlines()
                    if "No space left on device" in line or "Disk quota exceeded" in line]
            if full:
                raise TargetError(f"{remote.cfg.target}: the remote disk is full while copying {bundle.name} to "
                                  f"{remote.cfg.remote_cache} ({full[0]})")
            raise TargetError(f"{remote.cfg.target}: copying {bundle.name} failed ({_last_line(err)})")
        if free is not None:
            free -= len(payload)
    return out


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)


def bench_ssh(
    cfg: SshConfig,
    bundles: Sequence[Path],
    bench_args: Sequence[str],
    local_version: str,
    progress: bool = True,
    runner=subprocess.run,
) -> list[dict]:
    """Rows of the board's own `pocketsam bench --json` on `bundles` (copied there by hash), target "ssh".

    `bench_args`: the flags passed on (--parts, --threads, --runs, --warmup, --reference probe|none, --providers…).
    Each row keeps the board's device fields; its `name` is the local bundle folder's name.
    """
    for b in bundles:
        load_bundle(b)  # a broken bundle is refused here, before anything is copied
    remote = Remote(cfg, runner)
    check_version(remote, local_version)
    placed = copy_bundles(remote, bundles, progress)
    results = f"{_remote_path(cfg.remote_cache)}/.bench-$$.json"
    argv = ["bench", *[placed[Path(b)] for b in bundles], *bench_args]
    if not progress:
        argv.append("--quiet")
    command = " ".join([cfg.remote_pocketsam] + [_remote_path(a) if a.startswith("~") else shlex.quote(a)
                                                 for a in argv])
    # The rows are written to a file there and printed after a marker, so bench's own table on stdout never mixes
    # with them; bench's progress and warnings go to this terminal's stderr.
    marker = "----pocketsam-ssh-rows----"
    proc = remote.run(f"{command} --json {results} >&2; s=$?; [ $s -eq 0 ] && echo {marker} && cat {results}; "
                      f"rm -f {results}; exit $s", timeout=24 * 3600, stream_stderr=progress)
    stdout = proc.stdout
    if proc.returncode != 0 or marker not in stdout:
        detail = _last_line(proc.stderr) if not progress else "its message is above"
        raise TargetError(f"{cfg.target}: pocketsam bench failed there (exit {proc.returncode}; {detail})")
    try:
        rows = rows_of(json.loads(stdout.split(marker, 1)[1]))
    except (json.JSONDecodeError, ValueError) as e:
        raise TargetError(f"{cfg.target}: the board's bench results are not readable ({e})") from None
    by_remote = {placed[Path(b)].rsplit("/", 1)[-1]: Path(b).name for b in bundles}
    for r in rows:
        r["target"] = "ssh"
        base, sep, n = r["name"].partition("#")  # bench numbers a bundle given twice: "<key>#2"
        r["name"] = by_remote.get(base, base) + sep + n
        r["note"] = "; ".join(filter(None, [r.get("note"), f"measured on {cfg.target}"]))
    return rows
