"""Writing restored items to files: DynamoDB-JSON lines, Parquet, Avro that keeps DynamoDB's types, CSV.

Parquet and CSV also carry one typed column per attribute beside the lossless DynamoDB JSON, typed by
the one rule SQL's ``<table>_at`` uses (``changelog.plain``, docs/engines.md), the table's key
attributes first; JSON lines and Avro are lossless as they are.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import fastavro
import fastavro.write
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from changelog.errors import DamagedStore, UsageError
from changelog.plain import Column, finish_array, text_array, typed_query
from replayer.restoring.outfile import write_behind

FORMATS = (".jsonl", ".parquet", ".avro", ".csv")
RESERVED = frozenset({"item_key", "keys", "item", "doc"})  # the lossless columns; such attributes stay in item
STDOUT = "-"  # --to-file -: JSON lines on stdout

# One named, recursive record per AttributeValue: exactly one field is set, as in DynamoDB JSON.
AVRO_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Item",
    "namespace": "ddb_rewind",
    "doc": "One DynamoDB item; each attribute keeps its DynamoDB type (N stays decimal text).",
    "fields": [
        {
            "name": "Item",
            "type": {
                "type": "map",
                "values": {
                    "type": "record",
                    "name": "AttributeValue",
                    "fields": [
                        {"name": "S", "type": ["null", "string"], "default": None},
                        {"name": "N", "type": ["null", "string"], "default": None},
                        {"name": "B", "type": ["null", "bytes"], "default": None},
                        {"name": "SS", "type": ["null", {"type": "array", "items": "string"}], "default": None},
                        {"name": "NS", "type": ["null", {"type": "array", "items": "string"}], "default": None},
                        {"name": "BS", "type": ["null", {"type": "array", "items": "bytes"}], "default": None},
                        {"name": "M", "type": ["null", {"type": "map", "values": "AttributeValue"}], "default": None},
                        {"name": "L", "type": ["null", {"type": "array", "items": "AttributeValue"}],
                         "default": None},
                        {"name": "NULL", "type": ["null", "boolean"], "default": None},
                        {"name": "BOOL", "type": ["null", "boolean"], "default": None},
                    ],
                },
            },
        }
    ],
}


def check_format(path: str) -> str:
    """The file kind from its extension (``-`` is JSON lines on stdout); raises UsageError naming the accepted ones."""
    if path == STDOUT:
        return ".jsonl"
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        # One JSON document is not what is written (one item per line, as DynamoDB's export): say so.
        raise UsageError(f"cannot write {path!r}: the items are written as JSON lines (one item per line, as "
                         "DynamoDB's export); name the file .jsonl")
    if suffix not in FORMATS:
        raise UsageError(f"cannot write {path!r}: use a file ending in .jsonl, .parquet, .avro or .csv, "
                         "or - for JSON lines on stdout")
    return suffix


def to_avro_value(value: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB-JSON AttributeValue as an Avro AttributeValue record (binaries decoded)."""
    ((tag, inner),) = value.items()
    if tag == "B":
        return {"B": base64.b64decode(inner)}
    if tag == "BS":
        return {"BS": [base64.b64decode(v) for v in inner]}
    if tag == "M":
        return {"M": {k: to_avro_value(v) for k, v in inner.items()}}
    if tag == "L":
        return {"L": [to_avro_value(v) for v in inner]}
    return {tag: inner}


def from_avro_value(value: dict[str, Any]) -> dict[str, Any]:
    """The inverse of to_avro_value: back to DynamoDB JSON with base64 binaries."""
    for tag, inner in value.items():
        if inner is None:
            continue
        if tag == "B":
            return {"B": base64.b64encode(inner).decode("ascii")}
        if tag == "BS":
            return {"BS": [base64.b64encode(v).decode("ascii") for v in inner]}
        if tag == "M":
            return {"M": {k: from_avro_value(v) for k, v in inner.items()}}
        if tag == "L":
            return {"L": [from_avro_value(v) for v in inner]}
        return {tag: inner}
    raise ValueError("an Avro AttributeValue with no field set")


# What surrounds an image on its .jsonl line (the Spark job writes the same lines: replayer.engines.spark_job).
JSONL_ITEM = ('{"Item":', "}")


def write_jsonl(path: Path, batches: Iterable[pa.RecordBatch]) -> int:
    """One ``{"Item": ...}`` line per item, as DynamoDB's native export writes; the image text as stored.

    Each batch's first column holds the images (none null).
    """
    with open(path, "wb") as handle:
        return write_jsonl_to(handle, batches)


def write_jsonl_to(handle: IO[bytes], batches: Iterable[pa.RecordBatch]) -> int:
    """``write_jsonl`` into an open binary stream (stdout's for ``--to-file -``).

    A batch's lines are joined in Arrow and written as one buffer, on a thread while the next batch
    is computed (both release the GIL): no Python string per item.
    """
    count = 0
    before, after = _text(JSONL_ITEM[0]), _text(JSONL_ITEM[1] + "\n")

    def joined() -> Iterator[memoryview]:
        nonlocal count
        for batch in batches:
            images = batch.column(0).cast(pa.large_string())
            if images.null_count:
                raise DamagedStore("an item of the state has no image; the store may be damaged")
            count += batch.num_rows
            yield _joined(pc.binary_join_element_wise(before, images, after, _text("")))

    write_behind(handle.write, joined())
    return count


def write_avro(path: Path, images: Iterable[str]) -> int:
    """An Avro container file of Item records (schema AVRO_SCHEMA), deflate blocks as fastavro writes them.

    fastavro writes the header; the records are encoded here (``_avro_item``) and cut into blocks
    exactly where fastavro's writer cuts them, so the file is byte for byte what
    ``fastavro.writer(handle, AVRO_SCHEMA, records, codec="deflate")`` writes with the same sync
    marker. fastavro picks each union's branch by validating the value against every branch, at
    about 60 µs an item; the branch is known from the DynamoDB type tag.
    """
    count = 0
    with open(path, "wb") as handle:
        sync = os.urandom(16)  # what fastavro draws when given none
        fastavro.write.Writer(handle, fastavro.parse_schema(AVRO_SCHEMA), codec="deflate", sync_marker=sync)
        block = bytearray()
        in_block = 0
        for image in images:
            _avro_item(orjson.loads(image), block)
            in_block += 1
            if len(block) >= AVRO_SYNC_INTERVAL:
                _avro_block(handle, block, in_block, sync)
                block.clear()
                count += in_block
                in_block = 0
        if in_block:
            _avro_block(handle, block, in_block, sync)
            count += in_block
    return count


AVRO_SYNC_INTERVAL = 16_000  # fastavro's default: a block ends once its records take this many bytes
_AVRO_TAGS = ("S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL")  # AVRO_SCHEMA's field order
# An AttributeValue record is its ten union fields: null (0) for all but its tag's, which is branch 1 (2).
_AVRO_BEFORE = {tag: b"\x00" * index + b"\x02" for index, tag in enumerate(_AVRO_TAGS)}
_AVRO_AFTER = {tag: b"\x00" * (len(_AVRO_TAGS) - 1 - index) for index, tag in enumerate(_AVRO_TAGS)}


def _avro_long(value: int) -> bytes:
    """Avro's long: zig-zag, then 7 bits a byte, low first."""
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_AVRO_LONGS = [_avro_long(n) for n in range(4096)]


def _avro_length(value: int) -> bytes:
    return _AVRO_LONGS[value] if value < 4096 else _avro_long(value)


def _avro_item(item: dict[str, Any], out: bytearray) -> None:
    """One Item record (a map of AttributeValue) appended to ``out``; a map or array is one block then 0."""
    out += _avro_length(len(item))
    for name, value in item.items():
        encoded = name.encode()
        out += _avro_length(len(encoded))
        out += encoded
        _avro_value(value, out)
    out += b"\x00"


def _avro_value(value: dict[str, Any], out: bytearray) -> None:
    ((tag, inner),) = value.items()
    out += _AVRO_BEFORE[tag]
    if tag == "S" or tag == "N":
        encoded = inner.encode()
        out += _avro_length(len(encoded))
        out += encoded
    elif tag == "M":
        if inner:
            _avro_item(inner, out)
        else:
            out += b"\x00"
    elif tag == "BOOL" or tag == "NULL":
        out += b"\x01" if inner else b"\x00"
    elif tag == "B":
        raw = base64.b64decode(inner)
        out += _avro_length(len(raw))
        out += raw
    elif tag == "SS" or tag == "NS" or tag == "BS":
        if inner:
            out += _avro_length(len(inner))
            for text in inner:
                encoded = base64.b64decode(text) if tag == "BS" else text.encode()
                out += _avro_length(len(encoded))
                out += encoded
        out += b"\x00"
    elif tag == "L":
        if inner:
            out += _avro_length(len(inner))
            for element in inner:
                _avro_value(element, out)
        out += b"\x00"
    else:
        raise ValueError(f"unknown DynamoDB type {tag!r}")
    out += _AVRO_AFTER[tag]


def _avro_block(handle: IO[bytes], block: bytearray, records: int, sync: bytes) -> None:
    # zlib's stream less its 2-byte header and the last byte of its checksum: exactly what fastavro
    # writes (readers stop at the end of the deflate data).
    data = zlib.compress(block)[2:-1]
    handle.write(_avro_length(records))
    handle.write(_avro_long(len(data)))
    handle.write(data)
    handle.write(sync)


PARQUET_SCHEMA = pa.schema(
    [pa.field("item_key", pa.string()), pa.field("keys", pa.string()), pa.field("item", pa.string()),
     pa.field("doc", pa.string())]
)


def write_parquet(batches: Iterable[pa.RecordBatch], path: Path, columns: Iterable[Column] = (),
                  key_columns: int = 0) -> int:
    """A zstd Parquet file: the first ``key_columns`` of ``columns`` (the table's key attributes),
    item_key, keys, item (DynamoDB JSON), doc (plain JSON), then the other ``columns``.

    Each batch holds the four lossless columns, then one value per column as ``changelog.plain.typed_query``
    selects it.

    pyarrow writes it from Arrow batches, not DuckDB's COPY: the replay connection has no file
    access by then (see changelog.predicate.lock_down).
    """
    typed = list(columns)
    fields = [pa.field(c.name, c.arrow) for c in typed]
    schema = pa.schema([*fields[:key_columns], *PARQUET_SCHEMA, *fields[key_columns:]])
    count = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in batches:
            lossless = pa.Table.from_arrays(batch.columns[:len(PARQUET_SCHEMA)],
                                            names=PARQUET_SCHEMA.names).cast(PARQUET_SCHEMA)
            arrays = [finish_array(column, batch.column(len(PARQUET_SCHEMA) + index))
                      for index, column in enumerate(typed)]
            table = pa.Table.from_arrays([*arrays[:key_columns], *lossless.columns, *arrays[key_columns:]],
                                         schema=schema)
            writer.write_table(table)
            count += batch.num_rows
    return count


def csv_query(columns: list[Column], relation: str) -> str:
    """What ``write_csv`` reads from ``relation``: item_key, image, each column's ``typed_query`` value,
    then each N column's text again (for its sign, ``changelog.plain.text_array``)."""
    texts = [Column(column.name, "NTEXT") for column in columns if column.kind == "N"]
    return typed_query([*columns, *texts], relation, "item_key, image")


_NEEDS_QUOTES = '[,"\r\n]'  # what Python's csv module quotes (QUOTE_MINIMAL, lineterminator \r\n)


def write_csv(path: Path, batches: Iterable[pa.RecordBatch], columns: Iterable[Column], key_columns: int = 0) -> int:
    """CSV (RFC 4180, UTF-8, header row): the first ``key_columns`` of ``columns`` (the table's key
    attributes), item_key, the other ``columns``, then item.

    Fields are quoted only when they hold a comma, a quote or a line break (quotes doubled); a
    NULL or missing attribute is an empty field; numbers are their exact decimal text, booleans
    true/false, binaries base64, sets a JSON list, L/M and mixed types DynamoDB JSON.

    Each batch is a batch of ``csv_query``. The cells are ``changelog.plain.text_value``'s and the
    lines what ``csv.writer`` writes, byte for byte, formatted a column at a time in Arrow.
    """
    typed = list(columns)
    numbers = [index for index, column in enumerate(typed) if column.kind == "N"]
    count = 0
    with open(path, "wb") as handle:
        header = io.StringIO()
        keys, rest = typed[:key_columns], typed[key_columns:]
        csv.writer(header, lineterminator="\r\n").writerow(
            [*(c.name for c in keys), "item_key", *(c.name for c in rest), "item"])
        handle.write(header.getvalue().encode("utf-8"))
        for batch in batches:
            signs = {index: batch.column(2 + len(typed) + at) for at, index in enumerate(numbers)}
            cells = [text_array(column, batch.column(2 + index), signs.get(index))
                     for index, column in enumerate(typed)]
            fields = [_csv_field(array) for array in
                      [*cells[:key_columns], batch.column(0), *cells[key_columns:], batch.column(1)]]
            fields[-1] = pc.binary_join_element_wise(fields[-1], _text(""), _text("\r\n"))  # the line ends after item
            lines = pc.binary_join_element_wise(*fields, _text(","))
            handle.write(_joined(lines))
            count += batch.num_rows
    return count


def _joined(lines: pa.Array) -> memoryview:
    """The bytes of a large_string array without nulls, one value after another (its data buffer)."""
    if not len(lines):
        return memoryview(b"")
    _validity, offsets, data = lines.buffers()
    bounds = np.frombuffer(offsets, np.int64)
    return memoryview(data)[int(bounds[lines.offset]):int(bounds[lines.offset + len(lines)])]


def _text(value: str) -> pa.Scalar:
    return pa.scalar(value, pa.large_string())


def _csv_field(texts: pa.Array) -> pa.Array:
    """Each text (none null) as a CSV field: quoted, quotes doubled, when it holds a comma, a quote or a line break."""
    texts = texts.cast(pa.large_string())
    needs = pc.match_substring_regex(texts, _NEEDS_QUOTES)
    if not pc.any(needs).as_py():
        return texts
    quote = _text('"')
    quoted = pc.binary_join_element_wise(quote, _doubled_quotes(texts), quote, _text(""))
    return pc.if_else(needs, quoted, texts)


def _doubled_quotes(texts: pa.Array) -> pa.Array:
    """``replace_substring(texts, '"', '""')`` on the data buffer at once (Arrow's kernel is several
    times slower): each value moves by the number of quotes before it."""
    quotes = pc.count_substring(texts, '"').to_numpy(zero_copy_only=False)
    if not quotes.any():
        return texts
    _validity, offsets, data = texts.buffers()
    bounds = np.frombuffer(offsets, np.int64)[texts.offset:texts.offset + len(texts) + 1]
    body = data[int(bounds[0]):int(bounds[-1])].to_pybytes().replace(b'"', b'""')
    moved = bounds - bounds[0] + np.concatenate([[0], np.cumsum(quotes)])
    return pa.LargeStringArray.from_buffers(len(texts), pa.py_buffer(moved.astype(np.int64)), pa.py_buffer(body))
