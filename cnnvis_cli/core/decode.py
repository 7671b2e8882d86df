"""Decode an image file into RGB pixels, refusing bad files with one clear reason.

Decoding reads the file's bytes and calls ``cv2.imdecode``, so unicode paths and spaces work.
Every image becomes RGB on a 0..255 scale: 16-bit images are divided by 257, alpha is
composited over white, palette and CMYK files are converted by OpenCV, JPEG EXIF orientation is
honoured, and float images are rescaled (with a note) rather than clipped.

Bad files are refused with an ``InputError`` naming the problem, before a decoder sees them
where the bytes allow: not a regular file, over the size cap, unknown content, truncated or
damaged PNG/JPEG structure, and images over the pixel limit (the size is read from the PNG, JPEG,
BMP, TIFF or WebP header). OpenCV's own log lines are switched off (set ``OPENCV_LOG_LEVEL`` to
see them), so a bad file prints one line of ours rather than decoder noise.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from cnnvis_cli.core.discover import BROKEN_LINK, LINK_LOOP, file_problem
from cnnvis_cli.errors import InputError

DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MAX_FILE_SIZE = 512 * 2**20  # bytes read from one input file at most
DEFAULT_MAX_SIDE = 1024  # long side of an image fed to a dynamic-size model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SOS, EOI = 0xDA, 0xD9  # JPEG start-of-scan and end-of-image markers
SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
TIFF_WIDTH, TIFF_LENGTH = 256, 257
FORMAT_NAMES = {"jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "tiff": "TIFF", "webp": "WebP"}


def _silence_opencv() -> None:
    """Turn off OpenCV's log lines (decoder warnings) unless the user asked for a level."""
    if "OPENCV_LOG_LEVEL" not in os.environ:
        with contextlib.suppress(AttributeError):
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


_silence_opencv()


@dataclass
class Decoded:
    """A decoded image and what the user should know about how it was read."""

    rgb: np.ndarray  # H x W x 3 uint8
    notes: list[str] = field(default_factory=list)


def decode_image(
    path: Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
) -> np.ndarray:
    """Decode an image file to H x W x 3 uint8 RGB. Raises InputError with a clear reason."""
    return decode_bytes(read_bytes(path, max_file_size), max_pixels=max_pixels).rgb


def decode_bytes(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode a file's bytes to RGB. Raises InputError with a clear reason.

    The bytes are checked before any decoder sees them: a known signature, a complete file
    (PNG chunks with good checksums up to IEND; a JPEG end-of-image marker) and a pixel count,
    read from the header, within ``max_pixels``.
    """
    kind = sniff_format(data)
    if kind == "png":
        check_png_structure(data)
    elif kind == "jpeg":
        check_jpeg_structure(data)
    check_pixels(header_size(data, kind), max_pixels)
    # JPEG: IMREAD_COLOR applies EXIF orientation and converts CMYK/grayscale;
    # others: IMREAD_UNCHANGED keeps 16-bit depth and alpha so we convert them ourselves.
    flags = cv2.IMREAD_COLOR if kind == "jpeg" else cv2.IMREAD_UNCHANGED
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None or image.size == 0:
        raise InputError(
            f"not a readable image (corrupt or unsupported {FORMAT_NAMES[kind]} data); "
            "re-export the file"
        )
    check_pixels(image.shape[:2], max_pixels)
    notes: list[str] = []
    return Decoded(to_rgb8(image, notes), notes)


def _size_text(count: int) -> str:
    return f"{count / 2**20:,.0f} MiB" if count >= 2**20 else f"{count:,} bytes"


def read_bytes(path: Path, max_file_size: int = DEFAULT_MAX_FILE_SIZE) -> bytes:
    """The bytes of a regular file of at most ``max_file_size`` bytes; InputError otherwise.

    The file is opened non-blocking and checked with ``fstat`` before a byte is read, so a FIFO
    or a device that slipped in after discovery cannot hang the run or fill the memory.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if path.is_symlink():
            raise InputError(BROKEN_LINK) from None
        raise InputError("file not found (moved or deleted during the run)") from None
    except PermissionError:
        raise InputError(
            "cannot read the file (permission denied); check its permissions"
        ) from None
    except IsADirectoryError:
        raise InputError("is a folder, not an image file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(LINK_LOOP) from None
        raise InputError(f"cannot read the file ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(file_problem(path) or "not a regular file; only files are read")
        if info.st_size > max_file_size:
            raise InputError(
                f"file is {_size_text(info.st_size)}, over the {_size_text(max_file_size)} "
                "limit; raise --max-file-size if it really is an image"
            )
        try:
            data = handle.read(max_file_size + 1)
        except OSError as exc:
            raise InputError(f"cannot read the file ({exc.strerror or exc})") from None
    if len(data) > max_file_size:  # grew while being read
        raise InputError(f"file is over the {_size_text(max_file_size)} limit")
    if not data:
        raise InputError("empty file (0 bytes); re-export or remove it")
    return data


def sniff_format(data: bytes) -> str:
    """The image format from the file's first bytes; InputError if it is none we support."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    raise InputError(
        "not a readable image (the content is not JPEG, PNG, BMP, TIFF or WebP data); "
        "check that it is an image file"
    )


def check_png_structure(data: bytes) -> None:
    """Walk the PNG chunks: IHDR first, every chunk whole with a good CRC, then IEND.

    Catching damage here keeps libpng, which prints its errors to the terminal, from seeing it.
    """
    pos = len(PNG_SIGNATURE)
    view = memoryview(data)
    while True:
        if pos + 12 > len(data):
            raise InputError("truncated PNG (no IEND end chunk); re-export the file")
        length = int.from_bytes(data[pos : pos + 4], "big")
        name = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if pos == len(PNG_SIGNATURE) and name != b"IHDR":
            raise InputError("corrupt PNG (no IHDR header chunk); re-export the file")
        if end > len(data):
            raise InputError(
                f"truncated PNG (file ends inside the {_chunk_name(name)} chunk); "
                "re-export the file"
            )
        if zlib.crc32(view[pos + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big"):
            raise InputError(
                f"corrupt PNG (checksum error in the {_chunk_name(name)} chunk); re-export the file"
            )
        if name == b"IEND":
            return
        pos = end


def _chunk_name(name: bytes) -> str:
    return name.decode("ascii") if name.isalpha() else repr(name)


def check_jpeg_structure(data: bytes) -> None:
    """Header segments intact up to the image data, and an end-of-image marker after it.

    libjpeg decodes a truncated file to a partly grey picture and prints a warning to the
    terminal, so truncation is refused here, before decoding.
    """
    scan = next((pos for marker, pos in jpeg_segments(data) if marker == SOS), None)
    if scan is None:
        raise InputError("corrupt or truncated JPEG (no image data found); re-export the file")
    if data.rfind(b"\xff\xd9") < scan:
        raise InputError("truncated JPEG (no end-of-image marker); re-export the file")


def jpeg_segments(data: bytes) -> Iterator[tuple[int, int]]:
    """(marker, offset) of each JPEG header segment after SOI, up to and including SOS.

    Stops early, without error, where the segment chain is broken or the data ends.
    """
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        yield marker, pos
        if marker in (SOS, EOI):
            return
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")


def check_pixels(size: tuple[int, int] | None, max_pixels: int) -> None:
    """Refuse a (height, width) whose pixel count exceeds ``max_pixels``."""
    if size is None or size[0] * size[1] <= max_pixels:
        return
    height, width = size
    raise InputError(
        f"image is {width}x{height} ({_pixels(height * width)}), over the "
        f"{_pixels(max_pixels)} limit; downscale it or raise --max-pixels"
    )


def _pixels(count: int) -> str:
    return f"{count / 1e6:.0f} MP" if count >= 10_000_000 else f"{count:,} pixels"


def header_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """(height, width) read from the file header without decoding; None if not found."""
    reader = {
        "png": _png_size,
        "jpeg": _jpeg_size,
        "bmp": _bmp_size,
        "tiff": _tiff_size,
        "webp": _webp_size,
    }[kind]
    return reader(data)


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    for marker, pos in jpeg_segments(data):
        if marker in SOF_MARKERS and pos + 9 <= len(data):  # FFCn, length, precision, H, W
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            return height, int.from_bytes(data[pos + 7 : pos + 9], "big")
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    if int.from_bytes(data[14:18], "little") == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return int.from_bytes(data[20:22], "little"), int.from_bytes(data[18:20], "little")
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = int.from_bytes(data[22:26], "little", signed=True)  # negative: top-down rows
    return abs(height), abs(width)


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """Width and length tags of the first IFD (classic TIFF; None for BigTIFF)."""
    order = "little" if data[:2] == b"II" else "big"

    def number(pos: int, size: int) -> int:
        return int.from_bytes(data[pos : pos + size], order)

    if len(data) < 8 or number(2, 2) != 42:
        return None
    ifd = number(4, 4)
    found: dict[int, int] = {}
    for index in range(number(ifd, 2) if ifd + 2 <= len(data) else 0):
        entry = ifd + 2 + 12 * index
        if entry + 12 > len(data):
            break
        tag, kind = number(entry, 2), number(entry + 2, 2)
        if tag in (TIFF_WIDTH, TIFF_LENGTH):
            found[tag] = number(entry + 8, 2 if kind == 3 else 4)  # SHORT or LONG
    if TIFF_WIDTH in found and TIFF_LENGTH in found:
        return found[TIFF_LENGTH], found[TIFF_WIDTH]
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:  # lossy: 14-bit sizes after the start code
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        return int.from_bytes(data[28:30], "little") & 0x3FFF, width
    if chunk == b"VP8L" and len(data) >= 25:  # lossless: 14-bit (size - 1) fields
        bits = int.from_bytes(data[21:25], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:  # extended: 24-bit (canvas size - 1) fields
        width = int.from_bytes(data[24:27], "little") + 1
        return int.from_bytes(data[27:30], "little") + 1, width
    return None


def float_to_8bit(image: np.ndarray, notes: list[str]) -> np.ndarray:
    """Float (or 32-bit) pixels to 0..255: values in [0, 1] are scaled by 255; any other range
    is min-max rescaled to 0..255 (never clipped), with a note naming the range found."""
    values = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:
        return (values * 255.0).round().astype(np.uint8)
    notes.append(
        f"pixel values span [{low:.4g}, {high:.4g}], outside [0, 1]: rescaled to 0..255 "
        "(min-max) to read the image"
    )
    spread = high - low
    scaled = (values - low) * (255.0 / spread) if spread > 0 else np.zeros_like(values)
    return scaled.round().astype(np.uint8)


def to_rgb8(image: np.ndarray, notes: list[str] | None = None) -> np.ndarray:
    """Convert an OpenCV-decoded array (gray, BGR, BGRA; 8/16-bit or float) to RGB uint8."""
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = float_to_8bit(image, notes if notes is not None else [])
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:  # composite over white
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        bgr = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        image = bgr.round().astype(np.uint8)
    return cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)


def to_model_tensor(
    rgb: np.ndarray, size: tuple[int, int] | None, channels: int, max_side: int = DEFAULT_MAX_SIDE
) -> np.ndarray:
    """Resize to the model's (height, width) and return a float32 raw-pixel tensor.

    Downscaling uses area averaging (no aliasing); upscaling is bilinear. A dynamic-size model
    (``size`` None) takes the image at its own size, capped at ``max_side`` on the long side.
    """
    height, width = rgb.shape[:2]
    if size is None:
        scale = min(1.0, max_side / max(height, width))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if (height, width) != size:
        shrinking = size[0] * size[1] < height * width
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=interpolation)
    tensor = rgb.astype(np.float32)
    if channels == 1:
        tensor = cv2.cvtColor(tensor, cv2.COLOR_RGB2GRAY)[:, :, None]
    return tensor
