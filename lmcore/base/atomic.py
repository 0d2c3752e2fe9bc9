"""Writing folders so that a reader never sees a half-written one, whatever moment the writer is killed at.

Everything is written into a temporary sibling (`<name>.tmp-<pid>`), fsynced, and renamed into place; a folder
being replaced is first renamed aside (`<name>.old-<pid>`) and deleted only once the new one is in place. Leftover
temporaries from a killed writer never carry the final name, so they are never loaded, and the next write of the
same kind clears them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    for f in Path(folder).rglob("*"):
        if f.is_file():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
    fsync_dir(folder)


def temporary_sibling(target: Path) -> Path:
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def replace_folder(target: Path, write: Callable[[Path], None], keep_existing: bool = False) -> Path:
    """Create `target` by `write(tmp)` into a temporary sibling, fsync it, and rename it into place. With
    `keep_existing`, a `target` that appeared meanwhile (written by another process) is kept instead."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(target)
    try:
        write(tmp)
        fsync_tree(tmp)
        old = None
        if target.exists():
            if keep_existing:
                shutil.rmtree(tmp, ignore_errors=True)
                return target
            old = target.with_name(f"{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def write_into(folder: Path, write: Callable[[Path], None]) -> None:
    """Add files to an existing `folder` without ever leaving a half-written file there: write them into a
    temporary folder inside it, then move each into place (a rename, atomic per file)."""
    folder = Path(folder)
    tmp = temporary_sibling(folder / ".final")
    try:
        write(tmp)
        fsync_tree(tmp)
        for f in sorted(tmp.rglob("*")):
            dest = folder / f.relative_to(tmp)
            if f.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, dest)
        fsync_dir(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write one text file so that a reader sees the old content or the new, never a part: a temporary file in
    the same folder, fsynced, then renamed over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
