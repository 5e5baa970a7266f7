"""Which attributes a table's items have, and of which DynamoDB types: the shape of its plain columns.

``<table>_at(TIME)`` gives one typed column per attribute (``changelog.plain``). Finding them used to
mean reading every image of the table in every SQL session. Instead, each Parquet file the compactor
writes (merged change files, snapshot parts) carries the summary of its own images in its footer
(key ``ddb_rewind.attributes``): a file is immutable and checksummed, so its summary can never be
stale or wrong, and a new attribute arrives with the file that first holds it. A reader merges the
footers and scans only the images of files that carry none (fresh capture files, older stores).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from changelog.footer import footer, footers
from changelog.integrity import verify_for_read
from changelog.record import SCHEMA
from changelog.snapshot import SNAPSHOT_SCHEMA
from changelog.source import register_parquet
from changelog.store import Store

METADATA_KEY = b"ddb_rewind.attributes"
# N values DECIMAL(38,9) holds exactly; the plain column takes the largest scale seen.
FITS_DECIMAL = r"-?\d{1,29}(\.\d{1,9})?"
_SCALE = r"\.(\d+)$"


@dataclass(frozen=True)
class AttributeTypes:
    """The DynamoDB type tags one attribute was seen with, and whether its numbers fit a decimal."""

    tags: frozenset[str]
    numbers_fit: bool = True
    scale: int = 0

    def merged(self, other: AttributeTypes) -> AttributeTypes:
        return AttributeTypes(self.tags | other.tags, self.numbers_fit and other.numbers_fit,
                              max(self.scale, other.scale))


Summary = Mapping[str, AttributeTypes]


def merge_summaries(summaries: Iterable[Summary]) -> dict[str, AttributeTypes]:
    """One summary for the union of the images the given summaries describe."""
    merged: dict[str, AttributeTypes] = {}
    for summary in summaries:
        for name, types in summary.items():
            merged[name] = merged[name].merged(types) if name in merged else types
    return merged


def summarize(con: duckdb.DuckDBPyConnection, relation: str, image: str) -> dict[str, AttributeTypes]:
    """The summary of the DynamoDB-JSON images in column ``image`` of ``relation`` (one full scan)."""
    rows = con.execute(
        f"""
        SELECT name, list(DISTINCT tag),
               bool_and(tag <> 'N' OR regexp_full_match(json_extract_string(value, '$.N'), '{FITS_DECIMAL}')),
               max(CASE WHEN tag = 'N' THEN length(regexp_extract(json_extract_string(value, '$.N'), '{_SCALE}', 1))
                   END)
        FROM (
            SELECT name, value, json_keys(value)[1] AS tag
            FROM (
                SELECT name, json_extract({image}, '$."' || replace(name, '"', '\\"') || '"') AS value
                FROM (SELECT {image}, unnest(json_keys({image})) AS name FROM {relation} WHERE {image} IS NOT NULL)
            )
        )
        GROUP BY name
        """
    ).fetchall()
    return {name: AttributeTypes(frozenset(tags), bool(fits), int(scale or 0)) for name, tags, fits, scale in rows}


def summarize_arrow(table: pa.Table, image: str) -> dict[str, AttributeTypes]:
    """The summary of an Arrow table's image column (what a writer puts in the file's footer)."""
    con = duckdb.connect()
    con.register("summarized", table.select([image]))
    return summarize(con, "summarized", image)


def encode(summary: Summary) -> bytes:
    """Deterministic JSON (sorted): the same images give the same footer, hence the same file digest."""
    body = {name: [sorted(t.tags), t.numbers_fit, t.scale] for name, t in sorted(summary.items())}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def decode(data: bytes) -> dict[str, AttributeTypes]:
    body = json.loads(data)
    return {name: AttributeTypes(frozenset(tags), bool(fits), int(scale)) for name, (tags, fits, scale) in body.items()}


def with_summary(table: pa.Table, image: str) -> pa.Table:
    """``table`` with the summary of its ``image`` column in its schema metadata (written to the footer)."""
    metadata = dict(table.schema.metadata or {})
    metadata[METADATA_KEY] = encode(summarize_arrow(table, image))
    return table.replace_schema_metadata(metadata)


def footer_summary(store: Store, path: str) -> dict[str, AttributeTypes] | None:
    """The summary in a store file's footer; None when the file carries none."""
    return _from_footer(footer(store, path))


def _from_footer(metadata: Mapping[bytes, bytes]) -> dict[str, AttributeTypes] | None:
    data = metadata.get(METADATA_KEY)
    return decode(data) if data is not None else None


def stored_summary(store: Store, change_files: Iterable[str],
                   snapshot_parts: Iterable[str]) -> dict[str, AttributeTypes]:
    """The summary of every new image in ``change_files`` and every image in ``snapshot_parts``.

    Files are checked against their checksums first (cached per process), so a footer is as
    trustworthy as the data it describes; the files that carry no summary are scanned.
    """
    groups = ((list(change_files), "new_image", SCHEMA), (list(snapshot_parts), "image", SNAPSHOT_SCHEMA))
    verify_for_read(store, [path for paths, _, _ in groups for path in paths])
    found: list[Summary] = []
    con: duckdb.DuckDBPyConnection | None = None
    for index, (paths, image, schema) in enumerate(groups):
        unsummarized = []
        for path, metadata in footers(store, paths).items():
            summary = _from_footer(metadata)
            if summary is None:
                unsummarized.append(path)
            else:
                found.append(summary)
        if unsummarized:
            con = con or duckdb.connect()
            register_parquet(con, f"unsummarized_{index}", store, unsummarized, schema)
            found.append(summarize(con, f"unsummarized_{index}", image))
    return merge_summaries(found)
