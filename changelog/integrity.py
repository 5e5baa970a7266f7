"""Checking every Parquet file a reader is about to use against the checksum recorded for it.

Where the checksum lives:

- a change file's name carries the sha256 of its bytes (first 32 hex digits, ``layout``);
- a snapshot part is listed in its snapshot's manifest with its size, sha256 and row count.

Anything else handed to a reader (a name this product never writes, a part its manifest does not
list) is foreign. ``verify_for_read`` is called by ``changelog.source.register_parquet``, which
every reader goes through, so no answer is computed from an unchecked file, nor from a file in a
store format newer than this version reads (``changelog.formats``). ``inspect_file`` is what
``ddb-rewind check`` runs on each file (with ``--read-data``, bytes and a complete decode).

A change file's place is part of the same check: every row must be of the table the file is stored
under, with an event time inside its hour partition (``placement_problem``), because readers choose
files by partition and table. The footer's row-group statistics (written for both columns by every
writer) settle it without reading rows; rows are read only when the statistics are missing or show
a violation. A reader checks the files it plans to read: a file moved to a later hour is not among
them for a moment before that hour, which is why plain ``check`` reads every change file's footer.

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
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from changelog.damage import damaged
from changelog.errors import FileVanished, StoreError
from changelog.formats import check_format, footer_version
from changelog.layout import (
    CHANGE_DIGEST_HEX,
    HOUR_US,
    TABLES,
    ChangeFilePlace,
    change_file_place,
    parse_change_file_name,
)
from changelog.snapshot import MANIFEST, Manifest, read_manifest
from changelog.store import ObjectMissing, Store, remote_read_failure
from changelog.timefmt import format_time, from_micros

_S3_WORKERS = 8


@dataclass(frozen=True)
class Expected:
    """What a file must be: its digest (hex; a prefix for change files), and size and rows when recorded."""

    path: str
    kind: str  # "change file" or "snapshot part"
    sha256: str
    size: int | None = None
    rows: int | None = None
    place: ChangeFilePlace | None = None  # change files: the table and hour every row must belong to


def _is_snapshot_part(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 5 and parts[0] == "tables" and parts[2] == "snapshots" and parts[4].endswith(".parquet")


def expectations(store: Store, paths: Iterable[str]) -> dict[str, Expected]:
    """The recorded checksum of every path; DamagedStore for a file that has none (foreign, unlisted)."""
    manifests: dict[str, Manifest] = {}
    found: dict[str, Expected] = {}
    for path in paths:
        name = parse_change_file_name(path)
        parts = path.split("/")
        if name is not None and len(parts) > 3 and parts[0] == TABLES and parts[2] == "changes":
            place = change_file_place(path)
            if place is None:
                raise damaged(store, path, "is not in an hour partition of its table's changes "
                                           "(changes/dt=YYYY-MM-DD/hour=HH/): a misplaced file")
            found[path] = Expected(path, "change file", name.digest, place=place)
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
    _check_footer(store, expected, data)
    _verified[key] = (stat.st_size, stat.st_mtime_ns)


def _verify_remote(store: Store, expected: Expected) -> None:
    try:
        data = store.read(expected.path)
    except ObjectMissing:
        raise _missing(store, expected) from None
    problem = content_problem(expected, data)
    if problem:
        raise damaged(store, expected.path, problem)
    _check_footer(store, expected, data)


def _check_footer(store: Store, expected: Expected, data: bytes) -> None:
    """Refuse a file in a newer store format than this version reads (its footer says which), and a
    change file whose rows do not belong where it is stored."""
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError):
        raise damaged(store, expected.path, "has no readable Parquet footer") from None
    check_format(store, expected.path, footer_version(parquet.metadata.metadata))
    problem = placement_problem(expected, parquet)
    if problem:
        raise damaged(store, expected.path, problem)


@dataclass(frozen=True)
class RowBounds:
    """The least and greatest table name and event time (µs) among a file's rows; None when it has none."""

    tables: tuple[str, str] | None
    times_us: tuple[int, int] | None


def _bounds_from_statistics(metadata: pq.FileMetaData) -> RowBounds | None:
    """The bounds the footer's row-group statistics prove, or None when they do not settle them.

    Time statistics are exact. String statistics may be truncated (a shorter minimum, a greater
    maximum), so they prove the table only when minimum and maximum are the same name.
    """
    if metadata.num_rows == 0:
        return RowBounds(None, None)
    tables: list[str] = []
    times: list[int] = []
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        if group.num_rows == 0:
            continue
        found = {}
        for column in range(group.num_columns):
            chunk = group.column(column)
            if chunk.path_in_schema in ("table_name", "event_time"):
                found[chunk.path_in_schema] = chunk.statistics
        table, time = found.get("table_name"), found.get("event_time")
        if table is None or time is None or not table.has_min_max or not time.has_min_max:
            return None
        if not isinstance(time.min_raw, int) or not isinstance(time.max_raw, int):
            return None
        tables += [str(table.min), str(table.max)]
        times += [time.min_raw, time.max_raw]
    if not times:
        return RowBounds(None, None)
    if min(tables) != max(tables):
        return None
    return RowBounds((tables[0], tables[0]), (min(times), max(times)))


def row_bounds(parquet: pq.ParquetFile) -> RowBounds:
    """Exact bounds of a change file's rows: from the footer when its statistics settle them, else
    from the two columns. Raises ValueError when the file holds no such columns or cannot be decoded."""
    proven = _bounds_from_statistics(parquet.metadata)
    if proven is not None:
        return proven
    try:
        columns = parquet.read(columns=["table_name", "event_time"])
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise ValueError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if columns.num_rows == 0:
        return RowBounds(None, None)
    names = pc.min_max(columns.column("table_name"))
    times = pc.min_max(columns.column("event_time").cast(pa.int64()))
    return RowBounds((str(names["min"].as_py()), str(names["max"].as_py())),
                     (int(times["min"].as_py()), int(times["max"].as_py())))


def bounds_problem(expected: Expected, bounds: RowBounds) -> str | None:
    """What is wrong with a change file whose rows have ``bounds`` where ``expected`` places it, or None."""
    place = expected.place
    if place is None:
        return None
    if bounds.tables is not None and bounds.tables != (place.table, place.table):
        low, high = bounds.tables
        held = f"table {low!r}" if low == high else f"tables {low!r} to {high!r}"
        return f"holds rows of {held} under table {place.table!r}: a file of another table placed here"
    if bounds.times_us is not None:
        first, last = bounds.times_us
        if not (place.holds_time(first) and place.holds_time(last)):
            return (f"holds changes from {format_time(from_micros(first))} to {format_time(from_micros(last))}, "
                    f"outside its hour partition {place.partition} ({format_time(from_micros(place.hour_us))} to "
                    f"{format_time(from_micros(place.hour_us + HOUR_US))}): a file moved from another hour")
    return None


def placement_problem(expected: Expected, parquet: pq.ParquetFile) -> str | None:
    """What is wrong with where a change file is stored, given its rows (None for other files)."""
    if expected.place is None:
        return None
    try:
        bounds = row_bounds(parquet)
    except ValueError as exc:
        return f"has no readable table_name and event_time columns ({exc})"
    return bounds_problem(expected, bounds)


class Fingerprint(NamedTuple):
    """What a worker that read a file sends back: enough to check it as ``verify_for_read`` does."""

    sha256: str
    size: int
    version: int | None  # store format; None: no readable footer
    table_min: str | None = None  # bounds of the rows (RowBounds); None: no rows
    table_max: str | None = None
    time_min_us: int | None = None
    time_max_us: int | None = None
    rows_unreadable: str | None = None  # why the bounds could not be read, if they could not


# The Spark struct a Fingerprint travels in (field for field).
FINGERPRINT_STRUCT = ("struct<sha256:string,size:bigint,version:int,table_min:string,table_max:string,"
                      "time_min_us:bigint,time_max_us:bigint,rows_unreadable:string>")


def fingerprint(data: bytes) -> Fingerprint:
    """A file's fingerprint from its bytes: what a reader checks, wherever it runs."""
    digest, size = hashlib.sha256(data).hexdigest(), len(data)
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError):
        return Fingerprint(digest, size, None)
    version = footer_version(parquet.metadata.metadata)
    try:
        bounds = row_bounds(parquet)
    except ValueError as exc:
        return Fingerprint(digest, size, version, rows_unreadable=str(exc))
    tables, times = bounds.tables or (None, None), bounds.times_us or (None, None)
    return Fingerprint(digest, size, version, *tables, *times)


def check_fingerprints(store: Store, wanted: dict[str, Expected], found: dict[str, Fingerprint]) -> None:
    """Refuse (DamagedStore) unless every wanted file was fingerprinted and matches what is recorded.

    For readers whose workers read the files (Spark's executors): they fingerprint each file where
    they read it and send back ``fingerprint`` only, instead of this process fetching every byte.
    """
    for path, expected in wanted.items():
        if path not in found:
            raise _missing(store, expected)
        print_ = found[path]
        problem = digest_problem(expected, print_.size, print_.sha256)
        if problem:
            raise damaged(store, path, problem)
        if print_.version is None:
            raise damaged(store, path, "has no readable Parquet footer")
        check_format(store, path, print_.version)
        if expected.place is None:
            continue
        if print_.rows_unreadable is not None:
            raise damaged(store, path, f"has no readable table_name and event_time columns ({print_.rows_unreadable})")
        bounds = RowBounds(
            None if print_.table_min is None or print_.table_max is None else (print_.table_min, print_.table_max),
            None if print_.time_min_us is None or print_.time_max_us is None
            else (print_.time_min_us, print_.time_max_us))
        problem = bounds_problem(expected, bounds)
        if problem:
            raise damaged(store, path, problem)


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
    """The full check of one file for ``check``: size from the listing and, for a change file, the table
    and times its footer records against where it is stored; with ``read_data`` bytes and decode too."""
    if size is None:
        return "is missing"
    if expected.size is not None and size != expected.size:
        what = "truncated" if size < expected.size else "longer than recorded"
        return f"is {what}: {size} bytes, its manifest records {expected.size}"
    if size == 0:
        return "is empty (0 bytes)"
    if not read_data:
        return _footer_problem(store, expected)
    try:
        data = store.read(expected.path)
    except ObjectMissing:
        return "is missing"
    except OSError as exc:
        return f"cannot be read ({exc})"
    problem = content_problem(expected, data) or decode_problem(expected, data)
    if problem or expected.place is None:
        return problem
    return placement_problem(expected, pq.ParquetFile(pa.BufferReader(data)))


def _footer_problem(store: Store, expected: Expected) -> str | None:
    """Where a change file is stored, checked against its footer alone (a few KB, not its rows)."""
    if expected.place is None:
        return None
    try:
        root = store.local_root()
        if root is not None:
            return placement_problem(expected, pq.ParquetFile(str(root / expected.path)))
        filesystem, base = store.arrow()
        with filesystem.open_input_file(f"{base}/{expected.path}") as handle:
            return placement_problem(expected, pq.ParquetFile(handle))
    except FileNotFoundError:
        return "is missing"
    except (pa.ArrowException, OSError, ValueError) as exc:
        if (failure := remote_read_failure(exc)) is not None:
            raise failure from None  # S3 failed the call: nothing is known about the file
        return f"has no readable Parquet footer ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
