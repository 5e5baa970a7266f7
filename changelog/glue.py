"""The Glue/Athena view of the change files, derived from what the writers produce (never kept by hand).

``infra/template.yaml`` declares the Glue table; tests/test_glue_schema.py checks it against these
functions, so the catalog and the files cannot drift apart: columns and Hive types from the Arrow
schema (changelog.record.SCHEMA), partition keys and their formats from changelog.layout.
"""

from __future__ import annotations

import pyarrow as pa

from changelog.layout import hour_partition
from changelog.record import SCHEMA


def hive_type(arrow_type: pa.DataType) -> str:
    """The Hive (Glue) type Athena and Spark read an Arrow column of this type as, in Parquet."""
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    simple = {pa.int8(): "tinyint", pa.int16(): "smallint", pa.int32(): "int", pa.int64(): "bigint",
              pa.float32(): "float", pa.float64(): "double", pa.binary(): "binary", pa.date32(): "date"}
    if arrow_type in simple:
        return simple[arrow_type]
    raise ValueError(f"no Glue type for Arrow type {arrow_type}: add one before a writer produces it")


def glue_columns(schema: pa.Schema = SCHEMA) -> list[tuple[str, str]]:
    """``(name, Hive type)`` of every column, in file order."""
    return [(field.name, hive_type(field.type)) for field in schema]


def partition_keys() -> list[str]:
    """The Hive partition keys of the change files' paths (``dt``, ``hour``), outermost first."""
    return [part.split("=", 1)[0] for part in hour_partition(0).split("/")]
