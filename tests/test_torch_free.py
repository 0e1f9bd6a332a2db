"""The device path: `pip install pocketsam[onnx]` alone (numpy, pillow, onnxruntime; no torch, no scikit-image, no
tqdm, no matplotlib) runs every runtime command through the real `pocketsam` script, and each export-only command
says in one line which extra to install (exit 2).

The install is real: a fresh virtual environment (no system site-packages) gets `.[onnx]` from this checkout, as
a Raspberry Pi or Jetson would. The bundle is exported here, with the export extra.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def onnx_only(tmp_path_factory) -> Path:
    """The `bin/` folder of a fresh venv holding `pocketsam[onnx]` and nothing else."""
    env_dir = tmp_path_factory.mktemp("venv-onnx")
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    pip = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", f"{ROOT}[onnx]"], capture_output=True, text=True,
                         timeout=900)
    if pip.returncode != 0:
        pytest.fail(f"pip install '.[onnx]' into a fresh venv failed:\n{pip.stdout[-2000:]}\n{pip.stderr[-2000:]}")
    return env_dir / "bin"


@pytest.fixture(scope="module")
def photo(tiny_bundle, tmp_path_factory) -> Path:
    """The probe photo as a PNG file (no scikit-image on the device side)."""
    with np.load(tiny_bundle / "probe.npz") as z:
        image = z["image"]
    path = tmp_path_factory.mktemp("photo") / "chelsea.png"
    Image.fromarray(image).save(path)
    return path


def pocketsam(bin_dir: Path, *argv: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(bin_dir / "pocketsam"), *map(str, argv)], capture_output=True, text=True,
                          timeout=600, env=env, cwd=cwd)


def test_the_install_really_has_no_torch(onnx_only):
    probe = subprocess.run([str(onnx_only / "python"), "-c", "import importlib.util as u; print([m for m in "
                            "('torch', 'onnx', 'skimage', 'tqdm', 'matplotlib', 'onnxruntime') if u.find_spec(m)])"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "['onnxruntime']", probe.stdout + probe.stderr


def test_every_command_parses(onnx_only):
    top = pocketsam(onnx_only, "--help")
    assert top.returncode == 0, top.stderr
    commands = ["export", "predict", "everything", "verify", "info", "bench", "bench-merge", "profile", "audit-fp16",
                "download-checkpoint"]
    for command in commands:
        assert command in top.stdout
        r = pocketsam(onnx_only, command, "--help")
        assert r.returncode == 0 and "usage: pocketsam" in r.stdout, (command, r.stderr)


def test_runtime_commands_run(onnx_only, tiny_bundle, photo, tmp_path):
    info = pocketsam(onnx_only, "info", tiny_bundle)
    assert info.returncode == 0 and "random weights, seed 0" in info.stdout, info.stderr

    mask = tmp_path / "out" / "mask.png"
    pred = pocketsam(onnx_only, "predict", tiny_bundle, photo, "--point", "225,150", "--out", mask,
                     "--overlay", tmp_path / "out" / "overlay.png")
    assert pred.returncode == 0, pred.stderr
    assert np.asarray(Image.open(mask)).shape == (300, 451)

    masks = tmp_path / "out" / "masks.json"
    every = pocketsam(onnx_only, "everything", tiny_bundle, photo, "--points-per-side", "4", "--points-per-batch", "4",
                      "--out", masks,
                      "--overlay", tmp_path / "out" / "all.png")
    assert every.returncode == 0 and "prompt batches 4/4" in every.stderr, every.stderr  # no tqdm: plain count
    assert json.loads(masks.read_text())["images"][0]["width"] == 451

    ver = pocketsam(onnx_only, "verify", tiny_bundle, "--json", tmp_path / "verify.json")
    assert ver.returncode == 0 and ver.stdout.rstrip().endswith("PASS"), ver.stdout + ver.stderr
    assert json.loads((tmp_path / "verify.json").read_text())["passed"] is True

    rows = tmp_path / "bench.json"
    bench = pocketsam(onnx_only, "bench", tiny_bundle, "--reference", "probe", "--parts", "encoder,decoder,prompt",
                      "--runs", "1", "--warmup", "0", "--quiet", "--json", rows)
    assert bench.returncode == 0, bench.stderr
    written = json.loads(rows.read_text())
    by_part = {r["part"]: r for r in written["rows"]}
    assert set(by_part) == {"encoder", "decoder", "prompt"}
    assert by_part["encoder"]["parity"]["embedding_max_abs"] < 1e-4  # against the bundle's own probe

    none = pocketsam(onnx_only, "bench", tiny_bundle, "--reference", "none", "--parts", "decoder", "--runs", "1",
                     "--warmup", "0", "--quiet")
    assert none.returncode == 0, none.stderr

    merged = tmp_path / "merged.md"
    merge = pocketsam(onnx_only, "bench-merge", rows, "--markdown", merged)
    assert merge.returncode == 0 and "| " in merged.read_text(), merge.stderr

    prof = pocketsam(onnx_only, "profile", tiny_bundle, "--part", "decoder", "--runs", "1", "--top", "3")
    assert prof.returncode == 0 and "MatMul" in prof.stdout, prof.stderr


@pytest.mark.parametrize("argv, extra", [
    (["export", "--out", "{tmp}/b"], "pocketsam[export]"),
    (["export", "--format", "tflite", "--out", "{tmp}/b"], "pocketsam[export"),
    (["audit-fp16"], "pocketsam[export]"),
    (["download-checkpoint", "--dest", "{tmp}/ckpt"], "pocketsam[export]"),
    (["verify", "{bundle}", "--reference", "torch"], "pocketsam[export]"),
    (["predict", "{bundle}", "sample:chelsea", "--point", "10,10", "--out", "{tmp}/m.png"], "scikit-image"),
    (["bench-merge", "{rows}", "--plot", "{tmp}/p.png"], "pocketsam[bench]"),
])
def test_export_side_commands_name_their_extra(onnx_only, tiny_bundle, tmp_path, argv, extra):
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"rows": [{"part": "decoder", "name": "x", "stats": {"median_ms": 1.0}}]}))
    filled = [a.format(tmp=tmp_path, bundle=tiny_bundle, rows=rows) for a in argv]
    r = pocketsam(onnx_only, *filled)
    assert r.returncode == 2, (filled, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and extra in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "ckpt").exists()  # refused before touching anything


def test_the_entry_point_script_is_the_installed_one(onnx_only):
    """The script runs this checkout's code from the venv's site-packages, not the repository folder."""
    r = subprocess.run([str(onnx_only / "python"), "-c", "import pocketsam.runtime as r; print(r.__file__)"],
                       capture_output=True, text=True, cwd="/")
    assert "site-packages" in r.stdout and str(sys.prefix) not in r.stdout, r.stdout + r.stderr
