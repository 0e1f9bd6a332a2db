"""Checkpoints: strict layout check, one clear CheckpointError per bad file, synthetic weights, provenance, download
(against a loopback HTTP server on 127.0.0.1: no network)."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pytest
import torch

from pocketsam.export.checkpoint import (
    check_layout,
    checkpoint_origin,
    download_checkpoint,
    load_checkpoint,
    official_layout,
    sha256_file,
    synthetic_state_dict,
)
from pocketsam.export.model import build_mobile_sam
from pocketsam.runtime.errors import CheckpointError

pytestmark = pytest.mark.filterwarnings("ignore::pocketsam.export.model.RandomWeightsWarning")


@pytest.fixture(scope="module")
def synth0():
    return synthetic_state_dict(0)


def test_synthetic_is_the_official_layout_and_deterministic(synth0):
    layout = official_layout()
    assert list(synth0) == list(layout) and len(synth0) == 439
    for k, (shape, dtype) in layout.items():
        assert tuple(synth0[k].shape) == shape and str(synth0[k].dtype) == f"torch.{dtype}", k
    again, other = synthetic_state_dict(0), synthetic_state_dict(1)
    assert all(torch.equal(again[k], synth0[k]) for k in layout)
    # every random tensor differs across seeds (constants: BN counters, the hypernetworks' zero output biases)
    floats = [k for k in layout if synth0[k].is_floating_point() and synth0[k].unique().numel() > 1]
    assert len(floats) == 408  # 439 - 27 BN counters - 4 zero biases
    assert all(not torch.equal(other[k], synth0[k]) for k in floats)
    assert all(torch.isfinite(t).all() for t in synth0.values() if t.is_floating_point())


def test_strict_round_trip(vit_t_checkpoint, synth0):
    sd = load_checkpoint(vit_t_checkpoint)
    assert all(torch.equal(sd[k], synth0[k]) for k in synth0)
    model = build_mobile_sam(vit_t_checkpoint)
    assert all(torch.equal(t, synth0[k]) for k, t in model.state_dict().items())


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_wrapped_state_dicts_are_accepted(tmp_path, synth0, wrapper):
    path = tmp_path / "wrapped.pt"
    torch.save({wrapper: synth0, "epoch": 3}, path)
    assert set(load_checkpoint(path)) == set(synth0)


def _bad(synth0, kind):
    sd = dict(synth0)
    if kind == "missing":
        del sd["mask_decoder.iou_token.weight"]
        return sd, "mask_decoder.iou_token.weight"
    if kind == "unexpected":
        sd["image_encoder.extra.weight"] = torch.zeros(3)
        return sd, "image_encoder.extra.weight"
    if kind == "renamed":
        sd["prompt_encoder.no_mask_embedding.weight"] = sd.pop("prompt_encoder.no_mask_embed.weight")
        return sd, "prompt_encoder.no_mask_embed.weight"
    if kind == "shape":
        sd["image_encoder.neck.0.weight"] = torch.zeros(256, 160, 1, 1)
        return sd, "image_encoder.neck.0.weight [256, 160, 1, 1] != expected [256, 320, 1, 1]"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "unexpected", "renamed", "shape"])
def test_wrong_tensors_raise_one_error_naming_the_key(tmp_path, synth0, kind):
    sd, key = _bad(synth0, kind)
    path = tmp_path / f"{kind}.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert key in msg and "\n" not in msg and "vit_t layout" in msg
    with pytest.raises(CheckpointError, match="vit_t layout"):
        build_mobile_sam(path)


def test_error_lists_only_the_first_few_keys(synth0):
    sd = {k: v for k, v in synth0.items() if not k.startswith("mask_decoder.")}
    with pytest.raises(CheckpointError, match=r"missing: .*\(\+\d+\)") as e:
        check_layout(sd)
    assert len(str(e.value)) < 400


def test_truncated_and_foreign_files(tmp_path, vit_t_checkpoint):
    data = vit_t_checkpoint.read_bytes()
    cases = {
        "truncated.pt": data[: len(data) // 2],
        "text.pt": b"this is not a checkpoint\n" * 10,
        "empty.pt": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match="cannot read checkpoint") as e:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(e.value)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_checkpoint_origin(vit_t_checkpoint):
    assert checkpoint_origin(None, 5) == {"kind": "random", "seed": 5, "description": "random weights, seed 5"}
    o = checkpoint_origin(vit_t_checkpoint, 5)
    assert o["kind"] == "file" and o["sha256"] == sha256_file(vit_t_checkpoint) and len(o["sha256"]) == 64
    assert o["path"] == str(vit_t_checkpoint.resolve())


# --- download against a loopback server --------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory, vit_t_checkpoint):
    root = tmp_path_factory.mktemp("www")
    shutil.copy(vit_t_checkpoint, root / "mobile_sam.pt")
    (root / "bad.pt").write_bytes(b"<html>rate limited</html>")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_validates_and_caches(server, tmp_path, vit_t_checkpoint, monkeypatch):
    monkeypatch.setenv("POCKETSAM_CACHE", str(tmp_path / "cache"))
    path = download_checkpoint(url=f"{server}/mobile_sam.pt", progress=False)
    assert path == tmp_path / "cache" / "mobile_sam.pt"
    assert sha256_file(path) == sha256_file(vit_t_checkpoint)
    assert [p.name for p in path.parent.iterdir()] == ["mobile_sam.pt"]  # no temp file left
    mtime = path.stat().st_mtime_ns
    assert download_checkpoint(url=f"{server}/mobile_sam.pt", progress=False) == path  # cached: not fetched again
    assert path.stat().st_mtime_ns == mtime


def test_download_of_a_bad_file_leaves_nothing(server, tmp_path):
    with pytest.raises(CheckpointError, match="not a MobileSAM vit_t checkpoint") as e:
        download_checkpoint(tmp_path, url=f"{server}/bad.pt", progress=False)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_download_http_and_network_errors(server, tmp_path):
    with pytest.raises(CheckpointError, match="HTTP 404") as e:
        download_checkpoint(tmp_path, url=f"{server}/missing.pt", progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="could not download"):
        download_checkpoint(tmp_path, url="http://127.0.0.1:9/mobile_sam.pt", progress=False, timeout=5)
    assert list(tmp_path.iterdir()) == []
