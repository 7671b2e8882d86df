"""Bad and unusual inputs: each gives one clear line naming the file, and the batch goes on.

Every file is generated here in ``tmp_path`` (PNGs and the EXIF segment are built by hand);
the only embedded bytes are a 184-byte CMYK JPEG, since OpenCV cannot write CMYK.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from cnnvis_cli.core import decode as images
from cnnvis_cli.core import discover as discovery
from cnnvis_cli.core.decode import decode_image
from cnnvis_cli.core.discover import discover
from cnnvis_cli.errors import InputError
from tests.conftest import interrupt_on_batch, invoke, random_rgb, write_image

# 16 x 8 CMYK JPEG (Adobe APP14, inverted CMYK as Photoshop writes it): left half red, right
# half blue. Made once with Pillow: Image.new("RGB", (16, 8), (255, 0, 0)), blue pasted over
# (8, 0, 16, 8), .convert("CMYK").save(buf, "JPEG", quality=95, optimize=True).
CMYK_JPEG = base64.b64decode(
    "/9j/7gAOQWRvYmUAZAAAAAAA/9sAQwACAQEBAQECAQEBAgICAgIEAwICAgIFBAQDBAYFBgYGBQYGBgcJCAYHCQcGBg"
    "gLCAkKCgoKCgYICwwLCgwJCgoK/8AAFAgACAAQBEMRAE0RAFkRAEsRAP/EABYAAQEBAAAAAAAAAAAAAAAAAAoACf/E"
    "ABQQAQAAAAAAAAAAAAAAAAAAAAD/2gAOBEMATQBZAEsAAD8A38H/AB/2/gAaP8T/2Q=="
)


def _error_lines(result) -> list[str]:
    """stderr lines; with -q every one must be one of our ``error: <file>: <reason>`` lines."""
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines), result.stderr
    return lines


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


# -- file builders --------------------------------------------------------------------------


def _chunk(name: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + name + data + struct.pack(">I", zlib.crc32(name + data))


def _png(width: int, height: int, color_type: int, depth: int, rows: list[bytes], *extra) -> bytes:
    """A minimal PNG: IHDR, optional chunks (PLTE, tRNS), one IDAT of unfiltered rows, IEND."""
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + row for row in rows))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + b"".join(extra)
        + _chunk(b"IDAT", pixels)
        + _chunk(b"IEND", b"")
    )


def _encode(suffix: str, bgr: np.ndarray, *params: int) -> bytes:
    ok, data = cv2.imencode(suffix, bgr, list(params))
    assert ok
    return data.tobytes()


def _with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an EXIF APP1 segment holding only the Orientation tag right after SOI."""
    ifd = struct.pack(">HHHIHH", 1, 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">I", 8) + ifd
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _good_jpeg() -> bytes:
    return _encode(".jpg", random_rgb(64, 64, seed=3))


def _good_png() -> bytes:
    return _encode(".png", random_rgb(64, 64, seed=4))


def _bad_png_crc() -> bytes:
    data = bytearray(_good_png())
    data[60] ^= 0xFF  # inside the IDAT chunk's data
    return bytes(data)


GIF = (  # a 1 x 1 GIF
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)

# name -> (bytes, expected reason). All must fail as InputError without printing anything.
BAD_FILES: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty.jpg": (lambda: b"", "empty file (0 bytes)"),
    "truncated.jpg": (lambda: _good_jpeg()[: len(_good_jpeg()) // 2], "truncated JPEG (no end"),
    "header_only.jpg": (lambda: _good_jpeg()[:120], "truncated JPEG (no image data"),
    "truncated.png": (lambda: _good_png()[: len(_good_png()) // 2], "truncated PNG (file ends"),
    "no_iend.png": (lambda: _good_png()[:-12], "truncated PNG (no IEND"),
    "bad_crc.png": (_bad_png_crc, "corrupt PNG (checksum error in the IDAT chunk)"),
    "text.jpg": (lambda: b"just some notes, not a picture\n", "not a readable image"),
    "gif_named.png": (lambda: GIF, "the content is not JPEG, PNG, BMP, TIFF or WebP"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_file_is_one_clear_line_and_nothing_leaks(name, tmp_path, capfd):
    make, reason = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(InputError) as caught:
        decode_image(path)
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message and message[0].islower()
    assert capfd.readouterr().err == ""  # nothing from libjpeg, libpng or OpenCV's logger


def test_unreadable_file(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root reading the file")
    path = write_image(tmp_path / "locked.png", random_rgb(8, 8))
    path.chmod(0)
    try:
        with pytest.raises(InputError, match="permission denied"):
            decode_image(path)
    finally:
        path.chmod(0o644)


def test_unreadable_file_simulated(tmp_path, monkeypatch):
    path = write_image(tmp_path / "locked.png", random_rgb(8, 8))
    real = os.open

    def refusing_open(name, *args, **kwargs):
        if str(name).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(name))
        return real(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(InputError, match=r"permission denied\); check its permissions"):
        decode_image(path)


# -- unusual files that must work ----------------------------------------------------------


@pytest.fixture
def decode(tmp_path) -> Callable[[bytes, str], np.ndarray]:
    """Write bytes to a file with the given suffix and decode it."""

    def run(data: bytes, suffix: str) -> np.ndarray:
        path = tmp_path / f"image{suffix}"
        path.write_bytes(data)
        return decode_image(path)

    return run


def test_16_bit_png(decode):
    deep = np.zeros((3, 4, 3), np.uint16)
    deep[0, 0] = [257 * 10, 257 * 20, 257 * 30]  # B, G, R
    deep[1] = 65535
    decoded = decode(_encode(".png", deep), ".png")
    assert decoded.dtype == np.uint8 and decoded.shape == (3, 4, 3)
    np.testing.assert_array_equal(decoded[0, 0], [30, 20, 10])
    np.testing.assert_array_equal(decoded[1, 2], [255, 255, 255])


def test_palette_png_with_and_without_transparency(decode):
    palette = _chunk(b"PLTE", bytes([255, 0, 0, 0, 0, 255, 0, 255, 0]))
    rows = [bytes([0, 1, 2]), bytes([2, 1, 0])]
    decoded = decode(_png(3, 2, 3, 8, rows, palette), ".png")
    np.testing.assert_array_equal(decoded[0], [[255, 0, 0], [0, 0, 255], [0, 255, 0]])
    transparent = _chunk(b"tRNS", bytes([0]))  # entry 0 fully transparent -> white
    decoded = decode(_png(3, 2, 3, 8, rows, palette, transparent), ".png")
    np.testing.assert_array_equal(decoded[0], [[255, 255, 255], [0, 0, 255], [0, 255, 0]])


def test_rgba_and_gray_alpha_png_composite_over_white(decode):
    rgba = _png(2, 1, 6, 8, [bytes([200, 0, 0, 255, 200, 0, 0, 0])])
    np.testing.assert_array_equal(decode(rgba, ".png")[0], [[200, 0, 0], [255, 255, 255]])
    gray_alpha = _png(2, 1, 4, 8, [bytes([100, 255, 100, 0])])
    np.testing.assert_array_equal(decode(gray_alpha, ".png")[0], [[100] * 3, [255] * 3])


def test_cmyk_jpeg(decode):
    decoded = decode(CMYK_JPEG, ".jpg")
    assert decoded.shape == (8, 16, 3)
    np.testing.assert_allclose(decoded[4, 3], [255, 0, 0], atol=6)  # red
    np.testing.assert_allclose(decoded[4, 12], [0, 0, 255], atol=6)  # blue


def test_grayscale_jpeg(decode):
    gray = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (8, 1))
    decoded = decode(_encode(".jpg", gray, cv2.IMWRITE_JPEG_QUALITY, 100), ".jpg")
    assert decoded.shape == (8, 16, 3)
    assert (decoded[..., 0] == decoded[..., 1]).all() and (decoded[..., 1] == decoded[..., 2]).all()
    np.testing.assert_allclose(decoded[..., 0], gray, atol=3)


def test_exif_orientation_6_is_rotated_clockwise(decode):
    jpeg = _encode(".jpg", random_rgb(8, 16, seed=5))
    upright = decode(jpeg, ".jpg")
    rotated = decode(_with_orientation(jpeg, 6), ".jpg")
    assert upright.shape == (8, 16, 3) and rotated.shape == (16, 8, 3)
    np.testing.assert_array_equal(rotated, np.rot90(upright, k=-1))  # 90 degrees clockwise


# -- pixel limit -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tiff", ".webp"])
def test_pixel_limit_is_read_from_the_header_before_decoding(suffix, tmp_path, monkeypatch):
    path = write_image(tmp_path / f"big{suffix}", random_rgb(40, 50))  # 2,000 pixels
    assert decode_image(path, max_pixels=2_000).shape == (40, 50, 3)

    def refuse(*_args):
        raise AssertionError("decoded an image over the pixel limit")

    monkeypatch.setattr(images.cv2, "imdecode", refuse)
    with pytest.raises(InputError) as caught:
        decode_image(path, max_pixels=1_999)
    assert str(caught.value) == (
        "image is 50x40 (2,000 pixels), over the 1,999 pixels limit; "
        "downscale it or raise --max-pixels"
    )


def test_pixel_limit_from_a_big_endian_tiff_header(tmp_path):
    header = b"MM\x00\x2a" + struct.pack(">I", 8)
    ifd = struct.pack(">H", 2) + struct.pack(">HHIHH", 256, 3, 1, 30000, 0)
    ifd += struct.pack(">HHII", 257, 4, 1, 20000) + struct.pack(">I", 0)
    path = tmp_path / "huge.tif"
    path.write_bytes(header + ifd)
    with pytest.raises(InputError, match=r"30000x20000 \(600 MP\), over the 100 MP limit"):
        decode_image(path)


# -- the command line ----------------------------------------------------------------------


def test_batch_goes_on_past_every_bad_file(tmp_path, saved_model, capfd):
    """One folder of good, unusual and bad files: one error line per bad file, exit 1."""
    folder = tmp_path / "entrées é"
    folder.mkdir()
    bad = {name: make() for name, (make, _) in BAD_FILES.items()}
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    (folder / "dangling.png").symlink_to(folder / "gone.png")
    write_image(folder / "big.png", random_rgb(40, 40))  # over --max-pixels 1000
    good = {
        "chat noir 猫.jpg": _encode(".jpg", random_rgb(20, 30, seed=6)),
        "deep.png": _encode(".png", np.full((8, 8, 3), 40000, np.uint16)),
        "palette.png": _png(2, 1, 3, 8, [bytes([0, 1])], _chunk(b"PLTE", bytes(6))),
        "cmyk.jpg": CMYK_JPEG,
        "rotated.jpg": _with_orientation(_encode(".jpg", random_rgb(8, 16)), 6),
    }
    for name, data in good.items():
        (folder / name).write_bytes(data)
    (folder / "anim.gif").write_bytes(GIF)  # not an image suffix: skipped in a folder
    (folder / "notes.txt").write_text("hello")

    out = tmp_path / "out"
    result = invoke("gradcam", folder, "-m", saved_model, "-o", out, "-q", "--max-pixels", 1000)
    assert result.exit_code == 1
    lines = _error_lines(result)
    failed = [*bad, "dangling.png", "big.png"]
    assert sorted(line.split(": ")[1].rsplit("/", 1)[1] for line in lines) == sorted(failed)
    assert any("dangling.png: broken symbolic link" in line for line in lines)
    assert any("big.png: image is 40x40 (1,600 pixels)" in line for line in lines)
    assert "anim.gif" not in result.stderr
    assert capfd.readouterr().err == ""  # nothing written below Python's sys.stderr

    summary = _summary(out)
    assert summary["totals"]["processed"] == len(good)
    assert summary["totals"]["failed"] == len(failed)
    done = {Path(r["input"]).name for r in summary["results"] if r["error"] is None}
    assert done == set(good)
    assert cv2.imread(str(out / "rotated_gradcam.png")).shape[:2] == (16, 8)


def test_explicit_gif_missing_path_and_broken_link(tmp_path, saved_model):
    good = write_image(tmp_path / "good.png", random_rgb(24, 24))
    gif = tmp_path / "anim.gif"
    gif.write_bytes(GIF)
    link = tmp_path / "link.jpg"
    link.symlink_to(tmp_path / "missing.jpg")
    missing = tmp_path / "nope.png"
    out = tmp_path / "out"
    result = invoke("gradcam", good, gif, missing, link, "-m", saved_model, "-o", out, "-q")
    assert result.exit_code == 1
    lines = _error_lines(result)
    assert len(lines) == 3
    assert any(f"{gif}: unsupported file type '.gif'" in line for line in lines)
    assert any(f"{missing}: no such file or folder" in line for line in lines)
    assert any(f"{link}: broken symbolic link" in line for line in lines)
    assert _summary(out)["totals"]["processed"] == 1


def test_missing_path_as_the_only_input_is_a_usage_error(tmp_path, saved_model):
    missing = tmp_path / "nope.png"
    result = invoke("gradcam", missing, "-m", saved_model, "-o", tmp_path / "out", "-q")
    assert result.exit_code == 2
    assert str(missing) in result.stderr and "no such file" in result.stderr


def test_symlink_loop_terminates_without_duplicates(tmp_path, saved_model):
    folder = tmp_path / "in"
    write_image(folder / "a.png", random_rgb(24, 24, seed=1))
    write_image(folder / "sub" / "b.png", random_rgb(24, 24, seed=2))
    (folder / "sub" / "up").symlink_to(folder, target_is_directory=True)
    (folder / "self").symlink_to(folder / "self")  # a link to itself
    (folder / "alias.png").symlink_to(folder / "a.png")  # same file twice
    out = tmp_path / "out"
    result = invoke("gradcam", folder, "-r", "-m", saved_model, "-o", out, "-q")
    assert result.exit_code == 0, result.stderr
    inputs = [Path(r["input"]).resolve() for r in _summary(out)["results"]]
    assert sorted(p.name for p in inputs) == ["a.png", "b.png"]


def test_output_folder_inside_the_input_folder_is_never_read(tmp_path, saved_model):
    folder = tmp_path / "in"
    write_image(folder / "a.png", random_rgb(24, 24, seed=1))
    write_image(folder / "sub" / "b.jpg", random_rgb(24, 24, seed=2))
    out = folder / "out"
    for _ in range(2):
        result = invoke("gradcam", folder, "-r", "-m", saved_model, "-o", out, "-q")
        assert result.exit_code == 0, result.stderr
        summary = _summary(out)
        assert summary["totals"]["inputs"] == summary["totals"]["processed"] == 2
        assert not [r for r in summary["results"] if Path(r["input"]).is_relative_to(out)]


def test_input_folder_inside_or_equal_to_the_output_folder(tmp_path):
    folder = tmp_path / "images"
    write_image(folder / "a.png", random_rgb(8, 8))
    items, problems = discover([folder], out_dir=tmp_path)  # like `cnnvis ... images -o .`
    assert [i.path.name for i in items] == ["a.png"] and problems == []
    items, problems = discover([folder], out_dir=folder)
    assert items == []
    assert problems == [(folder, discovery.OUTPUT_IS_INPUT)]
    assert "choose another -o/--out" in discovery.OUTPUT_IS_INPUT


@pytest.mark.parametrize("where", ["an existing file", "a path under a file"])
def test_unwritable_output_folder_exits_2_before_any_work(where, tmp_path, saved_model):
    image = write_image(tmp_path / "a.png", random_rgb(24, 24))
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    out = blocker if where == "an existing file" else blocker / "sub"
    result = invoke("gradcam", image, "-m", saved_model, "-o", out)
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot write to output folder {out} (")
    assert line.endswith("choose another -o/--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "taken"]


@pytest.mark.parametrize("contents", [[], ["notes.txt", "anim.gif"]])
def test_folder_without_images_exits_2(contents, tmp_path, saved_model):
    folder = tmp_path / "empty"
    folder.mkdir()
    for name in contents:
        (folder / name).write_bytes(b"x")
    result = invoke("gradcam", folder, "-m", saved_model, "-o", tmp_path / "out")
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert f"no images found in {folder}" in line


def test_ctrl_c_mid_run_exits_130_with_a_partial_summary(tmp_path, saved_model, monkeypatch):
    folder = tmp_path / "in"
    for i in range(4):
        write_image(folder / f"{i}.png", random_rgb(24, 24, seed=i))
    interrupt_on_batch(monkeypatch, "gradcam", 2)
    out = tmp_path / "out"
    result = invoke("gradcam", folder, "-m", saved_model, "-o", out, "-b", 1, "-q")
    assert result.exit_code == 130
    summary = _summary(out)
    assert summary["totals"]["interrupted"] is True
    assert [Path(r["input"]).name for r in summary["results"]] == ["0.png"]
    assert summary["results"][0]["error"] is None
    assert cv2.imread(summary["results"][0]["outputs"]["overlay"]).shape == (24, 24, 3)
    assert sorted(p.name for p in out.iterdir()) == [
        "0_gradcam.png",
        "summary-gradcam.json",
        "summary.json",
    ]
