"""Output files (``replay --to-file``, ``diff --output``): complete or absent, never half-written.

A file is written under a temporary name in its own directory and published by one rename when it
is complete, so Ctrl-C, a full disk or a failed read leaves the previous file intact and no partial
file behind. An existing file is replaced only when the caller says ``overwrite``; otherwise the
publish is a hard link, which fails if another writer created the file meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from changelog.errors import UsageError, WriteFailed

T = TypeVar("T")


def write_behind(write: Callable[[T], object], pieces: Iterable[T]) -> None:
    """``write`` each of ``pieces`` on one thread while the caller's makes the next (DuckDB computing a
    batch and the disk taking the last both release the GIL); a failure of either is raised here."""
    with ThreadPoolExecutor(1) as disk:
        pending: Future[object] | None = None
        try:
            for piece in pieces:
                if pending is not None:
                    pending.result()
                pending = disk.submit(write, piece)
        finally:
            if pending is not None:
                pending.result()


def check_output(path: str, overwrite: bool) -> Path:
    """Refuse, before any work, an output path that could not be published; returns it as a Path."""
    if not path:
        raise UsageError("the output file name is empty")
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"cannot write {path!r}: it is a directory; name a file inside it")
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {path!r}: directory {str(parent)!r} does not exist")
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        # A FIFO, a device or a socket is no file of the user's to replace (/dev/null included):
        # --overwrite would swap it for a regular file.
        raise UsageError(f"cannot write {path!r}: it is not a regular file (a pipe, device or socket); "
                         "name a regular file")
    if mode is not None and not overwrite:
        raise UsageError(f"{path!r} already exists: add --overwrite to replace it, or choose another name")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write {path!r}: no permission to create files in {str(parent)!r}")
    return target


@contextlib.contextmanager
def output_file(path: str, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``path``, on any failure it is removed."""
    target = check_output(path, overwrite)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    except OSError as exc:
        raise WriteFailed(f"cannot write {path!r}: {exc.strerror or exc}") from None
    os.close(handle)
    partial = Path(temporary)
    try:
        try:
            yield partial
            _publish(partial, target, overwrite)
        except OSError as exc:
            raise WriteFailed(f"cannot write {path!r}: {exc.strerror or exc}; "
                              "nothing was written (an existing file is left as it was)") from None
    finally:
        partial.unlink(missing_ok=True)


def _publish(partial: Path, target: Path, overwrite: bool) -> None:
    # mkstemp made the file private (0600); give it the mode a plain open() would have.
    mask = os.umask(0)
    os.umask(mask)
    partial.chmod(0o666 & ~mask)
    if overwrite:
        os.replace(partial, target)
        return
    try:
        os.link(partial, target)
    except FileExistsError:
        raise UsageError(f"{str(target)!r} was created while it was being written: add --overwrite to "
                         "replace it, or choose another name") from None
