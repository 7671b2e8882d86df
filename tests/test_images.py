"""Input discovery, decoding and output naming."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cnnvis_cli.core.decode import decode_image, to_model_tensor
from cnnvis_cli.core.discover import discover
from cnnvis_cli.core.source import ImageSource
from cnnvis_cli.errors import InputError
from tests.conftest import random_rgb, write_image


def test_unicode_and_spaces_in_path(tmp_path):
    image = random_rgb(30, 40)
    path = write_image(tmp_path / "dossier é" / "chat noir 猫.png", image)
    np.testing.assert_array_equal(decode_image(path), image)


def test_grayscale_rgba_and_16_bit(tmp_path):
    gray = np.arange(0, 240, dtype=np.uint8).reshape(12, 20)
    decoded = decode_image(write_image(tmp_path / "g.png", gray))
    assert decoded.shape == (12, 20, 3)
    np.testing.assert_array_equal(decoded[:, :, 0], gray)

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red
    rgba[:2, ..., 3] = 255  # top half opaque, bottom half transparent
    decoded = decode_image(write_image(tmp_path / "a.png", rgba))
    np.testing.assert_array_equal(decoded[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(decoded[3, 0], [255, 255, 255])  # over white

    deep = np.full((5, 6, 3), 65535, np.uint16)
    deep[0, 0] = [257 * 10, 257 * 20, 257 * 30]  # B, G, R in OpenCV order
    path = tmp_path / "deep.png"
    path.write_bytes(cv2.imencode(".png", deep)[1].tobytes())
    decoded = decode_image(path)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded[0, 0], [30, 20, 10])
    np.testing.assert_array_equal(decoded[1, 1], [255, 255, 255])


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty file"), (b"hello, not an image", "not a readable image")],
)
def test_bad_files_raise_input_error(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        decode_image(path)


def test_truncated_png_is_an_input_error(tmp_path):
    data = write_image(tmp_path / "full.png", random_rgb(64, 64)).read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError):
        decode_image(path)


def test_pixel_limit_refused_from_the_header(tmp_path):
    path = write_image(tmp_path / "big.png", random_rgb(100, 100))
    with pytest.raises(InputError, match="limit"):
        decode_image(path, max_pixels=5_000)


def test_discover_mirrors_folders_and_avoids_collisions(tmp_path):
    root = tmp_path / "in"
    for rel in ["a.png", "a.jpg", "b.png", "sub/a.png", "sub/deeper/c.bmp", "notes.txt"]:
        path = root / rel
        if rel.endswith(".txt"):
            path.write_text("x")
        else:
            write_image(path, random_rgb(8, 8))
    out = root / "out"  # output folder inside the input folder: never searched
    write_image(out / "a_gradcam.png", random_rgb(8, 8))

    flat, problems = discover([root], out_dir=out)
    assert problems == []
    assert sorted(i.out_stem for i in flat) == ["a_jpg", "a_png", "b"]

    items, _ = discover([root], recursive=True, out_dir=out)
    names = {(str(i.rel_dir), i.out_stem) for i in items}
    assert names == {(".", "a_jpg"), (".", "a_png"), (".", "b"), ("sub", "a"), ("sub/deeper", "c")}


def test_discover_reports_missing_and_unsupported(tmp_path):
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    items, problems = discover([tmp_path / "nope.png", tmp_path / "x.gif"])
    assert items == []
    assert [p.name for p, _ in problems] == ["nope.png", "x.gif"]
    assert "no such file" in problems[0][1] and "unsupported" in problems[1][1]


def test_symlink_loop_is_not_followed_forever(tmp_path):
    root = tmp_path / "in"
    write_image(root / "a.png", random_rgb(8, 8))
    (root / "loop").symlink_to(root, target_is_directory=True)
    items, _ = discover([root], recursive=True)
    assert [i.path.name for i in items] == ["a.png"]


def test_model_tensor_resize_and_grayscale():
    image = random_rgb(30, 50)
    tensor = to_model_tensor(image, (10, 20), channels=3)
    assert tensor.shape == (10, 20, 3) and tensor.dtype == np.float32
    gray = to_model_tensor(image, (10, 20), channels=1)
    assert gray.shape == (10, 20, 1)
    expected = cv2.cvtColor(tensor, cv2.COLOR_RGB2GRAY)
    np.testing.assert_allclose(gray[:, :, 0], expected, atol=1e-4)
    dynamic = to_model_tensor(random_rgb(300, 2000), None, channels=3, max_side=1024)
    assert dynamic.shape == (154, 1024, 3)


def test_image_source_streams_in_order_with_errors(tmp_path):
    paths = [write_image(tmp_path / f"{i:02d}.png", random_rgb(9, 9, seed=i)) for i in range(7)]
    (tmp_path / "03.png").write_bytes(b"broken")
    items, _ = discover([tmp_path])
    source = ImageSource(items, size=(4, 4), channels=3, batch_size=3, prefetch=1)
    batches = list(source.batches())
    assert [len(b) for b in batches] == [3, 3, 1]
    flat = [pair for batch in batches for pair in batch]
    assert [item.path for item, _ in flat] == [Path(p) for p in paths]
    assert isinstance(flat[3][1], InputError)
    assert all(not isinstance(loaded, InputError) for _, loaded in flat[:3])
