"""Plain-JSON docs of items, derived from their DynamoDB JSON where they are read.

A doc (``{"status": "shipped", "total": "12.50"}``) is a pure function of its image: numbers stay
exact text, binaries base64, sets arrays, NULL null (``codec.plain_json``). Stores of format 2 keep
only the images (format 1 files also held ``new_doc``/``old_doc`` columns and snapshot ``doc``
columns, which readers now ignore), so every doc an answer shows is computed here from the image it
answers with, whatever the engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from changelog.errors import DamagedStore

if TYPE_CHECKING:
    import duckdb

DOC_FUNCTION = "rewind_doc"


def plain_value(value: Any) -> Any:
    """A valid AttributeValue as a plain value: the type tags stripped (NULL becomes None)."""
    # Images are validated before they are stored (codec.check_image) and their files checked against
    # their checksums before they are read: only the type tags are left to strip, one per value.
    ((tag, inner),) = value.items()
    if tag == "M":
        return {name: plain_value(element) for name, element in inner.items()}
    if tag == "L":
        return [plain_value(element) for element in inner]
    if tag == "NULL":
        return None
    return inner


def plain_of(item: Mapping[str, Any]) -> dict[str, Any]:
    """A valid DynamoDB-JSON item as plain values: the type tags stripped (NULL becomes None)."""
    return {name: plain_value(value) for name, value in item.items()}


def plain_text(value: Any) -> str:
    """One AttributeValue as the plain JSON a doc holds for it (``"shipped"``, ``["a", "b"]``, ``null``)."""
    return orjson.dumps(plain_value(value)).decode()


def key_text(key: Mapping[str, Any], names: Sequence[str] = ()) -> str:
    """A key as a person reads it: ``pk=customer-034, sk=100136``.

    ``names`` orders the attributes (the partition key first); any not in it follow by name. Key
    values are S, N or B, so each is its text (B as base64). ``--key`` reads it back
    (``codec.parse_key``) unless a value holds a comma.
    """
    ordered = [name for name in names if name in key] + sorted(name for name in key if name not in names)
    return ", ".join(f"{name}={plain_value(key[name])}" for name in ordered)


def doc_text(image: str | bytes | None) -> str | None:
    """The plain JSON of one stored DynamoDB-JSON image (None for no image): what ``codec.plain_json`` gives."""
    if image is None:
        return None
    try:
        return orjson.dumps(plain_of(orjson.loads(image))).decode()
    except (ValueError, AttributeError, TypeError):
        raise DamagedStore("a stored image is not DynamoDB JSON: the store is damaged") from None


# Annotated Any: DuckDB evaluates a function's annotations when it registers it.
def _docs(images: Any) -> Any:
    import pyarrow as pa

    return pa.array([doc_text(image) for image in images.to_pylist()], pa.string())


def register_doc_function(con: duckdb.DuckDBPyConnection) -> None:
    """SQL function ``rewind_doc(image VARCHAR) -> VARCHAR``: ``doc_text``, a vector at a time.

    DuckDB evaluates it only for the rows and columns a query returns, so a doc costs nothing unless
    it is asked for.
    """
    from duckdb import func, sqltypes

    from changelog.udf import sql_function

    sql_function(con, DOC_FUNCTION, _docs, [sqltypes.VARCHAR], sqltypes.VARCHAR, type=func.ARROW,
                 null_handling=func.SPECIAL, side_effects=False)
