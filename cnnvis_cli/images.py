"""Find input images, decode them, and stream model-ready batches.

Decoding reads the file's bytes and calls ``cv2.imdecode``, so unicode paths and spaces work.
Every image becomes RGB (or grayscale for a 1-channel model) on a 0..255 float scale:
16-bit images are divided by 257, alpha is composited over white, palette and CMYK files are
converted by OpenCV, and JPEG EXIF orientation is honoured.

Bad files are refused with an ``InputError`` naming the problem, before a decoder sees them
where the bytes allow: unknown content, truncated or damaged PNG/JPEG structure, and images
over the pixel limit (the size is read from the PNG, JPEG, BMP, TIFF or WebP header). OpenCV's
own log lines are switched off (set ``OPENCV_LOG_LEVEL`` to see them), so a bad file prints
one line of ours rather than decoder noise.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cnnvis_cli.errors import CnnvisError, InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MAX_SIDE = 1024  # long side of an image fed to a dynamic-size model
OUTPUT_IS_INPUT = (
    "is also the output folder, so outputs would be read back as inputs; choose another -o/--out"
)
BROKEN_LINK = "broken symbolic link (its target does not exist); fix or remove the link"

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


@dataclass(frozen=True)
class InputItem:
    """One input file and where its outputs go, relative to the output folder."""

    path: Path
    rel_dir: Path  # sub-folder mirrored under the output folder
    out_stem: str  # unique within rel_dir


@dataclass
class LoadedImage:
    """A decoded input: the original (for overlays) and its model-sized raw tensor."""

    item: InputItem
    original: np.ndarray  # H x W x 3 uint8 RGB, the image's own resolution
    tensor: np.ndarray  # h x w x c float32, raw 0..255, resized to the model input


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder)
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def _walk(root: Path, recursive: bool, skip: Path | None) -> Iterator[Path]:
    """Image files under ``root`` in sorted order; follows symlinks but never loops."""
    seen: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        real = here.resolve()
        if real in seen or _inside(here, skip):
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(dirnames) if recursive else []
        for name in sorted(filenames):
            path = here / name
            if _is_image(path):
                yield path


def discover(
    paths: Iterable[str | Path], *, recursive: bool = False, out_dir: Path | None = None
) -> tuple[list[InputItem], list[tuple[Path, str]]]:
    """Expand files and folders into input items with collision-free output names.

    Returns ``(items, problems)``; a problem is a path that does not exist or is unsupported.
    A folder's sub-folders are mirrored under the output folder; an output folder inside an
    input folder is never searched, so a run never re-reads its own outputs, and an input folder
    that is the output folder itself is refused.
    """
    skip = out_dir.resolve() if out_dir is not None else None
    found: list[tuple[Path, Path]] = []  # (path, rel_dir)
    problems: list[tuple[Path, str]] = []
    for raw in paths:
        root = Path(raw)
        if root.is_dir():
            if skip is not None and root.resolve() == skip:
                problems.append((root, OUTPUT_IS_INPUT))
                continue
            prune = None if _inside(root, skip) else skip  # e.g. `images -o .`: search it all
            found.extend((p, p.parent.relative_to(root)) for p in _walk(root, recursive, prune))
        elif root.is_file() or root.is_symlink():
            if not root.exists():
                problems.append((root, BROKEN_LINK))
            elif not _is_image(root):
                problems.append(
                    (
                        root,
                        f"unsupported file type {root.suffix or '(none)'!r}; "
                        f"supported: {', '.join(IMAGE_SUFFIXES)}",
                    )
                )
            else:
                found.append((root, Path()))
        else:
            problems.append((root, "no such file or folder; check the path"))
    return _name_outputs(found), problems


def _name_outputs(found: list[tuple[Path, Path]]) -> list[InputItem]:
    """Give each input a unique output stem within its output sub-folder.

    ``a.jpg`` and ``a.png`` in one folder both map to stem ``a``; they become ``a_jpg`` and
    ``a_png``, whatever order they come in. The same file given twice is processed once.
    """
    unique: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for path, rel in found:
        key = path.resolve() if path.exists() else path
        if key not in seen:
            seen.add(key)
            unique.append((path, rel))
    counts: dict[tuple[Path, str], int] = {}
    for path, rel in unique:
        counts[(rel, path.stem)] = counts.get((rel, path.stem), 0) + 1
    items: list[InputItem] = []
    used: set[tuple[Path, str]] = set()
    for path, rel in unique:
        stem = path.stem
        if counts[(rel, stem)] > 1:
            stem = f"{stem}_{path.suffix.lstrip('.').lower()}"
        base, n = stem, 2
        while (rel, stem) in used:  # same stem and suffix from two input roots
            stem, n = f"{base}_{n}", n + 1
        used.add((rel, stem))
        items.append(InputItem(path, rel, stem))
    return items


def decode_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file to H x W x 3 uint8 RGB. Raises InputError with a clear reason.

    The bytes are checked before any decoder sees them: a known signature, a complete file
    (PNG chunks with good checksums up to IEND; a JPEG end-of-image marker) and a pixel count,
    read from the header, within ``max_pixels``.
    """
    data = read_bytes(path)
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
    return to_rgb8(image)


def read_bytes(path: Path) -> bytes:
    """The file's bytes; InputError for a missing, unreadable or empty file."""
    try:
        data = path.read_bytes()
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
        raise InputError(f"cannot read the file ({exc.strerror or exc})") from None
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


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Convert an OpenCV-decoded array (gray, BGR, BGRA; 8/16-bit or float) to RGB uint8."""
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image.astype(np.float32) * (255.0 if image.max() <= 1 else 1), 0, 255)
        image = image.round().astype(np.uint8)
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


class ImageSource:
    """Stream decoded, resized images in fixed-size batches, decoding ahead in threads.

    At most ``batch_size * (prefetch + 1)`` images are held at once, so a folder of any size
    runs in bounded memory. Failed inputs are yielded as ``(item, error)`` pairs in order.
    """

    def __init__(
        self,
        items: list[InputItem],
        *,
        size: tuple[int, int] | None,
        channels: int,
        batch_size: int,
        workers: int = 2,
        prefetch: int = 2,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> None:
        if batch_size < 1:
            raise CnnvisError("--batch-size must be at least 1")
        self.items = items
        self.size = size
        self.channels = channels
        self.batch_size = batch_size
        self.workers = workers
        self.prefetch = prefetch
        self.max_pixels = max_pixels
        self.max_side = max_side

    def _load(self, item: InputItem) -> LoadedImage | InputError:
        try:
            rgb = decode_image(item.path, max_pixels=self.max_pixels)
            tensor = to_model_tensor(rgb, self.size, self.channels, self.max_side)
            return LoadedImage(item, rgb, tensor)
        except InputError as exc:
            return exc
        except (cv2.error, MemoryError, ValueError) as exc:
            return InputError(f"cannot decode the image ({type(exc).__name__}: {exc})")

    def batches(self) -> Iterator[list[tuple[InputItem, LoadedImage | InputError]]]:
        """Yield lists of at most ``batch_size`` (item, loaded-or-error) pairs, in input order."""
        chunks = [
            self.items[i : i + self.batch_size] for i in range(0, len(self.items), self.batch_size)
        ]
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="decode") as pool:
            pending = []
            for chunk in chunks:
                pending.append((chunk, [pool.submit(self._load, item) for item in chunk]))
                if len(pending) > self.prefetch:
                    yield self._collect(pending.pop(0))
            while pending:
                yield self._collect(pending.pop(0))

    @staticmethod
    def _collect(entry):
        chunk, futures = entry
        return [(item, future.result()) for item, future in zip(chunk, futures, strict=True)]
