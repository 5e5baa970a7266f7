"""The local store: a retried conditional write of our own bytes succeeds; published names survive power loss."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from changelog.errors import ConflictError
from changelog.store import LocalStore


def test_a_conditional_write_that_finds_its_own_bytes_succeeds(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write("snap/manifest.json", b"ours", if_absent=True)
    store.write("snap/manifest.json", b"ours", if_absent=True)  # the same writer, retrying
    with pytest.raises(ConflictError):
        store.write("snap/manifest.json", b"theirs", if_absent=True)
    assert store.read("snap/manifest.json") == b"ours"


@pytest.mark.parametrize("if_absent", [False, True])
def test_a_write_makes_its_name_durable_in_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         if_absent: bool) -> None:
    store = LocalStore(tmp_path)
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    store.write("tables/t/changes/dt=2025-06-01/hour=00/a.parquet", b"data", if_absent=if_absent)
    partition = tmp_path / "tables/t/changes/dt=2025-06-01/hour=00"
    # The file's data, then the directory holding its new name, then every directory made for it.
    assert synced[-1] != str(partition / "a.parquet")
    assert str(partition) in synced
    assert str(tmp_path / "tables") in synced and str(tmp_path) in synced
    assert synced.index(str(partition)) > max(i for i, p in enumerate(synced) if p.startswith(str(partition) + "/"))
