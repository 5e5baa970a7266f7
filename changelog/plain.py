"""Plain attribute columns over item docs, so SQL says ``status = 'shipped'``, not JSON paths.

Each top-level attribute becomes a column typed from what the data holds: text for strings,
BOOLEAN for booleans, DECIMAL(38,9) for numbers that fit it exactly, JSON for the rest (maps, lists,
sets, mixed types, numbers DECIMAL(38,9) cannot hold). The DynamoDB-JSON image stays the truth
that restores are written from; these columns are for reading and filtering only.
"""

from __future__ import annotations

import re

import duckdb

_FITS_DECIMAL = re.compile(r"-?\d{1,29}(\.\d{1,9})?")


def quote_ident(name: str) -> str:
    """A DuckDB identifier in double quotes."""
    return '"' + name.replace('"', '""') + '"'


def _path(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"').replace("'", "''")
    return f"'$.\"{escaped}\"'"


def plain_select(con: duckdb.DuckDBPyConnection, relation: str, doc: str = "doc",
                 reserved: frozenset[str] = frozenset()) -> str:
    """Select-list of typed plain columns for every attribute found in ``relation``'s ``doc`` column.

    Attribute names that clash with ``reserved`` columns are left out (they stay reachable in doc).
    """
    rows = con.execute(
        f"""
        SELECT name, list(DISTINCT json_type(json_extract({doc}, '$."' || replace(name, '"', '\\"') || '"')))
        FROM (SELECT {doc}, unnest(json_keys({doc})) AS name FROM {relation} WHERE {doc} IS NOT NULL)
        GROUP BY name ORDER BY name
        """
    ).fetchall()
    columns = []
    for name, types in rows:
        if name in reserved:
            continue
        kinds = set(types) - {"NULL"}
        path = _path(name)
        if kinds == {"VARCHAR"}:
            expr = f"{doc}->>{path}"
        elif kinds == {"BOOLEAN"}:
            expr = f"CAST({doc}->>{path} AS BOOLEAN)"
        elif kinds and kinds <= {"BIGINT", "UBIGINT", "DOUBLE", "HUGEINT"} and _numbers_fit(con, relation, doc, path):
            expr = f"CAST({doc}->>{path} AS DECIMAL(38,9))"
        else:
            expr = f"{doc}->{path}"
        columns.append(f"{expr} AS {quote_ident(name)}")
    return ", ".join(columns)


def _numbers_fit(con: duckdb.DuckDBPyConnection, relation: str, doc: str, path: str) -> bool:
    pattern = _FITS_DECIMAL.pattern
    ((misfits,),) = con.execute(
        f"""SELECT count(*) FROM {relation}
            WHERE {doc}->>{path} IS NOT NULL AND NOT regexp_full_match({doc}->>{path}, '{pattern}')"""
    ).fetchall()
    return bool(misfits == 0)
