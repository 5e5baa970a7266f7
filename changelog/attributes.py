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


@dataclass(frozen=True)
class AttributeTypes:
    """The DynamoDB type tags one attribute was seen with and, over its N values, the most integer
    digits and the largest scale (digits after the point), as Python's Decimal counts them:
    "0.050" has 0 integer digits and scale 3, "1.5E+3" 4 and 0. ``changelog.plain`` types it."""

    tags: frozenset[str]
    integer: int = 0
    scale: int = 0

    def merged(self, other: AttributeTypes) -> AttributeTypes:
        return AttributeTypes(self.tags | other.tags, max(self.integer, other.integer), max(self.scale, other.scale))


Summary = Mapping[str, AttributeTypes]


def merge_summaries(summaries: Iterable[Summary]) -> dict[str, AttributeTypes]:
    """One summary for the union of the images the given summaries describe."""
    merged: dict[str, AttributeTypes] = {}
    for summary in summaries:
        for name, types in summary.items():
            merged[name] = merged[name].merged(types) if name in merged else types
    return merged


# Stored N values are numbers (codec.check_image): the parts of each, its digits counted from them.
_SUMMARIZE = r"""
SELECT name, list(DISTINCT tag),
       max(greatest(0, greatest(length(ltrim(n.ip || n.fp, '0')), 1) + n.ex - length(n.fp))) FILTER (WHERE tag = 'N'),
       max(greatest(0, length(n.fp) - n.ex)) FILTER (WHERE tag = 'N')
FROM (
    SELECT name, tag, {{'ip': p.ip, 'fp': p.fp, 'ex': coalesce(TRY_CAST(nullif(p.ex, '') AS INTEGER), 0)}} AS n
    FROM (
        SELECT name, json_keys(value)[1] AS tag,
               regexp_extract(value ->> '$.N', '^-?([0-9]*)(?:\.([0-9]*))?(?:[eE]([-+]?[0-9]+))?$',
                              ['ip', 'fp', 'ex']) AS p
        FROM (SELECT unnest(json_keys({image})) AS name, unnest(json_extract({image}, '$.*')) AS value
              FROM {relation} WHERE {image} IS NOT NULL)
    )
)
GROUP BY name
"""


def summarize(con: duckdb.DuckDBPyConnection, relation: str, image: str) -> dict[str, AttributeTypes]:
    """The summary of the DynamoDB-JSON images in column ``image`` of ``relation`` (one full scan)."""
    rows = con.execute(_SUMMARIZE.format(relation=relation, image=image)).fetchall()
    return {name: AttributeTypes(frozenset(tags), int(integer or 0), int(scale or 0))
            for name, tags, integer, scale in rows}


def summarize_arrow(table: pa.Table, image: str) -> dict[str, AttributeTypes]:
    """The summary of an Arrow table's image column (what a writer puts in the file's footer)."""
    con = duckdb.connect()
    con.register("summarized", table.select([image]))
    return summarize(con, "summarized", image)


def encode(summary: Summary) -> bytes:
    """Deterministic JSON (sorted): the same images give the same footer, hence the same file digest.

    Each attribute is ``[tags, "digits", integer, scale]``; footers written before the integer
    digits were kept hold ``[tags, fits, scale]`` (``decode``).
    """
    body = {name: [sorted(t.tags), "digits", t.integer, t.scale] for name, t in sorted(summary.items())}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def decode(data: bytes) -> dict[str, AttributeTypes] | None:
    """The summary in a footer; None when it is of the older form and holds numbers, whose integer
    digits it does not tell (the file is then scanned, as one without a summary)."""
    summary: dict[str, AttributeTypes] = {}
    for name, entry in json.loads(data).items():
        if len(entry) == 4:
            tags, _form, integer, scale = entry
            summary[name] = AttributeTypes(frozenset(tags), int(integer), int(scale))
        elif "N" in entry[0]:
            return None
        else:
            summary[name] = AttributeTypes(frozenset(entry[0]))
    return summary


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


def summarized_names(store: Store, paths: Iterable[str]) -> set[str]:
    """The attribute names the footers of ``paths`` summarize (a file without a summary adds none: no scan)."""
    names: set[str] = set()
    for metadata in footers(store, list(paths)).values():
        summary = _from_footer(metadata)
        names.update(summary or ())
    return names


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
