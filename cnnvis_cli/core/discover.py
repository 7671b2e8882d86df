"""Find the input images under the paths a user gives, with collision-free output names.

Only *regular files* are inputs. A FIFO named ``p.png`` (reading it would block forever), a link
to ``/dev/zero`` (endless bytes), a socket or a folder named like an image is a per-input problem,
as are broken links and link loops; the run goes on past each. Folders are walked in sorted
order, following links to folders but never looping, and never into the output folder, so a run
never re-reads its own outputs.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
OUTPUT_IS_INPUT = (
    "is also the output folder, so outputs would be read back as inputs; choose another -o/--out"
)
BROKEN_LINK = "broken symbolic link (its target does not exist); fix or remove the link"
LINK_LOOP = "symbolic link loop (the link points back at itself); fix or remove the link"


@dataclass(frozen=True)
class InputItem:
    """One input file and where its outputs go, relative to the output folder."""

    path: Path
    rel_dir: Path  # sub-folder mirrored under the output folder
    out_stem: str  # unique within rel_dir


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image file, or None for a regular file."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return LINK_LOOP
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return BROKEN_LINK
        if exc.errno == errno.ENOENT:
            return "no such file or folder; check the path"
        return f"cannot read the file ({exc.strerror or exc})"
    if stat.S_ISREG(info.st_mode):
        return None
    kind = {
        stat.S_ISDIR: "a folder",
        stat.S_ISFIFO: "a named pipe (FIFO)",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    what = next((name for test, name in kind.items() if test(info.st_mode)), "not a regular file")
    return f"is {what}, not an image file; only regular files are read"


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder)
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def _walk(root: Path, recursive: bool, skip: Path | None) -> Iterator[Path]:
    """Image-named entries under ``root`` in sorted order; follows folder links, never loops."""
    seen: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        real = here.resolve()
        if real in seen or _inside(here, skip):
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(dirnames) if recursive else []
        # a link to a folder that loops or dangles shows up among the file names
        for name in sorted(filenames):
            path = here / name
            if is_image_name(path):
                yield path


def discover(
    paths: Iterable[str | Path], *, recursive: bool = False, out_dir: Path | None = None
) -> tuple[list[InputItem], list[tuple[Path, str]]]:
    """Expand files and folders into input items with collision-free output names.

    Returns ``(items, problems)``; a problem is a path that cannot be an input (missing,
    unsupported, not a regular file). A folder's sub-folders are mirrored under the output
    folder; an output folder inside an input folder is never searched, and an input folder that
    is the output folder itself is refused.
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
            for path in _walk(root, recursive, prune):
                problem = file_problem(path)
                if problem is None:
                    found.append((path, path.parent.relative_to(root)))
                else:
                    problems.append((path, problem))
        elif not is_image_name(root) and (root.is_file() or root.is_symlink()):
            supported = ", ".join(IMAGE_SUFFIXES)
            problems.append(
                (root, f"unsupported file type {root.suffix or '(none)'!r}; supported: {supported}")
            )
        else:
            problem = file_problem(root)
            if problem is None:
                found.append((root, Path()))
            else:
                problems.append((root, problem))
    return _name_outputs(found), problems


def _key(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


def _name_outputs(found: list[tuple[Path, Path]]) -> list[InputItem]:
    """Give each input a unique output stem within its output sub-folder.

    ``a.jpg`` and ``a.png`` in one folder both map to stem ``a``; they become ``a_jpg`` and
    ``a_png``, whatever order they come in. The same file given twice is processed once.
    """
    unique: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for path, rel in found:
        key = _key(path)
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
