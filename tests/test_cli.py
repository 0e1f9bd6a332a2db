"""The `pocketsam` command: each subcommand end to end on a tiny bundle, and every user mistake as one line on
stderr with exit code 2 (no traceback)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pocketsam.cli import main
from pocketsam.runtime import spec
from pocketsam.runtime.bundle import sha256_of


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    from pocketsam.export.calibration import sample_photo

    path = tmp_path_factory.mktemp("img") / "chelsea.png"
    Image.fromarray(sample_photo("chelsea")).save(path)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_info(capsys, tiny_bundle):
    code, out, _ = run(capsys, "info", tiny_bundle)
    assert code == 0
    assert "format     onnx" in out and "random weights, seed 0" in out
    assert "image_embeddings" in out and "point_labels" in out  # I/O read from the files by ONNX Runtime
    code, out, _ = run(capsys, "info", tiny_bundle, "--json")
    assert json.loads(out)["spec_version"] == spec.SPEC_VERSION


def test_predict_writes_mask_and_overlay(capsys, tiny_bundle, photo, tmp_path):
    mask, over = tmp_path / "mask.png", tmp_path / "overlay.png"
    code, out, err = run(capsys, "predict", tiny_bundle, photo, "--point", "225,150", "--point", "30,30,0",
                         "--out", mask, "--overlay", over)
    assert code == 0, err
    assert out.count("score") == 3 and "<- written" in out
    assert "random weights" in err  # says clearly that the masks come from synthetic weights
    m = np.asarray(Image.open(mask))
    assert m.shape == (300, 451) and set(np.unique(m)) <= {0, 255}
    assert Image.open(over).size == (451, 300)


def test_predict_box_single_mask(capsys, tiny_bundle, photo, tmp_path):
    code, out, _ = run(capsys, "predict", tiny_bundle, photo, "--box", "100,50,350,250", "--no-multimask",
                       "--out", tmp_path / "m.png")
    assert code == 0 and out.count("score") == 1


def test_verify_probe_passes_and_writes_json(capsys, tiny_bundle, tmp_path):
    report = tmp_path / "r.json"
    code, out, _ = run(capsys, "verify", tiny_bundle, "--json", report)
    assert code == 0, out
    assert "✓ encoder fp32" in out and "✗" not in out and out.strip().endswith("PASS")
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["results"][0]["rows"]


def test_verify_torch_reference_on_a_folder(capsys, tiny_bundle, photo):
    code, out, _ = run(capsys, "verify", tiny_bundle, "--reference", "torch", "--images", photo.parent)
    assert code == 0, out
    assert "chelsea.png" in out and "PASS" in out


def test_verify_fails_with_exit_1(capsys, tiny_bundle, tmp_path):
    """A bundle whose outputs drifted from the reference is a ✗ and exit code 1."""
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    with np.load(bad / spec.PROBE_NAME) as z:
        arrays = dict(z)
    arrays["image_embeddings"] = arrays["image_embeddings"] + 0.01
    np.savez_compressed(bad / spec.PROBE_NAME, **arrays)
    m = json.loads((bad / spec.MANIFEST_NAME).read_text())
    m["probe"]["sha256"] = sha256_of(bad / spec.PROBE_NAME)
    (bad / spec.MANIFEST_NAME).write_text(json.dumps(m))
    code, out, _ = run(capsys, "verify", bad)
    assert code == 1
    assert "✗ encoder fp32         embedding_max_abs" in out and "FAIL" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "{bundle}", "{photo}", "--out", "{tmp}/m.png"], "give at least one --point"),
        (["predict", "{bundle}", "{photo}", "--point", "9999,5", "--out", "{tmp}/m.png"], "must lie inside"),
        (["predict", "{bundle}", "{tmp}/none.png", "--point", "5,5", "--out", "{tmp}/m.png"], "no such image file"),
        (["predict", "{tmp}/nobundle", "{photo}", "--point", "5,5", "--out", "{tmp}/m.png"], "no such bundle"),
        (["predict", "{bundle}", "{photo}", "--point", "5,5,7", "--out", "{tmp}/m.png"], "label"),
        (["export", "--checkpoint", "{tmp}/x.pt", "--seed", "3", "--out", "{tmp}/o"], "exclude each other"),
        (["verify", "{bundle}", "--images", "{tmp}"], "--images needs --reference torch"),
        (["export", "--checkpoint", "{tmp}/missing.pt", "--out", "{tmp}/o", "--quiet"], "missing.pt"),
    ],
    ids=["no-prompt", "point-outside", "missing-image", "missing-bundle", "bad-label", "seed-and-ckpt",
         "images-with-probe", "missing-checkpoint"],
)
def test_user_mistakes_are_one_line_exit_2(capsys, tiny_bundle, photo, tmp_path, argv, message):
    argv = [a.format(bundle=tiny_bundle, photo=photo, tmp=tmp_path) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0], lines[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("bad", ["--point=1", "--point=a,b", "--box=1,2,3"])
def test_malformed_flags_exit_2(capsys, tiny_bundle, photo, tmp_path, bad):
    assert main(["predict", str(tiny_bundle), str(photo), bad, "--out", str(tmp_path / "m.png")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run(["pocketsam", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("export", "predict", "verify", "info", "download-checkpoint"):
        assert command in out
    out = subprocess.run([sys.executable, "-m", "pocketsam", "--help"], capture_output=True, text=True, check=True)
    assert "export" in out.stdout


def test_info_columns_and_notes_on_their_own_lines(tiny_bundle, photo, tmp_path):
    """Long input names keep a gap before their shapes; notes on stderr never land inside a stdout line when both
    go to one file (2>&1)."""
    import re

    info = subprocess.run(["pocketsam", "info", str(tiny_bundle)], capture_output=True, text=True, check=True).stdout
    io = [line for line in info.splitlines() if line.startswith("    input ") or line.startswith("    output ")]
    assert io and all(re.match(r"    (input |output) \S+ {2,}\[", line) for line in io), io
    both = subprocess.run(["pocketsam", "predict", str(tiny_bundle), str(photo), "--point", "225,150", "--out",
                           str(tmp_path / "m.png")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert both.returncode == 0
    notes = [line for line in both.stdout.splitlines() if "note:" in line]
    assert notes and all(line.startswith("note:") or line.startswith("pocketsam: note:") for line in notes), notes


@pytest.mark.parametrize("error, kind", [
    ("conversion", "conversion failed: litert-torch conversion of the decoder failed (more in the traceback)"),
    ("bug", "internal error (TypeError): unsupported operand"),
])
def test_internal_failures_exit_3_and_say_how_to_see_the_traceback(monkeypatch, capsys, tmp_path, error, kind):
    """A converter or internal failure is not a usage mistake: exit 3, one line, the cause kept for --debug."""
    from pocketsam.export import bundle_writer
    from pocketsam.export.core import ExportError

    def fail(**kwargs):
        if error == "conversion":
            try:
                raise RuntimeError("MLIR pass failed\n  at line 3")
            except RuntimeError as cause:
                raise ExportError("litert-torch conversion of the decoder failed\ndetails…") from cause
        raise TypeError("unsupported operand")

    monkeypatch.setattr(bundle_writer, "export_bundle", fail)
    argv = ["export", "--config", "tiny", "--out", str(tmp_path / "b")]
    assert main(argv) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and kind in lines[0] and "--debug" in lines[0], lines
    with pytest.raises(ExportError if error == "conversion" else TypeError) as e:
        main(argv + ["--debug"])
    if error == "conversion":
        assert isinstance(e.value.__cause__, RuntimeError)  # the converter's own error stays chained
