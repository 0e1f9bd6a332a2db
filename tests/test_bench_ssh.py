"""`pocketsam bench --target ssh://…` against a real OpenSSH server (Debian's openssh-server) started here on
127.0.0.1, on a free high port, with its own sshd_config, host key and a throwaway client key in a temporary folder.
The "board" is this machine: its pocketsam is the one running the tests. Nothing is faked: every failure below is
produced for real (a closed port, a key the server does not know, a missing command, another installed pocketsam
version, a tmpfs that runs out of inodes / bytes).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import venv
from pathlib import Path

import pytest

from _scripts import pocketsam_script
from pocketsam import __version__
from pocketsam.cli import main

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"

pytestmark = [
    pytest.mark.skipif(not Path(SSHD).exists(), reason="sshd not installed (apt-get install openssh-server, as "
                                                        ".ci/run does)"),
    pytest.mark.skipif(shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
                       reason="ssh client not installed (apt-get install openssh-client)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def _remote_pocketsam() -> str:
    """This interpreter's `pocketsam` script: the "board's" install."""
    return str(pocketsam_script())


class Server:
    """sshd -D on 127.0.0.1:port; `client_config(key)` writes an ssh_config that trusts its host key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.host_key = _keygen(root / "host_ed25519")
        self.key = _keygen(root / "client_ed25519")
        (root / "authorized_keys").write_text(Path(str(self.key) + ".pub").read_text())
        key_type, key_text = Path(str(self.host_key) + ".pub").read_text().split()[:2]
        (root / "known_hosts").write_text(f"[{LOOPBACK}]:{self.port} {key_type} {key_text}\n")
        (root / "sshd_config").write_text("\n".join([
            f"ListenAddress {LOOPBACK}", f"Port {self.port}", f"HostKey {self.host_key}",
            f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password", "LogLevel ERROR",
            # The "board" keeps this process's PATH, so `pocketsam` resolves as it does here.
            f"SetEnv PATH={os.environ.get('PATH', '/usr/bin:/bin')}",
        ]) + "\n")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder (Debian's path)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        for _ in range(100):  # bounded: 10 s for sshd to listen
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.proc.stdout.read().decode(errors='replace')}")
            with socket.socket() as s:
                if s.connect_ex((LOOPBACK, self.port)) == 0:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError("sshd did not listen within 10 s")

    def client_config(self, key: Path | None = None, name: str = "ssh_config") -> Path:
        path = self.root / name
        path.write_text("\n".join([
            "Host *", f"  IdentityFile {key or self.key}", "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {self.root / 'known_hosts'}", "  StrictHostKeyChecking yes",
            "  GlobalKnownHostsFile /dev/null", "  LogLevel ERROR",
        ]) + "\n")
        return path

    @property
    def target(self) -> str:
        return f"ssh://root@{LOOPBACK}:{self.port}"  # the fixture runs only as root

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("sshd needs root here (its privilege-separation user and /run/sshd); CI runs as root")
    s = Server(tmp_path_factory.mktemp("sshd"))
    yield s
    s.stop()


def bench(server, bundles, tmp_path, *extra, config=None, pocketsam=None, cache=None):
    rows = tmp_path / "rows.json"
    argv = ["bench", *map(str, bundles), "--target", server.target, "--ssh-config",
            str(config or server.client_config()), "--remote-pocketsam", pocketsam or _remote_pocketsam(),
            "--remote-cache", str(cache or tmp_path / "board-cache"), "--parts", "encoder,decoder", "--runs", "1",
            "--warmup", "0", "--quiet", "--json", str(rows), *extra]
    return main(argv), rows


def test_rows_come_back_into_the_report(server, tiny_bundle, tmp_path, capsys):
    code, rows_path = bench(server, [tiny_bundle], tmp_path)
    err = capsys.readouterr().err
    assert code == 0, err
    rows = json.loads(rows_path.read_text())["rows"]
    assert {r["part"] for r in rows} == {"encoder", "decoder"}
    for r in rows:
        assert r["target"] == "ssh" and r["name"] == tiny_bundle.name and r["reference"] == "probe"
        assert r["engine"] == "onnxruntime" and r["engine_version"] and r["delegate"] == "CPUExecutionProvider"
        assert r["stats"]["runs"] == 1 and r["stats"]["median_ms"] > 0
        assert f"measured on {server.target}" in r["note"]
    enc = next(r for r in rows if r["part"] == "encoder")
    assert enc["parity"]["embedding_max_abs"] < 1e-4  # the board judged parity against the bundle's own probe

    # bench-merge reads them like any other device's rows
    assert main(["bench-merge", str(rows_path), "--markdown", str(tmp_path / "merged.md")]) == 0
    assert "| ssh |" in (tmp_path / "merged.md").read_text()


def test_each_bundle_is_copied_once_by_hash(server, tiny_bundle, tmp_path, capsys):
    from pocketsam.benchmarks.ssh import bundle_key

    cache = tmp_path / "board-cache"
    code, _ = bench(server, [tiny_bundle, tiny_bundle], tmp_path, cache=cache)
    assert code == 0, capsys.readouterr().err
    placed = cache / bundle_key(tiny_bundle)
    assert (placed / ".complete").exists() and (placed / "manifest.json").read_bytes() == \
        (tiny_bundle / "manifest.json").read_bytes()
    assert [p.name for p in cache.iterdir()] == [placed.name]  # one copy, no partial folder, no results file left
    stamp = (placed / "encoder.onnx").stat().st_mtime_ns

    # the same bundle under another folder name has the same manifest: not copied again
    renamed = tmp_path / "same-bundle-elsewhere"
    shutil.copytree(tiny_bundle, renamed)
    capsys.readouterr()
    code, rows = bench(server, [renamed], tmp_path, "--threads", "1", cache=cache)
    assert code == 0
    assert (placed / "encoder.onnx").stat().st_mtime_ns == stamp
    assert {r["name"] for r in json.loads(rows.read_text())["rows"]} == {"same-bundle-elsewhere"}
    assert {r["threads"] for r in json.loads(rows.read_text())["rows"]} == {1}  # flags reach the board


def _one_line_exit_2(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


def test_unreachable_host(server, tiny_bundle, tmp_path, capsys):
    closed = _free_port()  # nothing listens there
    code = main(["bench", str(tiny_bundle), "--target", f"ssh://root@{LOOPBACK}:{closed}", "--ssh-config",
                 str(server.client_config()), "--quiet"])
    _one_line_exit_2(capsys, code, "unreachable", "Connection refused")


def test_auth_failure(server, tiny_bundle, tmp_path, capsys):
    stranger = _keygen(tmp_path / "stranger_ed25519")
    code, _ = bench(server, [tiny_bundle], tmp_path, config=server.client_config(stranger, "stranger_config"))
    _one_line_exit_2(capsys, code, "authentication refused", "Permission denied")


def test_no_pocketsam_on_the_remote(server, tiny_bundle, tmp_path, capsys):
    code, _ = bench(server, [tiny_bundle], tmp_path, pocketsam=str(tmp_path / "venv" / "bin" / "pocketsam"))
    _one_line_exit_2(capsys, code, "no pocketsam there", "--remote-pocketsam")


@pytest.fixture(scope="module")
def other_version(tmp_path_factory) -> Path:
    """A real install of this checkout under another version number, in a venv of its own."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "cli", "runtime", "export", "benchmarks"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, src / name)
    text = (src / "pyproject.toml").read_text()
    (src / "pyproject.toml").write_text(text.replace(f'version = "{__version__}"', 'version = "0.0.1"', 1))
    env = tmp_path_factory.mktemp("venv-old")
    venv.EnvBuilder(with_pip=True, system_site_packages=True).create(env)
    r = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                        "--disable-pip-version-check", str(src)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return env / "bin" / "pocketsam"


def test_version_mismatch(server, tiny_bundle, tmp_path, capsys, other_version):
    code, _ = bench(server, [tiny_bundle], tmp_path, pocketsam=str(other_version))
    _one_line_exit_2(capsys, code, "pocketsam 0.0.1 there", f"{__version__} here")


@pytest.fixture
def tiny_fs(tmp_path):
    """A tmpfs mounted for one test (root only), unmounted after."""
    mounts = []

    def mount(options: str) -> Path:
        point = tmp_path / f"fs{len(mounts)}"
        point.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", str(point)])


def test_full_disk_before_the_copy(server, tiny_bundle, tmp_path, capsys, tiny_fs):
    cache = tiny_fs("size=256k")  # smaller than the bundle: refused by the free-space check, nothing copied
    code, _ = bench(server, [tiny_bundle], tmp_path, cache=cache)
    _one_line_exit_2(capsys, code, "remote disk is full", "MiB free")
    assert not any(cache.iterdir())


def test_full_disk_during_the_copy(server, tiny_bundle, tmp_path, capsys, tiny_fs):
    # Bytes to spare, but only 4 inodes: tar fails with ENOSPC on the bundle's files, the partial folder goes.
    cache = tiny_fs("size=64m,nr_inodes=4")
    code, _ = bench(server, [tiny_bundle], tmp_path, cache=cache)
    _one_line_exit_2(capsys, code, "remote disk is full while copying", "No space left on device")
    assert not any(cache.iterdir())


def test_target_parsing():
    from pocketsam.benchmarks.ssh import SshTarget, parse_target

    assert parse_target("ssh://pi@raspberrypi.local") == SshTarget("raspberrypi.local", "pi", None)
    assert parse_target("ssh://jetson:2222") == SshTarget("jetson", None, 2222)
    assert parse_target("ssh://pi@[fe80::1]:22") == SshTarget("fe80::1", "pi", 22)
    for bad in ("ssh://", "ssh://a@b@c", "ssh://host:0", "ssh://host:99999", "pi@host"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_ssh_only_flags_are_refused_elsewhere(tiny_bundle, capsys):
    code = main(["bench", str(tiny_bundle), "--remote-cache", "/tmp/x", "--reference", "probe"])
    _one_line_exit_2(capsys, code, "--remote-cache", "ssh://")
    code = main(["bench", str(tiny_bundle), "--target", "ssh://pi@host", "--reference", "torch"])
    _one_line_exit_2(capsys, code, "--reference probe")
