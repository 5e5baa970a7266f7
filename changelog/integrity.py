"""Checking every Parquet file a reader is about to use against the checksum recorded for it.

Where the checksum lives:

- a change file's name carries the sha256 of its bytes (first 32 hex digits, ``layout``);
- a snapshot part is listed in its snapshot's manifest with its size, sha256 and row count.

Anything else handed to a reader (a name this product never writes, a part its manifest does not
list) is foreign. ``verify_for_read`` is called by ``changelog.source.register_parquet``, which
every reader goes through, so no answer is computed from an unchecked file, nor from a file in a
store format newer than this version reads (``changelog.formats``). ``inspect_file`` is the
full check (bytes and a complete decode) that ``ddb-rewind check --read-data`` runs.

Local files are hashed whole on every read (sha256 runs at ~1.8 GB/s here; an unchanged file, same
size and mtime, is hashed once per process). An s3:// file is fetched and hashed before pyarrow reads
it: a second GET of the same bytes (see docs/decisions.md).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from changelog.damage import damaged
from changelog.errors import FileVanished, StoreError
from changelog.formats import check_format, footer_version
from changelog.layout import CHANGE_DIGEST_HEX, parse_change_file_name
from changelog.snapshot import MANIFEST, Manifest, read_manifest
from changelog.store import ObjectMissing, Store

_S3_WORKERS = 8


@dataclass(frozen=True)
class Expected:
    """What a file must be: its digest (hex; a prefix for change files), and size and rows when recorded."""

    path: str
    kind: str  # "change file" or "snapshot part"
    sha256: str
    size: int | None = None
    rows: int | None = None


def _is_snapshot_part(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 5 and parts[0] == "tables" and parts[2] == "snapshots" and parts[4].endswith(".parquet")


def expectations(store: Store, paths: Iterable[str]) -> dict[str, Expected]:
    """The recorded checksum of every path; DamagedStore for a file that has none (foreign, unlisted)."""
    manifests: dict[str, Manifest] = {}
    found: dict[str, Expected] = {}
    for path in paths:
        name = parse_change_file_name(path)
        if "/changes/" in path and name is not None:
            found[path] = Expected(path, "change file", name.digest)
            continue
        if _is_snapshot_part(path):
            directory, part = path.rsplit("/", 1)
            if directory not in manifests:
                manifests[directory] = read_manifest(store, f"{directory}/{MANIFEST}").manifest
            entry = manifests[directory].part_sum(part)
            if entry is None:
                raise damaged(store, path, "is not listed by its snapshot's manifest (a foreign or stray file)")
            found[path] = Expected(path, "snapshot part", entry.sha256, entry.size, entry.rows)
            continue
        raise damaged(store, path, "is not a file ddb-rewind writes (its name carries no checksum): a foreign file")
    return found


def content_problem(expected: Expected, data: bytes) -> str | None:
    """What is wrong with ``data`` as the file ``expected`` describes, or None when it matches."""
    return digest_problem(expected, len(data), hashlib.sha256(data).hexdigest())


def digest_problem(expected: Expected, size: int, digest: str) -> str | None:
    """What is wrong with a file of ``size`` bytes and sha256 ``digest`` as ``expected``, or None."""
    if expected.size is not None and size != expected.size:
        what = "truncated" if size < expected.size else "longer than recorded"
        return f"is {what}: {size} bytes, its manifest records {expected.size}"
    if not digest.startswith(expected.sha256[:CHANGE_DIGEST_HEX]) or (
            len(expected.sha256) == 64 and digest != expected.sha256):
        where = "its name" if expected.kind == "change file" else "its manifest"
        return (f"fails its checksum (sha256 {digest[:16]}…, {where} records {expected.sha256[:16]}…): "
                "damaged or swapped")
    return None


def _missing(store: Store, expected: Expected) -> StoreError:
    if expected.kind == "change file":
        return FileVanished(f"{store.uri}/{expected.path} was deleted while being read (a merge or expire "
                            "ran meanwhile): run the command again")
    return damaged(store, expected.path, "is listed by its snapshot's manifest but missing")


# Local files already verified in this process, by (store, path) -> (size, mtime ns). A changed file
# has another size or mtime and is hashed again.
_verified: dict[tuple[str, str], tuple[int, int]] = {}


def _verify_local(store: Store, expected: Expected) -> None:
    root = store.local_root()
    assert root is not None
    target = root / expected.path
    try:
        stat = os.stat(target)
        key = (store.uri, expected.path)
        if _verified.get(key) == (stat.st_size, stat.st_mtime_ns):
            return
        data = target.read_bytes()
    except FileNotFoundError:
        raise _missing(store, expected) from None
    except OSError as exc:
        raise damaged(store, expected.path, f"cannot be read ({exc.strerror or exc})") from None
    problem = content_problem(expected, data)
    if problem:
        raise damaged(store, expected.path, problem)
    _check_format(store, expected.path, data)
    _verified[key] = (stat.st_size, stat.st_mtime_ns)


def _verify_remote(store: Store, expected: Expected) -> None:
    try:
        data = store.read(expected.path)
    except ObjectMissing:
        raise _missing(store, expected) from None
    problem = content_problem(expected, data)
    if problem:
        raise damaged(store, expected.path, problem)
    _check_format(store, expected.path, data)


def _check_format(store: Store, path: str, data: bytes) -> None:
    """Refuse a file in a newer store format than this version reads (its footer says which)."""
    version = data_format(data)
    if version is None:
        raise damaged(store, path, "has no readable Parquet footer")
    check_format(store, path, version)


def data_format(data: bytes) -> int | None:
    """The store format a Parquet file's footer declares, or None when it has no readable footer."""
    try:
        return footer_version(pq.read_metadata(pa.BufferReader(data)).metadata)
    except (pa.ArrowException, OSError, ValueError):
        return None


def fingerprint(data: bytes) -> tuple[str, int, int | None]:
    """(sha256 hex, size, store format or None) of a file's bytes: what a reader checks, wherever it runs."""
    return hashlib.sha256(data).hexdigest(), len(data), data_format(data)


def check_fingerprints(store: Store, wanted: dict[str, Expected],
                       found: dict[str, tuple[str, int, int | None]]) -> None:
    """Refuse (DamagedStore) unless every wanted file was fingerprinted and matches what is recorded.

    For readers whose workers read the files (Spark's executors): they fingerprint each file where
    they read it and send back ``fingerprint`` only, instead of this process fetching every byte.
    """
    for path, expected in wanted.items():
        if path not in found:
            raise _missing(store, expected)
        digest, size, version = found[path]
        problem = digest_problem(expected, size, digest)
        if problem:
            raise damaged(store, path, problem)
        if version is None:
            raise damaged(store, path, "has no readable Parquet footer")
        check_format(store, path, version)


def verify_for_read(store: Store, paths: list[str]) -> None:
    """Refuse (DamagedStore, one line naming the file) unless every file matches its recorded checksum."""
    wanted = expectations(store, paths)
    if store.local_root() is not None:
        for expected in wanted.values():
            _verify_local(store, expected)
        return
    with ThreadPoolExecutor(max_workers=_S3_WORKERS, thread_name_prefix="verify") as pool:
        list(pool.map(lambda expected: _verify_remote(store, expected), wanted.values()))


def decode_problem(expected: Expected, data: bytes) -> str | None:
    """Decode every page of ``data`` (page checksums verified); what fails, or None."""
    try:
        table = pq.read_table(io.BytesIO(data), page_checksum_verification=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        return f"cannot be decoded as Parquet ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    if expected.rows is not None and table.num_rows != expected.rows:
        return f"holds {table.num_rows} rows, its manifest records {expected.rows}"
    return None


def inspect_file(store: Store, expected: Expected, size: int | None, read_data: bool) -> str | None:
    """The full check of one file for ``check``: size from the listing; with ``read_data`` bytes and decode."""
    if size is None:
        return "is missing"
    if expected.size is not None and size != expected.size:
        what = "truncated" if size < expected.size else "longer than recorded"
        return f"is {what}: {size} bytes, its manifest records {expected.size}"
    if size == 0:
        return "is empty (0 bytes)"
    if not read_data:
        return None
    try:
        data = store.read(expected.path)
    except ObjectMissing:
        return "is missing"
    except OSError as exc:
        return f"cannot be read ({exc})"
    return content_problem(expected, data) or decode_problem(expected, data)
