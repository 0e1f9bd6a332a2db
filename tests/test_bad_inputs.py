"""Bad inputs from the catalog (tests/_bad_inputs.py): files, bundles, checkpoints and command lines each end in one
specific one-line error, with nothing written or touched; and the catalog is large enough to mean something."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _bad_inputs import BOXES, BUNDLES, CHECKPOINTS, COMMAND_LINES, IMAGE_ARRAYS, IMAGE_FILES, MASKS, POINTS, Case
from PIL import Image

from pocketsam.cli import main
from pocketsam.runtime.bundle import load_bundle
from pocketsam.runtime.errors import BundleError, CheckpointError, InvalidImageError, PocketSamError
from pocketsam.runtime.image import read_image
from pocketsam.runtime.loading import open_bundle

CATALOG = {"image arrays": IMAGE_ARRAYS, "points": POINTS, "boxes": BOXES, "mask inputs": MASKS,
           "image files": IMAGE_FILES, "bundles": BUNDLES, "checkpoints": CHECKPOINTS, "command lines": COMMAND_LINES}


def test_the_catalog_covers_enough():
    counts = {kind: len(cases) for kind, cases in CATALOG.items()}
    print("bad inputs covered:", counts, "total", sum(counts.values()))
    assert all(counts.values()) and sum(counts.values()) >= 60, counts
    for kind in ("image files", "bundles", "checkpoints", "command lines"):
        names = [c[0] for c in CATALOG[kind]]
        assert len(names) == len(set(names)), f"{kind}: duplicate case names"


@pytest.fixture(scope="module")
def other_bundle(tmp_path_factory) -> Path:
    """A tiny bundle from other weights (seed 1): the source of foreign parts."""
    import warnings

    from pocketsam.export.bundle_writer import export_bundle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_bundle(tmp_path_factory.mktemp("other") / "seed1", config="tiny", seed=1, progress=False).bundle.root


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    import torch

    from pocketsam.export.checkpoint import synthetic_state_dict

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(synthetic_state_dict(0, "tiny"), path)
    return path.read_bytes()


@pytest.fixture()
def case(tiny_bundle, other_bundle, checkpoint_bytes, tmp_path) -> Case:
    work = tmp_path / "work"
    work.mkdir()
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    photo = tmp_path / "photo.png"
    with np.load(tiny_bundle / "probe.npz") as z:
        Image.fromarray(z["image"]).save(photo)
    return Case(tmp=work, bundle=bundle, other=other_bundle, photo=photo, checkpoint=checkpoint_bytes)


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("name, make, fragment", IMAGE_FILES, ids=[c[0] for c in IMAGE_FILES])
def test_bad_image_files(case, name, make, fragment):
    with pytest.raises(PocketSamError) as e:
        read_image(make(case))
    assert fragment in _one_line(e.value)
    assert isinstance(e.value, InvalidImageError)


@pytest.mark.parametrize("name, make, fragment", BUNDLES, ids=[c[0] for c in BUNDLES])
def test_bad_bundles(case, name, make, fragment):
    root = make(case)
    with pytest.raises(BundleError) as e:
        open_bundle(root)
    assert fragment in _one_line(e.value)


def test_parts_are_checked_before_anything_is_hashed(case, monkeypatch):
    """A manifest pointing at a huge folder (or /) is refused by its name, without reading a byte of it."""
    import pocketsam.runtime.bundle as bundle_module

    def no_hashing(*args):
        raise AssertionError("hashed before the part's path was checked")

    monkeypatch.setattr(bundle_module, "sha256_of", no_hashing)
    for bad in ("/", "/usr", "..", "."):
        m = json.loads((case.bundle / "manifest.json").read_text())
        m["parts"]["decoder"]["file"] = bad
        (case.bundle / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(BundleError, match="parts.decoder.file"):
            load_bundle(case.bundle)


@pytest.mark.parametrize("name, make, fragment", CHECKPOINTS, ids=[c[0] for c in CHECKPOINTS])
def test_bad_checkpoints(case, name, make, fragment):
    from pocketsam.export.checkpoint import load_checkpoint

    path = make(case)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert fragment in _one_line(e.value)
    assert not (case.tmp / "pwned").exists()  # no pickled code ran


@pytest.mark.parametrize("name, argv, fragment", COMMAND_LINES, ids=[c[0] for c in COMMAND_LINES])
def test_bad_command_lines(case, capsys, name, argv, fragment):
    (case.tmp / "empty").mkdir()
    file = case.tmp / "file.txt"
    file.write_text("not a folder\n")
    notbundle = case.tmp / "mine"
    (notbundle / "photos").mkdir(parents=True)
    (notbundle / "notes.txt").write_text("keep me\n")
    before = sorted(p.relative_to(case.tmp) for p in case.tmp.rglob("*"))
    bundle_before = {p.name: p.stat().st_mtime_ns for p in case.bundle.iterdir()}
    filled = [a.format(bundle=case.bundle, photo=case.photo, tmp=case.tmp, file=file, notbundle=notbundle)
              for a in argv]
    code = main(filled)
    err = capsys.readouterr().err
    assert code == 2, (filled, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err
    assert sorted(p.relative_to(case.tmp) for p in case.tmp.rglob("*")) == before  # nothing written or removed
    assert {p.name: p.stat().st_mtime_ns for p in case.bundle.iterdir()} == bundle_before
