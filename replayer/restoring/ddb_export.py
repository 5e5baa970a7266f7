"""Writing the state at T in DynamoDB's native export layout (DYNAMODB_JSON, full export).

    <destination>/AWSDynamoDB/<export id>/_started
    <destination>/AWSDynamoDB/<export id>/data/<26 base32 chars>.json.gz   gzip of {"Item": {...}} lines
    <destination>/AWSDynamoDB/<export id>/manifest-files.json  (+ .checksum)  one JSON line per data file
    <destination>/AWSDynamoDB/<export id>/manifest-summary.json (+ .checksum) written last: the export is
                                                                              complete once it exists

Two engine-independent halves, so the data files can come from any engine: ``write_data_files``
turns a stream of Arrow record batches (a string column ``image`` of DynamoDB JSON) into bounded
data files, and ``write_manifests`` publishes the manifests for a list of data files however they
were made (``describe_data_file`` describes one from its bytes). compactor.export_reader reads the
result, as ``bootstrap --from-export`` and DynamoDB's ImportTable do.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from changelog.errors import ConflictError, UsageError
from changelog.progress import Progress
from changelog.store import S3Store, Store
from changelog.timefmt import format_time

if TYPE_CHECKING:
    import pyarrow as pa

EXPORTS = "AWSDynamoDB"
SUMMARY = "manifest-summary.json"
FILES = "manifest-files.json"
STARTED = "_started"
# 512 MiB of JSON lines per data file: 10 TB of items stay far under ImportTable's 50,000 objects per
# import, and one file's gzip (all a writer holds in memory) stays a fraction of that.
DEFAULT_FILE_BYTES = 512 * 1024 * 1024
# ImportTable takes at most this many S3 objects per import (DynamoDB developer guide, import quotas).
IMPORT_MAX_OBJECTS = 50_000
_LINE_OVERHEAD = len('{"Item":}\n')
# zlib level 1: JSON lines gzip at ~140 MB/s per core against ~60 at 6 and ~20 at gzip's default 9,
# for 13% of the JSON instead of 9% (bench.export). The bytes are transient and ImportTable bills the
# uncompressed size; the time is the restore's.
GZIP_LEVEL = 1


@dataclass(frozen=True)
class ExportFile:
    """One data file of an export; ``path`` is relative to the export folder (``data/....json.gz``)."""

    path: str
    item_count: int
    md5_base64: str
    etag: str
    size_bytes: int


@dataclass(frozen=True)
class ExportPlan:
    """What an export of some items will hold: items, bytes of JSON lines, data files (for --dry-run)."""

    items: int
    line_bytes: int
    files: int


def export_id(table: str, at_us: int, selection: str = "") -> str:
    """``<14-digit epoch ms>-<8 hex>`` as DynamoDB names exports: the moment, then a digest of what was asked.

    Deterministic, so a re-run of the same replay finds its own earlier export instead of adding another.
    """
    digest = hashlib.sha256(f"{table}\0{at_us}\0{selection}".encode()).hexdigest()[:8]
    return f"{at_us // 1000:014d}-{digest}"


def export_folder(ident: str) -> str:
    """The export's folder relative to the destination."""
    return f"{EXPORTS}/{ident}"


def item_line(image: str) -> bytes:
    """One data-file line: the stored DynamoDB JSON image embedded verbatim (no re-encoding)."""
    return b'{"Item":' + image.encode("utf-8") + b"}\n"


class _Splitter:
    """The one rule that cuts items into data files: a file ends before a line would take it past the bound."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.items = 0

    def starts_new_file(self, line_bytes: int) -> bool:
        """Count a line; True when it must open a new file (the current one is then already full)."""
        new = self.items > 0 and self.bytes + line_bytes > self.max_bytes
        if new:
            self.bytes = self.items = 0
        self.bytes += line_bytes
        self.items += 1
        return new


def plan_export(image_lengths: Iterable[int], max_file_bytes: int = DEFAULT_FILE_BYTES) -> ExportPlan:
    """The exact items, line bytes and data files ``write_data_files`` would produce for images of these
    UTF-8 lengths, in this order."""
    splitter = _Splitter(max_file_bytes)
    items = line_bytes = 0
    files = 1  # an empty export still has one (empty) data file, so ImportTable's prefix is never empty
    for length in image_lengths:
        size = length + _LINE_OVERHEAD
        if splitter.starts_new_file(size):
            files += 1
        items += 1
        line_bytes += size
    return ExportPlan(items, line_bytes, files)


def describe_data_file(path: str, data: bytes, item_count: int | None = None) -> ExportFile:
    """The manifest entry of a data file from its bytes, whoever wrote it (items counted from its lines
    unless the writer knows the count)."""
    lines = item_count if item_count is not None else gzip.decompress(data).count(b"\n") if data else 0
    md5 = hashlib.md5(data, usedforsecurity=False)
    return ExportFile(path, lines, base64.b64encode(md5.digest()).decode("ascii"), md5.hexdigest(), len(data))


def _data_file_name(data: bytes) -> str:
    # 26 lowercase base32 characters, as DynamoDB names its data files; from the bytes, so a re-run
    # that writes the same file writes the same object.
    name = base64.b32encode(hashlib.sha256(data).digest()).decode("ascii").lower()[:26]
    return f"data/{name}.json.gz"


def write_data_files(target: Store, folder: str, batches: Iterable[pa.RecordBatch], *,
                     max_file_bytes: int = DEFAULT_FILE_BYTES, progress: Progress | None = None) -> list[ExportFile]:
    """Write the ``image`` column of ``batches`` as gzip'd ``{"Item": ...}`` data files under ``folder``.

    Each file holds at most ``max_file_bytes`` of JSON lines (or one line if a single item is larger);
    only one file's gzip is held in memory at a time. Returns the files in the order written.
    """
    splitter = _Splitter(max_file_bytes)
    written: list[ExportFile] = []
    buffer = io.BytesIO()
    gz = gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
    items = 0

    def flush() -> None:
        nonlocal buffer, gz, items
        gz.close()
        data = buffer.getvalue()
        path = _data_file_name(data)
        target.write(f"{folder}/{path}", data)
        written.append(describe_data_file(path, data, items))
        buffer = io.BytesIO()
        gz = gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
        items = 0

    for batch in batches:
        images = batch.column(batch.schema.get_field_index("image")).to_pylist()
        # Lines go to gzip a run at a time: one write per line costs more than compressing them.
        pending: list[bytes] = []
        for image in images:
            line = item_line(image)
            if splitter.starts_new_file(len(line)):
                gz.write(b"".join(pending))
                pending = []
                flush()
            pending.append(line)
            items += 1
        gz.write(b"".join(pending))
        if progress is not None:
            progress.advance(len(images))
    flush()
    return written


def _key_prefix(target: Store) -> str:
    # dataFileS3Key and manifestFilesS3Key are bucket-relative in a real export.
    return f"{target.prefix}/" if isinstance(target, S3Store) and target.prefix else ""


def write_manifests(target: Store, folder: str, files: list[ExportFile], *, table_arn: str,
                    export_time: datetime) -> dict[str, Any]:
    """Publish the manifests of the data files ``files`` under ``folder``: manifest-files.json first,
    manifest-summary.json last and conditionally, so the export is complete exactly when the summary
    exists and two writers never both publish one. Returns the summary."""
    key_prefix = _key_prefix(target)
    lines = [json.dumps({"itemCount": f.item_count, "md5Checksum": f.md5_base64, "etag": f.etag,
                         "dataFileS3Key": f"{key_prefix}{folder}/{f.path}"}) for f in files]
    files_body = "".join(line + "\n" for line in lines).encode("utf-8")
    target.write(f"{folder}/{FILES}", files_body)
    target.write(f"{folder}/manifest-files.checksum", hashlib.md5(files_body, usedforsecurity=False)
                 .hexdigest().encode("ascii"))
    when = format_time(export_time)
    summary: dict[str, Any] = {
        "version": "2020-06-30",
        # Not made by DynamoDB's ExportTableToPointInTime, so there is no export ARN to name.
        "exportArn": None,
        "startTime": when,
        "endTime": when,
        "tableArn": table_arn or None,
        "tableId": None,
        "exportTime": when,
        "s3Bucket": target.bucket if isinstance(target, S3Store) else None,
        "s3Prefix": target.prefix if isinstance(target, S3Store) else None,
        "s3SseAlgorithm": None,
        "s3SseKmsKeyId": None,
        "manifestFilesS3Key": f"{key_prefix}{folder}/{FILES}",
        "billedSizeBytes": sum(f.size_bytes for f in files),
        "itemCount": sum(f.item_count for f in files),
        "outputFormat": "DYNAMODB_JSON",
        "exportType": "FULL_EXPORT",
        "exportedBy": "ddb-rewind",
    }
    summary_body = json.dumps(summary, indent=1).encode("utf-8")
    target.write(f"{folder}/manifest-summary.checksum", hashlib.md5(summary_body, usedforsecurity=False)
                 .hexdigest().encode("ascii"))
    target.write(f"{folder}/{SUMMARY}", summary_body, if_absent=True)
    return summary


def check_destination(target: Store, folder: str, overwrite: bool) -> list[str]:
    """Refuse an export folder that holds anything, unless ``overwrite``; returns what it holds."""
    found = target.list(folder + "/")
    if found and not overwrite:
        state = "an export" if f"{folder}/{SUMMARY}" in found else "an incomplete export (no manifest-summary.json)"
        raise UsageError(f"{target.uri}/{folder} already holds {state}: pass --overwrite to replace it")
    return found


def clear_export(target: Store, folder: str, found: list[str]) -> None:
    """Remove an earlier export, summary first: from the first delete on, it is no longer complete.

    ImportTable reads every object under ``data/``, so no file of the old export may survive next to the new.
    """
    ordered = sorted(found, key=lambda path: (path != f"{folder}/{SUMMARY}", path != f"{folder}/{FILES}", path))
    for path in ordered:
        target.delete(path)


def check_data_prefix(target: Store, folder: str, files: list[ExportFile]) -> None:
    """The ``data/`` prefix holds exactly the listed files (ImportTable imports every object under it)."""
    listed = {path.removeprefix(folder + "/") for path in target.list(f"{folder}/data/")}
    expected = {f.path for f in files}
    if listed != expected:
        extra = sorted(listed - expected)[:3]
        raise ConflictError(f"{target.uri}/{folder}/data/ holds files this export did not write ({', '.join(extra)}"
                            "...): another writer used the same folder; re-run with --overwrite")


def export_images(target: Store, folder: str, batches: Iterator[pa.RecordBatch], *, table_arn: str,
                  export_time: datetime, overwrite: bool, max_file_bytes: int = DEFAULT_FILE_BYTES,
                  progress: Progress | None = None) -> tuple[list[ExportFile], dict[str, Any]]:
    """The whole export, whole or not at all: refuse or clear the folder, data files, then the manifests."""
    found = check_destination(target, folder, overwrite)
    if found:
        clear_export(target, folder, found)
    target.write(f"{folder}/{STARTED}", b"")
    files = write_data_files(target, folder, batches, max_file_bytes=max_file_bytes, progress=progress)
    check_data_prefix(target, folder, files)
    summary = write_manifests(target, folder, files, table_arn=table_arn, export_time=export_time)
    return files, summary
