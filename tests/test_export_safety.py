"""`export` never loses a user's files: `--overwrite` replaces only a pocketsam bundle and only once the new one is
complete; SIGTERM cleans up like Ctrl-C; the work folders of killed exports are swept (or put back) next time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from pocketsam.export import bundle_writer
from pocketsam.export.bundle_writer import export_bundle
from pocketsam.runtime.bundle import load_bundle
from pocketsam.runtime.errors import BundleError


def _export(out: Path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_bundle(out, config="tiny", progress=False, **kw)


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.fixture()
def user_folder(tmp_path) -> Path:
    folder = tmp_path / "S" / "v"
    (folder / "photos").mkdir(parents=True)
    (folder / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 not really")
    (folder / "notes.txt").write_text("x\n")
    return folder


def test_overwrite_refuses_a_folder_that_is_not_a_bundle(user_folder):
    before = _tree(user_folder)
    with pytest.raises(BundleError, match="replaces only a pocketsam bundle.*nothing was touched"):
        _export(user_folder, overwrite=True)
    assert _tree(user_folder) == before
    assert [p.name for p in user_folder.parent.iterdir()] == ["v"]  # no work folder left beside it


def test_overwrite_refuses_the_current_folder(user_folder, monkeypatch):
    monkeypatch.chdir(user_folder)
    before = _tree(user_folder)
    for out in (Path("."), user_folder, user_folder.parent):
        with pytest.raises(BundleError):
            _export(out, overwrite=True)
    assert _tree(user_folder) == before


def test_overwrite_refuses_a_bundle_holding_other_files(tiny_bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(tiny_bundle, out)
    (out / "my-notes.md").write_text("mine\n")
    with pytest.raises(BundleError, match="also holds my-notes.md"):
        _export(out, overwrite=True)
    assert (out / "my-notes.md").read_text() == "mine\n"


def test_overwrite_replaces_a_bundle(tiny_bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(tiny_bundle, out)
    _export(out, overwrite=True, seed=3)
    assert load_bundle(out).checkpoint_description == "random weights, seed 3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_a_failed_overwrite_keeps_the_old_bundle(tiny_bundle, tmp_path, monkeypatch):
    out = tmp_path / "b"
    shutil.copytree(tiny_bundle, out)
    before = _tree(out)

    def boom(*a, **k):
        raise RuntimeError("simulated converter crash")

    monkeypatch.setattr(bundle_writer, "record_reference", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        _export(out, overwrite=True, seed=3)
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_out_is_a_file(tmp_path):
    f = tmp_path / "bundle"
    f.write_text("a file\n")
    with pytest.raises(BundleError, match="is a file"):
        _export(f)
    assert f.read_text() == "a file\n"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_work_folders_are_swept(tmp_path, tiny_bundle):
    pid = _dead_pid()
    out = tmp_path / "b"
    (tmp_path / f".b.tmp-{pid}").mkdir()
    (tmp_path / f".b.tmp-{pid}" / "encoder.onnx").write_bytes(b"half")
    (tmp_path / f".c.tmp-{pid}").mkdir()  # another bundle's: not ours to sweep
    alive = tmp_path / f".b.tmp-{os.getpid()}x"  # not the pattern
    alive.mkdir()
    _export(out)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["b", f".c.tmp-{pid}", alive.name])


def test_a_bundle_moved_aside_by_a_killed_export_is_put_back(tmp_path, tiny_bundle):
    pid = _dead_pid()
    out = tmp_path / "b"
    shutil.copytree(tiny_bundle, tmp_path / f".b.old-{pid}")
    with pytest.raises(BundleError, match="pass --overwrite"):  # it is back, so a plain export refuses
        _export(out)
    assert load_bundle(out).checkpoint_description == "random weights, seed 0"


def test_sigterm_cleans_up(tmp_path):
    out = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "pocketsam", "export", "--config", "tiny", "--out", str(out),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    deadline = time.monotonic() + 120
    work = tmp_path / f".b.tmp-{proc.pid}"
    while not (work.exists() and any(work.iterdir())) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "export ended before it could be interrupted: " + proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_manifest_marks_bundles(tiny_bundle):
    """`--overwrite` recognises a bundle by the manifest's own marker."""
    assert "pocketsam_bundle" in json.loads((tiny_bundle / "manifest.json").read_text())
