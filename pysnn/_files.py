"""File helpers shared by pysnn modules (not public API)."""

from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable, Union

PathLike = Union[str, "os.PathLike[str]"]


def write_atomic(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write a file so that ``path`` is never seen partly written.

    ``write(f)`` writes into a temporary file in the same folder, which is flushed, ``fsync``-ed
    and renamed over ``path`` (atomic on POSIX and Windows); on any error the temporary file is
    removed and ``path`` is left as it was. On POSIX the folder is ``fsync``-ed too, so that the
    rename itself survives a crash. The file gets the permissions of ``tempfile.mkstemp`` (0600).
    """
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
