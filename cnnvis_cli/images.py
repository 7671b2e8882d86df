"""Find input images, decode them, and stream model-ready batches.

Decoding reads the file's bytes and calls ``cv2.imdecode``, so unicode paths and spaces work.
Every image becomes RGB (or grayscale for a 1-channel model) on a 0..255 float scale:
16-bit images are divided by 257, alpha is composited over white, palette and CMYK files are
converted by OpenCV, and JPEG EXIF orientation is honoured.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cnnvis_cli.errors import CnnvisError, InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_MAX_PIXELS = 100_000_000


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
    A folder's sub-folders are mirrored under the output folder; the output folder itself is
    never searched, so a run never re-reads its own outputs.
    """
    skip = out_dir.resolve() if out_dir is not None else None
    found: list[tuple[Path, Path]] = []  # (path, rel_dir)
    problems: list[tuple[Path, str]] = []
    for raw in paths:
        root = Path(raw)
        if root.is_dir():
            found.extend((p, p.parent.relative_to(root)) for p in _walk(root, recursive, skip))
        elif root.is_file() or root.is_symlink():
            if not root.exists():
                problems.append((root, "broken symbolic link"))
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
            problems.append((root, "no such file or folder"))
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
    """Decode an image file to H x W x 3 uint8 RGB. Raises InputError with a clear reason."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except PermissionError as exc:
        raise InputError("cannot read the file (permission denied)") from exc
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or exc})") from exc
    if data.size == 0:
        raise InputError("empty file (0 bytes)")
    is_jpeg = data[:2].tobytes() == b"\xff\xd8"
    # JPEG: IMREAD_COLOR applies EXIF orientation and converts CMYK/grayscale;
    # others: IMREAD_UNCHANGED keeps 16-bit depth and alpha so we convert them ourselves.
    flags = cv2.IMREAD_COLOR if is_jpeg else cv2.IMREAD_UNCHANGED
    if (h_w := _header_size(data)) is not None and h_w[0] * h_w[1] > max_pixels:
        raise InputError(
            f"image is {h_w[1]}x{h_w[0]} = {h_w[0] * h_w[1] / 1e6:.0f} MP, over the "
            f"{max_pixels / 1e6:.0f} MP limit (raise it with --max-pixels)"
        )
    image = cv2.imdecode(data, flags)
    if image is None or image.size == 0:
        raise InputError("not a readable image (corrupt, truncated or not an image file)")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise InputError(f"image is over the {max_pixels / 1e6:.0f} MP limit (--max-pixels)")
    return to_rgb8(image)


def _header_size(data: np.ndarray) -> tuple[int, int] | None:
    """(height, width) from a PNG header, without decoding; None for other formats."""
    head = data[:24].tobytes()
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        width = int.from_bytes(head[16:20], "big")
        height = int.from_bytes(head[20:24], "big")
        return height, width
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
    rgb: np.ndarray, size: tuple[int, int] | None, channels: int, max_side: int = 1024
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

    def _load(self, item: InputItem) -> LoadedImage | InputError:
        try:
            rgb = decode_image(item.path, max_pixels=self.max_pixels)
            return LoadedImage(item, rgb, to_model_tensor(rgb, self.size, self.channels))
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
