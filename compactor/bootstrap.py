"""Bootstrap: a base snapshot for a table that held items before its stream was captured.

Two sources, one result: a snapshot (kind ``export`` or ``scan``) whose rows carry a version older
than every change the stream captured after the copy began, and whose manifest says from when the
copy is consistent (``restorable_from_us``). Replay then works unchanged: for each key the newer of
(bootstrap row, captured changes) wins, which is exactly the table once the copy is consistent.

Why the row version is the start of the second before the copy's second minus 1 µs, not the copy's
exact moment: DynamoDB Streams rounds ``ApproximateCreationDateTime`` down to the second, so a change
made 300 ms after the copy's moment carries a time up to a second before it, and a shard's next
record may carry the second before its predecessor's (``gaps.STREAM_CLOCK_STEP_US``). Giving the
copied rows a version below both seconds makes every change of them win. A change of them that in
fact came before the copy wins too, which is harmless: it carries the full image (or is a REMOVE)
the copy already holds, and any later change of the item outranks it again (a loss among them is
not cleared by the copy: ``changelog.restorable.Base``).

Both sources require that the stream was already being captured (completely) from before the copy
began; the store cannot check that, the operator must (``status`` shows the first captured change).

Publishing follows the snapshot rule: parts first (named by writer), the manifest last with a
conditional write, so a failed or refused bootstrap leaves nothing visible. Compaction snapshots
newer than the bootstrap were built without it: from changes alone (the pre-stream items missing),
or on an older copy and across whatever was lost since (the loss this bootstrap is taken to clear).
They are withdrawn (manifest first), because a reader would prefer them; the compactor builds the
next ones on this copy.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa

from changelog.attributes import with_summary
from changelog.aws import aws_boundary
from changelog.aws import client as aws_client
from changelog.changefile import COMPACTED_LEVEL, parquet_bytes
from changelog.codec import dump_json, image_json, item_key
from changelog.errors import (
    AwsError,
    ConflictError,
    DecodeError,
    RewindError,
    StreamConfigError,
    TableNotFound,
    UsageError,
)
from changelog.forgotten import erased_keys
from changelog.gaps import STREAM_CLOCK_STEP_US, floor_second
from changelog.layout import hour_partition, snapshot_dir
from changelog.meta import meta_from_description, read_meta, write_meta
from changelog.progress import Progress
from changelog.record import ZERO_SEQUENCE
from changelog.scan import parallel_scan
from changelog.settings import observe as observe_settings
from changelog.snapshot import MANIFEST, SNAPSHOT_SCHEMA, Manifest, PartSum, list_manifests, part_sum_of
from changelog.state import BOOTSTRAP_KINDS, change_files, retention_floor
from changelog.store import Store
from changelog.timefmt import format_time, from_micros
from compactor.export_reader import (
    DataFile,
    ExportInvalid,
    ExportSummary,
    open_export,
    read_data_files,
    read_items,
    read_summary,
)
from compactor.retention import delete_snapshot
from compactor.snapshots import PART_ROWS, publish_manifest


@dataclass(frozen=True)
class BootstrapResult:
    """A published bootstrap snapshot and what it replaced."""

    manifest: Manifest
    manifest_path: str
    withdrawn: tuple[str, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class BootstrapPlan:
    """What a bootstrap would do now (``--dry-run``), its refusals checked; the copy itself is not read.

    ``items`` is the export summary's count, or for a Scan DescribeTable's ItemCount (which DynamoDB
    updates about every six hours); ``snapshot_time_us`` is the export's time, None for a Scan (the
    snapshot is at its end); ``stale`` are the snapshots it would withdraw (``stale_snapshots``).
    """

    kind: str
    items: int | None
    data_files: int | None
    snapshot_time_us: int | None
    stale: tuple[str, ...]
    warnings: tuple[str, ...]


def row_version_us(copy_started_us: int) -> int:
    """The version (µs) of a copied row: 1 µs before the second before the one in which the copy began.

    A change made after the copy read its item is stamped no earlier than that: stream times are cut
    to the second, and a shard's next record may carry the second before the latest one
    (``gaps.STREAM_CLOCK_STEP_US``), also across batches, where capture cannot lift it.
    """
    return floor_second(copy_started_us) - STREAM_CLOCK_STEP_US - 1


def key_names(store: Store, table: str, client: Any = None) -> list[str]:
    """The table's key attribute names: from meta.json, else from DescribeTable (then saved as meta.json).

    Raises TableNotFound when neither is available.
    """
    names, unsaved = _key_names(store, table, client)
    if unsaved is not None:
        write_meta(store, unsaved)
    return names


def _key_names(store: Store, table: str, client: Any) -> tuple[list[str], dict[str, Any] | None]:
    """The key attribute names, and the meta.json to save when they came from DescribeTable."""
    try:
        meta = read_meta(store, table)
    except TableNotFound:
        meta = None
    if meta is not None:
        names = [k["AttributeName"] for k in meta.get("key_schema", []) if k.get("AttributeName")]
        if names:
            return names, None
    meta = meta_from_description(describe_table(table, client))
    return [k["AttributeName"] for k in meta["key_schema"]], meta


def describe_table(table: str, client: Any = None) -> dict[str, Any]:
    """DescribeTable's ``Table``; one typed line when it cannot be had (TableNotFound, AwsError)."""
    client = client or aws_client("dynamodb")
    with aws_boundary(f"the store has no meta.json for {table!r} and DescribeTable of it failed"):
        return dict(client.describe_table(TableName=table)["Table"])


class SnapshotWriter:
    """Rows of a bootstrap snapshot, buffered and written as Parquet parts (state: buffer, parts, counts).

    ``add`` is thread-safe (a parallel scan feeds it from several threads).
    """

    def __init__(self, store: Store, table: str, snapshot_time_us: int, version_us: int, keys: list[str],
                 part_rows: int = PART_ROWS) -> None:
        self.store = store
        self.table = table
        self.directory = snapshot_dir(table, from_micros(snapshot_time_us))
        self.version_us = version_us
        self.keys = keys
        self.part_rows = part_rows
        self.writer = uuid.uuid4().hex[:12]
        self.spool: Path | None = None
        self.parts: list[str] = []
        self.part_sums: list[PartSum] = []
        self.items = 0
        self.erased = 0  # items an erasure covers at the copy's version: left out (changelog.forgotten)
        # A copy versioned at or before an item's erasure (an export taken before it) must not bring
        # it back; a scan taken after it copies what the live table holds, like any later write.
        self._erased = erased_keys(store, table)
        self._rows: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def row(self, item: dict[str, Any]) -> tuple[str, str, str]:
        """(item_key, keys, image) of one item; raises DecodeError on an invalid item."""
        missing = [name for name in self.keys if name not in item]
        if missing:
            raise DecodeError(f"an item lacks the key attribute(s) {', '.join(missing)}")
        keys = {name: item[name] for name in self.keys}
        image = image_json(item)
        return item_key(keys), dump_json(keys), image

    def add(self, items: Iterable[dict[str, Any]]) -> None:
        """Validate and buffer items; writes a part whenever enough rows are buffered."""
        rows = [self.row(item) for item in items]
        if self._erased is not None:
            ledger = self._erased
            count = len(rows)
            rows = [row for row in rows if not ledger.erased(row[0], self.version_us)]
            with self._lock:
                self.erased += count - len(rows)
        with self._lock:
            self._rows.extend(rows)
            self.items += len(rows)
            if len(self._rows) >= self.part_rows:
                self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        rows = sorted(self._rows)
        self._rows = []
        count = len(rows)
        part = pa.Table.from_pydict(
            {
                "table_name": [self.table] * count,
                "item_key": [r[0] for r in rows],
                "keys": [r[1] for r in rows],
                "event_name": ["INSERT"] * count,
                "event_time": pa.array([self.version_us] * count, pa.timestamp("us", tz="UTC")),
                "sequence_number": [ZERO_SEQUENCE] * count,
                "image": [r[2] for r in rows],
            },
            schema=SNAPSHOT_SCHEMA,
        )
        name = f"part-{self.writer}-{len(self.parts):05d}.parquet"
        data = parquet_bytes(with_summary(part, "image"), level=COMPACTED_LEVEL)
        if self.spool is not None:
            (self.spool / name).write_bytes(data)
        else:
            self.store.write(f"{self.directory}/{name}", data)
        self.parts.append(name)
        self.part_sums.append(part_sum_of(name, data, count))

    def finish(self) -> None:
        """Write the last buffered rows."""
        with self._lock:
            self._flush()

    def upload(self, directory: str) -> None:
        """Move spooled parts (local files) into ``directory`` of the store."""
        self.directory = directory
        if self.spool is not None:
            for name in self.parts:
                self.store.write(f"{directory}/{name}", (self.spool / name).read_bytes())
                (self.spool / name).unlink()
            self.spool = None

    def abort(self) -> None:
        """Remove the parts written so far (they were never listed by a manifest)."""
        for name in self.parts:
            if self.spool is not None:
                (self.spool / name).unlink(missing_ok=True)
            else:
                self.store.delete(f"{self.directory}/{name}")


def _check_can_bootstrap(store: Store, table: str, started_us: int, snapshot_time_us: int | None) -> None:
    version_us = row_version_us(started_us)
    floor = retention_floor(store, table)
    if floor is not None and floor > version_us:
        raise UsageError(
            f"changes of {table!r} before {format_time(from_micros(floor))} were expired, so a copy from "
            f"{format_time(from_micros(version_us + 1))} cannot be completed: bootstrap from a newer copy"
        )
    for _, manifest in list_manifests(store, table):
        if manifest.kind in BOOTSTRAP_KINDS and manifest.snapshot_time_us >= floor_second(started_us) - 1:
            raise ConflictError(
                f"{table!r} already has a {manifest.kind} bootstrap at {format_time(manifest.snapshot_time)}, "
                "not older than this one: nothing to do"
            )
    if snapshot_time_us is None:
        return
    path = f"{snapshot_dir(table, from_micros(snapshot_time_us))}/{MANIFEST}"
    if store.exists(path):
        raise ConflictError(f"a snapshot of {table!r} at {format_time(from_micros(snapshot_time_us))} already exists")


def stale_snapshots(store: Store, table: str, after_us: int) -> list[tuple[str, Manifest]]:
    """Compaction snapshots newer than ``after_us``: built without the bootstrap being published.

    Built from changes alone, they lack the items that existed before the stream; built on an older
    copy, they may hold the state across a loss the new copy is taken to clear. A reader would
    prefer them to the bootstrap. The changes from the copy on are kept (``_check_can_bootstrap``),
    so the new copy and those changes restore every moment they did.
    """
    return [(path, manifest) for path, manifest in list_manifests(store, table)
            if manifest.snapshot_time_us > after_us and manifest.kind not in BOOTSTRAP_KINDS]


def withdraw_stale_snapshots(store: Store, table: str, after_us: int) -> list[str]:
    """Withdraw the ``stale_snapshots``; returns the manifest paths withdrawn (manifest first, then parts:
    never a visible half snapshot)."""
    withdrawn = []
    for path, manifest in stale_snapshots(store, table, after_us):
        if delete_snapshot(store, path, manifest, reason="withdrawn by a bootstrap: built without its copy"):
            withdrawn.append(path)
    return withdrawn


def _publish(store: Store, writer: SnapshotWriter, manifest: Manifest, warnings: list[str]) -> BootstrapResult:
    withdrawn = withdraw_stale_snapshots(store, writer.table, writer.version_us)
    path = f"{writer.directory}/{MANIFEST}"
    try:
        manifest = publish_manifest(store, path, manifest)
    except ConflictError:
        writer.abort()
        raise
    # A compactor racing this run may have published one more snapshot from changes alone.
    withdrawn += withdraw_stale_snapshots(store, writer.table, writer.version_us)
    return BootstrapResult(manifest, path, tuple(withdrawn), tuple(warnings))


def _consumed_before(store: Store, table: str, version_us: int) -> tuple[str, ...]:
    # Every change in an hour wholly before the copied rows' version is superseded by the copy.
    upper = hour_partition(version_us)
    return tuple(p for p in change_files(store, table)
                 if "/".join(p.split("/")[-3:-1]) < upper)


def _coverage_warnings(store: Store, table: str, copy_started_us: int) -> list[str]:
    files = change_files(store, table)
    if not files:
        return [f"no change of {table!r} is captured yet: the bootstrap is only consistent if the stream "
                "has been captured since before the copy began"]
    first = "/".join(files[0].split("/")[-3:-1])
    if first > hour_partition(copy_started_us):
        return [f"the first captured change of {table!r} ({first}) is after the copy began: "
                "changes in between may be missing"]
    return []


def _table_of_arn(arn: str) -> str:
    marker = ":table/"
    start = arn.find(marker)
    return arn[start + len(marker):].split("/", 1)[0] if start >= 0 else ""


def _checked_export(store: Store, table: str, uri: str) -> tuple[Store, ExportSummary, list[DataFile], int]:
    """The export at ``uri`` (its folder, summary and data files) and its rows' version, once it may be imported."""
    source = open_export(uri)
    summary = read_summary(source)
    exported = _table_of_arn(summary.table_arn)
    if exported and exported != table:
        raise UsageError(f"the export is of table {exported!r}, not {table!r}")
    files = read_data_files(source, summary)
    version = row_version_us(summary.export_time_us)
    _check_can_bootstrap(store, table, summary.export_time_us, summary.export_time_us)
    return source, summary, files, version


def plan_bootstrap_from_export(store: Store, table: str, uri: str, *, client: Any = None) -> BootstrapPlan:
    """What ``bootstrap_from_export`` would do now, with its refusals; its data files are not read."""
    _, summary, files, version = _checked_export(store, table, uri)
    _key_names(store, table, client)
    return BootstrapPlan("export", summary.item_count, len(files), summary.export_time_us,
                         tuple(path for path, _ in stale_snapshots(store, table, version)),
                         tuple(_coverage_warnings(store, table, summary.export_time_us)))


def bootstrap_from_export(store: Store, table: str, uri: str, *, client: Any = None,
                          progress_stream: TextIO | None = None) -> BootstrapResult:
    """Import a native DYNAMODB_JSON full export at ``uri`` as the base snapshot of ``table``.

    The snapshot is at the export time and restorable from it. Every data file's MD5 and item
    count is verified and every item validated; any mismatch raises ExportInvalid (one line naming
    the file) and nothing is published.
    """
    source, summary, files, version = _checked_export(store, table, uri)
    writer = SnapshotWriter(store, table, summary.export_time_us, version, key_names(store, table, client))
    progress = Progress("export items", total=summary.item_count, stream=progress_stream)
    try:
        for data_file in files:
            try:
                writer.add(read_items(source, data_file))
            except ExportInvalid:
                raise
            except DecodeError as exc:
                raise ExportInvalid(f"export data file {data_file.path} holds an invalid item: {exc}") from None
            progress.advance(data_file.item_count)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        progress.close()
    manifest = Manifest(
        table_name=table,
        snapshot_time_us=summary.export_time_us,
        kind="export",
        parts=tuple(writer.parts),
        part_sums=tuple(writer.part_sums),
        consumed_files=_consumed_before(store, table, version),
        items=writer.items,
        restorable_from_us=summary.export_time_us,
        created_at=datetime.now(UTC).isoformat(),
        extra={"writer": writer.writer, "export_arn": summary.export_arn, "table_arn": summary.table_arn,
               "source": uri, "row_version_us": version},
    )
    warnings = _coverage_warnings(store, table, summary.export_time_us)
    # An export can be imported without reaching DynamoDB: the settings are then recorded later, by the
    # compactor, and a --create-table restore before that refuses rather than guess them.
    try:
        observe_settings(store, table, dynamodb=client)
    except AwsError as exc:
        warnings.append(f"the table's settings were not recorded ({exc}); the compactor records them when it "
                        "can reach DynamoDB")
    return _publish(store, writer, manifest, warnings)


def _now_us() -> int:
    return time.time_ns() // 1000


def check_stream(description: dict[str, Any], table: str) -> None:
    """Refuse a scan bootstrap of a table whose stream is off or carries no new images."""
    spec = description.get("StreamSpecification") or {}
    if not spec.get("StreamEnabled"):
        raise StreamConfigError(
            f"table {table!r} has no stream: enable it (NEW_AND_OLD_IMAGES) and start capturing before a "
            "scan bootstrap, or changes made during the scan are lost"
        )
    view = spec.get("StreamViewType")
    if view not in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
        raise StreamConfigError(f"stream view type {view} of {table!r} carries no new images: "
                                "set it to NEW_AND_OLD_IMAGES")


def _checked_scan(store: Store, table: str, client: Any, clock: Callable[[], int]) -> tuple[dict[str, Any], int, int]:
    """DescribeTable's ``Table``, the scan's start and its rows' version, once the table may be scanned."""
    description = describe_table(table, client)
    check_stream(description, table)
    started = clock()
    version = row_version_us(started)
    _check_can_bootstrap(store, table, started, None)
    return description, started, version


def plan_bootstrap_from_scan(store: Store, table: str, *, client: Any = None,
                             clock: Callable[[], int] = _now_us) -> BootstrapPlan:
    """What ``bootstrap_from_scan`` would do now, with its refusals; nothing is scanned, no settings recorded."""
    client = client or aws_client("dynamodb")
    description, started, version = _checked_scan(store, table, client, clock)
    _key_names(store, table, client)
    return BootstrapPlan("scan", description.get("ItemCount"), None, None,
                         tuple(path for path, _ in stale_snapshots(store, table, version)),
                         tuple(_coverage_warnings(store, table, started)))


def bootstrap_from_scan(store: Store, table: str, *, segments: int = 4, client: Any = None,
                        clock: Callable[[], int] = _now_us, progress_stream: TextIO | None = None,
                        page_size: int | None = None) -> BootstrapResult:
    """Copy ``table`` with a parallel Scan taken while its stream is already being captured.

    A scan is no snapshot of one moment: each item is read at some instant between the scan's
    start S and end E. Every change to the table from S on reaches the stream, and is a full new
    image or a REMOVE, so giving scanned rows a version just below S's second makes each such change
    win over the scanned copy whether it happened before or after the item was read. For every
    moment T >= E the state (scanned rows + captured changes up to T) is therefore exact, and
    before E it is not (an item not yet read is missing). Hence ``restorable_from_us`` and the
    snapshot time are E (rounded up to the whole second); the latest restorable time only passes E
    once the captured stream covers the whole scan window (the watermark).
    """
    client = client or aws_client("dynamodb")
    description, started, version = _checked_scan(store, table, client, clock)
    observe_settings(store, table, dynamodb=client)
    keys = key_names(store, table, client)
    writer = SnapshotWriter(store, table, started, version, keys)
    progress = Progress("scanned items", total=int(description.get("ItemCount") or 0) or None,
                        stream=progress_stream)

    def sink(items: list[dict[str, Any]]) -> None:
        try:
            writer.add(items)
        except DecodeError as exc:
            raise RewindError(f"the scan of {table!r} returned an item that cannot be stored: {exc}") from None
        progress.advance(len(items))

    # The snapshot's directory is named by its time, the scan's end: parts wait in a local spool until then.
    with tempfile.TemporaryDirectory(prefix="ddb-rewind-scan-") as spool:
        writer.spool = Path(spool)
        try:
            parallel_scan(client, table, segments, sink, page_size=page_size)
            writer.finish()
        finally:
            progress.close()
        ended = clock()
        snapshot_time = math.ceil(ended / 1_000_000) * 1_000_000
        _check_can_bootstrap(store, table, started, snapshot_time)
        try:
            writer.upload(snapshot_dir(table, from_micros(snapshot_time)))
        except BaseException:
            writer.abort()
            raise
    manifest = Manifest(
        table_name=table,
        snapshot_time_us=snapshot_time,
        kind="scan",
        parts=tuple(writer.parts),
        part_sums=tuple(writer.part_sums),
        consumed_files=_consumed_before(store, table, version),
        items=writer.items,
        restorable_from_us=snapshot_time,
        created_at=datetime.now(UTC).isoformat(),
        extra={"writer": writer.writer, "segments": segments, "scan_started_us": started,
               "scan_ended_us": ended, "row_version_us": version},
    )
    return _publish(store, writer, manifest, _coverage_warnings(store, table, started))
