"""Image files are read as viewers show them (EXIF orientation), within a stated pixel limit that the caller may
raise; folders of images are listed the same way everywhere."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pocketsam.cli import main
from pocketsam.runtime.errors import InvalidImageError
from pocketsam.runtime.image import image_files, load_image, named_images

ORIENTATION = 0x0112


def _photo(tmp_path, orientation: int | None, name: str = "phone.png"):
    """A 300 (h) x 451 (w) photo stored as is, with an EXIF orientation tag (6: the viewer rotates it 90° clockwise)."""
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 256, (300, 451, 3), dtype=np.uint8)
    im = Image.fromarray(stored)
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    path = tmp_path / name
    im.save(path, exif=exif)
    return path, stored


@pytest.mark.parametrize("orientation, view", [
    (None, lambda a: a),
    (1, lambda a: a),
    (3, lambda a: a[::-1, ::-1]),
    (6, lambda a: np.rot90(a, k=-1)),  # rotated 90° clockwise for display
    (8, lambda a: np.rot90(a, k=1)),
])
def test_exif_orientation_is_applied(tmp_path, orientation, view):
    path, stored = _photo(tmp_path, orientation)
    np.testing.assert_array_equal(load_image(path), view(stored))


def test_points_and_masks_are_in_the_displayed_frame(tmp_path, tiny_bundle, capsys):
    path, _ = _photo(tmp_path, 6)  # displayed 451 (h) x 300 (w)
    mask, over = tmp_path / "m.png", tmp_path / "o.png"
    assert main(["predict", str(tiny_bundle), str(path), "--point", "150,400", "--out", str(mask),
                 "--overlay", str(over)]) == 0, capsys.readouterr().err
    assert np.asarray(Image.open(mask)).shape == (451, 300)
    assert Image.open(over).size == (300, 451)
    assert main(["predict", str(tiny_bundle), str(path), "--point", "400,150", "--out", str(mask)]) == 2
    assert "x in [0, 300]" in capsys.readouterr().err


def test_the_pixel_limit_can_be_raised(tmp_path):
    big = np.zeros((120, 100, 3), np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    with pytest.raises(InvalidImageError, match=r"100x120 is 0.012 Mpx, over the 0.012 Mpx limit"):
        load_image(tmp_path / "big.png", max_pixels=11_999)
    assert load_image(tmp_path / "big.png", max_pixels=12_000).shape == (120, 100, 3)
    assert load_image(tmp_path / "big.png", max_pixels=None).shape == (120, 100, 3)


def test_the_cli_flag_raises_the_limit(tmp_path, tiny_bundle, capsys):
    Image.fromarray(np.zeros((120, 100, 3), np.uint8)).save(tmp_path / "big.png")
    argv = ["predict", str(tiny_bundle), str(tmp_path / "big.png"), "--point", "5,5", "--out", str(tmp_path / "m.png")]
    assert main(argv + ["--max-pixels", "1000"]) == 2
    assert "--max-pixels" in capsys.readouterr().err
    assert main(argv + ["--max-pixels", "12000"]) == 0


def test_image_folders_skip_other_files(tmp_path):
    _photo(tmp_path, None, "b.png")
    _photo(tmp_path, 6, "a.PNG")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in image_files(tmp_path)] == ["a.PNG", "b.png"]
    names = [n for n, img in named_images(tmp_path, 5)]
    assert names == ["a.PNG", "b.png"]
    with pytest.raises(InvalidImageError, match="no images"):
        image_files(tmp_path / "sub.png")
