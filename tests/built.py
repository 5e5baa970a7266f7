"""Stores a test builds the same way every time, built once per test process and copied for each test."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from changelog.store import LocalStore, Store


def built_once(build: Callable[[Store], None]) -> Callable[[], Path]:
    """The root of a local store ``build`` filled, built on first use in this process and kept until it exits."""

    @lru_cache(maxsize=1)
    def pristine() -> Path:
        root = Path(tempfile.mkdtemp(prefix="ddb-rewind-pristine-")) / "store"
        atexit.register(shutil.rmtree, root.parent, True)
        root.mkdir()
        build(LocalStore(root))
        return root

    return pristine


def copy_store(source: Path, store: Store) -> None:
    """Make an empty ``store`` the local store at ``source``, byte for byte.

    An S3 store gets each object through the store's own ``write``: the readers under test then meet
    the same objects the S3 writers would have left, without building the store over HTTP.
    """
    root = store.local_root()
    if root is not None:
        shutil.copytree(source, root, dirs_exist_ok=True)
        return
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        store.write(path.relative_to(source).as_posix(), path.read_bytes())
