"""Parquet files of a store as DuckDB relations, for local and s3:// stores alike.

Local stores are read by DuckDB directly. ``s3://`` stores go through pyarrow's S3 filesystem
(shipped in the pyarrow wheel) and are handed to DuckDB as Arrow datasets, so no DuckDB extension
is ever downloaded at run time. A connection that will be locked (``predicate.lock_down``: no file
access at all, as ``sql``'s) reads local stores as Arrow datasets too: DuckDB's own file access
cannot be granted for reading only (``allowed_directories`` would let ``COPY`` write there).

Every file is checked against its recorded checksum (``changelog.integrity``) before a view over it
exists: a damaged, swapped, truncated or foreign file is refused, never read into an answer. The
s3:// path also verifies Parquet page checksums as pyarrow decodes.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

from changelog.integrity import verify_for_read
from changelog.store import Store


def _sql_list(paths: list[str]) -> str:
    return "[" + ",".join("'" + path.replace("'", "''") + "'" for path in paths) + "]"


def columns_of(schema: pa.Schema) -> str:
    """The select-list of ``schema``'s columns: files of an older format may hold more, never fewer."""
    return ", ".join('"' + name.replace('"', '""') + '"' for name in schema.names)


def local_parquet(paths: list[str], schema: pa.Schema, extra: str = "", options: str = "") -> str:
    """A relation reading local Parquet ``paths`` as ``schema``'s columns (plus ``extra`` expressions)."""
    return (f"(SELECT {columns_of(schema)}{extra} "
            f"FROM read_parquet({_sql_list(paths)}, union_by_name=true{options}))")


def register_parquet(
    con: duckdb.DuckDBPyConnection, name: str, store: Store, paths: list[str], schema: pa.Schema, *,
    through_arrow: bool = False,
) -> None:
    """Create (or replace) view ``name`` over the given store-relative Parquet files.

    No files gives an empty view with ``schema``'s columns, so queries over an empty store work.
    ``through_arrow`` reads a local store as Arrow datasets as well, so the view still reads once
    ``con`` may open no file.
    Raises DamagedStore (one line naming the file) when a file fails its checksum.
    """
    if not paths:
        con.register(f"{name}__empty", schema.empty_table())
        con.execute(f'CREATE OR REPLACE VIEW "{name}" AS SELECT * FROM "{name}__empty"')
        return
    verify_for_read(store, paths)
    root = store.local_root()
    if root is not None and not through_arrow:
        con.execute(f'CREATE OR REPLACE VIEW "{name}" AS SELECT * FROM '
                    f'{local_parquet([str(root / path) for path in paths], schema)}')
        return
    filesystem, base = store.arrow()
    parquet = pads.ParquetFileFormat(
        default_fragment_scan_options=pads.ParquetFragmentScanOptions(page_checksum_verification=True))
    dataset = pads.dataset([f"{base}/{path}" for path in paths], filesystem=filesystem, format=parquet,
                           schema=schema)
    con.register(f"{name}__arrow", dataset)
    con.execute(f'CREATE OR REPLACE VIEW "{name}" AS SELECT * FROM "{name}__arrow"')
