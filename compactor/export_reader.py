"""Reading a native DynamoDB export (DYNAMODB_JSON, full export) and checking it before it is trusted.

The layout under ``<export-prefix>/AWSDynamoDB/<export id>/`` (the URI given points at that folder):

    manifest-summary.json   one JSON object: exportArn, tableArn, exportTime, itemCount, outputFormat, ...
    manifest-files.json     JSON lines, one per data file: itemCount, md5Checksum, etag, dataFileS3Key
    data/<random>.json.gz   gzip of JSON lines ``{"Item": {...DynamoDB JSON...}}``

``md5Checksum`` is the base64 of the MD5 of the ``.json.gz`` object's bytes; every file is checked
against it, and item counts against both manifests, before its items are handed out. Anything that
does not match raises ExportInvalid with one line naming the file: an export is trusted data, so a
bad byte means a bad or tampered export, never something to skip.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from changelog.errors import DecodeError
from changelog.store import ObjectMissing, Store, open_location
from changelog.timefmt import parse_time, to_micros

SUMMARY = "manifest-summary.json"
FILES = "manifest-files.json"


class ExportInvalid(DecodeError):
    """The export is incomplete, corrupt or not a DYNAMODB_JSON full export."""


@dataclass(frozen=True)
class ExportSummary:
    """What ``manifest-summary.json`` says about the export."""

    export_arn: str
    table_arn: str
    export_time_us: int
    item_count: int
    output_format: str
    export_type: str


@dataclass(frozen=True)
class DataFile:
    """One line of ``manifest-files.json``; ``path`` is relative to the export folder."""

    path: str
    item_count: int
    md5_base64: str


def open_export(uri: str) -> Store:
    """The export folder (local directory or ``s3://bucket/prefix/AWSDynamoDB/<id>``) as a read-only store."""
    return open_location(uri.rstrip("/") or "/", what="export", option="--from-export")


def _read(source: Store, path: str) -> bytes:
    try:
        return source.read(path)
    except ObjectMissing:
        raise ExportInvalid(f"export {source.uri} has no {path}: point --from-export at the "
                            "AWSDynamoDB/<export id>/ folder of a finished export") from None


def read_summary(source: Store) -> ExportSummary:
    """Parse and check ``manifest-summary.json``; refuses other formats and incremental exports."""
    try:
        body = json.loads(_read(source, SUMMARY))
        summary = ExportSummary(
            # null where there is none (an export ddb-rewind wrote has no export ARN), not "None".
            export_arn=str(body.get("exportArn") or ""),
            table_arn=str(body.get("tableArn") or ""),
            export_time_us=to_micros(parse_time(str(body["exportTime"]))),
            item_count=int(body["itemCount"]),
            output_format=str(body.get("outputFormat", "DYNAMODB_JSON")),
            export_type=str(body.get("exportType", "FULL_EXPORT")),
        )
    except (ValueError, KeyError, TypeError, DecodeError) as exc:
        raise ExportInvalid(f"{SUMMARY} of {source.uri} is unreadable: {exc}") from None
    if summary.output_format != "DYNAMODB_JSON":
        raise ExportInvalid(f"export {source.uri} is {summary.output_format}; "
                            "only DYNAMODB_JSON exports can be imported")
    if summary.export_type != "FULL_EXPORT":
        raise ExportInvalid(f"export {source.uri} is an {summary.export_type}; bootstrap needs a FULL_EXPORT")
    return summary


def _relative(key: str) -> str:
    # dataFileS3Key is bucket-relative (export prefix included); the URI already points at the export folder.
    marker = key.rfind("/data/")
    return "data/" + key[marker + len("/data/"):] if marker >= 0 else key


def _lines(text: str) -> list[str]:
    """JSON lines, split at line feeds only: ``str.splitlines`` also splits at U+0085, U+2028 and U+2029,
    which JSON strings hold unescaped (an item holding one was cut in two)."""
    return text.split("\n")


def read_data_files(source: Store, summary: ExportSummary) -> list[DataFile]:
    """Parse ``manifest-files.json``; checks that the files' item counts add up to the summary's."""
    files = []
    for number, line in enumerate(_lines(_read(source, FILES).decode("utf-8")), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            files.append(DataFile(_relative(str(entry["dataFileS3Key"])), int(entry["itemCount"]),
                                  str(entry["md5Checksum"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ExportInvalid(f"{FILES} of {source.uri}, line {number}, is unreadable: {exc}") from None
    total = sum(f.item_count for f in files)
    if total != summary.item_count:
        raise ExportInvalid(f"{FILES} lists {total:,} items but {SUMMARY} says {summary.item_count:,}: "
                            "the export is incomplete")
    return files


def read_items(source: Store, data_file: DataFile) -> Iterator[dict[str, Any]]:
    """The DynamoDB-JSON items of one data file, after its MD5 and item count are verified.

    The whole object is checked before the first item is yielded, so no item of a corrupt file leaks.
    """
    raw = _read(source, data_file.path)
    actual = base64.b64encode(hashlib.md5(raw, usedforsecurity=False).digest()).decode("ascii")
    if actual != data_file.md5_base64:
        raise ExportInvalid(f"export data file {data_file.path} fails its MD5 check "
                            f"(manifest {data_file.md5_base64}, file {actual}): the export is corrupt")
    try:
        text = gzip.decompress(raw).decode("utf-8") if raw else ""
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise ExportInvalid(f"export data file {data_file.path} is not gzip of UTF-8 text: {exc}") from None
    items = []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)["Item"]
        except (ValueError, KeyError, TypeError):
            raise ExportInvalid(f"export data file {data_file.path}, line {number}, is not an "
                                '{"Item": {...}} line') from None
        if not isinstance(item, dict):
            raise ExportInvalid(f"export data file {data_file.path}, line {number}: Item is not a map")
        items.append(item)
    if len(items) != data_file.item_count:
        raise ExportInvalid(f"export data file {data_file.path} holds {len(items):,} items but the manifest "
                            f"says {data_file.item_count:,}")
    yield from items
