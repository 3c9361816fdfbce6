"""Write a whole file atomically: to a temporary file next to it, fsync, rename over it.

The temporary file ``.NAME.XXXXXX.tmp`` lives in the destination's directory, so ``os.replace``
(atomic on POSIX and Windows) swaps it in; the directory is fsync-ed after. A process killed while
writing (SIGKILL, OOM killer, pre-emption, full disk) leaves the previous complete file or the new
complete file, never a truncated one; at worst a stale ``.*.tmp`` file, which
:func:`remove_stale_temp_files` deletes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["atomic_path", "atomic_torch_save", "atomic_write_text", "remove_stale_temp_files"]

logger = logging.getLogger(__name__)

_TMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _fsync_dir(directory: str) -> None:
    """Make the rename itself durable (best effort: not every filesystem supports it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary file name next to `path`; once the block has written it, the file is
    fsync-ed and renamed to `path`.

    On any exception (KeyboardInterrupt included) the temporary file is removed and `path` is left
    untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (e.g. ``last_checkpoint``)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def remove_stale_temp_files(directory: str | os.PathLike) -> list[str]:
    """Delete ``.NAME.XXXXXX.tmp`` files left by a process killed while writing; return their
    names."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for name in names:
        if _TMP_RE.match(name):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
                removed.append(name)
    if removed:
        logger.warning(
            "Removed %d incomplete temporary file(s) in %s left by an interrupted save: %s",
            len(removed),
            directory,
            ", ".join(sorted(removed)),
        )
    return removed
