"""Refusing a damaged store: the one message shape, and reading the store's small JSON documents.

Every reader that finds a file missing, unreadable or failing its checksum raises DamagedStore
built here, so the user always reads which file it is and what to do about it.
"""

from __future__ import annotations

import json
from typing import Any

from changelog.errors import DamagedStore
from changelog.store import Store


def damaged(store: Store, path: str, problem: str) -> DamagedStore:
    """A DamagedStore naming ``path`` in ``store``, what is wrong with it and what to do."""
    return DamagedStore(
        f"damaged store: {store.uri}/{path} {problem}: restore it from the bucket's object versions "
        f"(or a copy of the store); 'ddb-rewind check --store {store.uri} --read-data' finds every damaged "
        "file and what it affects (without --read-data, file contents are not read)"
    )


def parse_json_object(store: Store, path: str, data: bytes) -> dict[str, Any]:
    """``data`` (the stored bytes of ``path``) as a JSON object; DamagedStore when it is not one."""
    if not data.strip():
        raise damaged(store, path, "is empty")
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise damaged(store, path, f"is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise damaged(store, path, "is not a JSON object")
    return body


def read_json_object(store: Store, path: str) -> dict[str, Any]:
    """Read one of the store's JSON documents (meta, checkpoint, retention, manifest).

    A missing object raises ObjectMissing (callers decide what absence means); an empty or garbage
    one raises DamagedStore.
    """
    return parse_json_object(store, path, store.read(path))
