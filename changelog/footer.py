"""What a store file says about itself in its Parquet footer (key-value metadata), read without its data.

Writers put facts there that readers would otherwise have to compute from every row: the attribute
summary of the file's images (``changelog.attributes``) and whether the file holds each stream record
once (``DEDUPLICATED``: merged change files, ``compactor.merge``). A file is immutable and checked
against its checksum before its footer is trusted (``changelog.integrity``), so what the footer says
can never be stale. Footers are cached per process by path: store files are never rewritten in place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq

from changelog.store import Store

# Set by the merge: every stream record in the file appears once within its hour partition.
DEDUPLICATED = b"ddb_rewind.deduplicated"
# The event ids of the rows capture stored in a later hour than their own stamp's
# (``record.monotone_item_times`` lifted them to a predecessor's time), as a JSON list; a merge carries
# its inputs' lists. A copy of such a record captured without its predecessor is in its own hour:
# only these records can have copies in two hours. Files written before it existed have no entry,
# and nothing is known of their lifts.
LIFTED = b"ddb_rewind.lifted"
_WORKERS = 8
_cache: dict[tuple[str, str], Mapping[bytes, bytes]] = {}


def footer(store: Store, path: str) -> Mapping[bytes, bytes]:
    """The key-value metadata in the footer of the store file ``path`` (empty when it has none)."""
    cached = _cache.get((store.uri, path))
    if cached is not None:
        return cached
    root = store.local_root()
    if root is not None:
        metadata = pq.read_metadata(str(root / path)).metadata
    else:
        filesystem, base = store.arrow()
        with filesystem.open_input_file(f"{base}/{path}") as handle:
            metadata = pq.read_metadata(handle).metadata
    found: Mapping[bytes, bytes] = dict(metadata or {})
    _cache[(store.uri, path)] = found
    return found


def footers(store: Store, paths: list[str]) -> dict[str, Mapping[bytes, bytes]]:
    """The footers of many files (in parallel on S3, where each is a request)."""
    if store.local_root() is not None or len(paths) < 2:
        return {path: footer(store, path) for path in paths}
    with ThreadPoolExecutor(_WORKERS) as pool:
        return dict(zip(paths, pool.map(lambda path: footer(store, path), paths), strict=True))


def lifted_ids(metadata: Mapping[bytes, bytes]) -> list[str] | None:
    """The event ids a file's footer says capture lifted (``LIFTED``); None when it does not say, or
    says something that is not a list of ids (then nothing is known of its lifts)."""
    text = metadata.get(LIFTED)
    if text is None:
        return None
    try:
        ids = json.loads(text)
    except ValueError:
        return None
    if not isinstance(ids, list) or not all(isinstance(one, str) for one in ids):
        return None
    return ids


def recorded_lifts(store: Store, paths: list[str]) -> list[str] | None:
    """Every event id the footers of ``paths`` say was lifted; None when one of them does not say."""
    found: set[str] = set()
    for metadata in footers(store, paths).values():
        ids = lifted_ids(metadata)
        if ids is None:
            return None
        found.update(ids)
    return sorted(found)
