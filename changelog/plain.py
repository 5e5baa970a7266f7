"""Plain attribute columns over items, so SQL says ``status = 'shipped'``, not JSON paths.

Each top-level attribute becomes a column typed from its DynamoDB type tags in the images: text
for S, BOOLEAN for BOOL, DECIMAL(38,s) for N when every value fits DECIMAL(38,9) exactly (s the
largest scale seen), JSON for the rest
(maps, lists, sets, binaries, mixed types, numbers DECIMAL(38,9) cannot hold). Values are read
from the DynamoDB-JSON image, where N is text, so no number ever passes through a float.
"""

from __future__ import annotations

from changelog.attributes import Summary


def quote_ident(name: str) -> str:
    """A DuckDB identifier in double quotes."""
    return '"' + name.replace('"', '""') + '"'


def _path(name: str, tag: str | None = None) -> str:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"').replace("'", "''")
    return f"'$.\"{escaped}\"" + (f".{tag}'" if tag else "'")


def plain_select(summary: Summary, image: str = "image", reserved: frozenset[str] = frozenset()) -> str:
    """Select-list of typed plain columns, one per attribute of ``summary`` (changelog.attributes).

    ``image`` names the column holding DynamoDB JSON (text or JSON). Attribute names in ``reserved``
    are left out (they stay reachable through the image), and so are names that differ only in case
    from another attribute or a reserved name: SQL identifiers ignore case, so ``status`` and
    ``Status`` cannot both be columns, and DuckDB would rename one (``WHERE status = ...`` then reads
    the wrong one). Such attributes are read from the image by their exact name.
    """
    folded: dict[str, int] = {}
    for name in [*summary, *reserved]:
        folded[name.lower()] = folded.get(name.lower(), 0) + 1
    return ", ".join(f"{expr} AS {quote_ident(name)}" for name, expr in plain_columns(summary, image, reserved)
                     if folded[name.lower()] == 1)


def plain_columns(summary: Summary, image: str = "image",
                  reserved: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """(attribute name, SQL expression) of each plain column ``plain_select`` lists, by name."""
    columns: list[tuple[str, str]] = []
    for name, types in sorted(summary.items()):
        if name in reserved:
            continue
        kinds = set(types.tags) - {"NULL"}
        if kinds == {"S"}:
            expr = f"json_extract_string({image}, {_path(name, 'S')})"
        elif kinds == {"BOOL"}:
            expr = f"CAST(json_extract_string({image}, {_path(name, 'BOOL')}) AS BOOLEAN)"
        elif kinds == {"N"} and types.numbers_fit:
            # The smallest scale that holds every value exactly: 5 reads as 5, 12.50 as 12.50.
            expr = f"CAST(json_extract_string({image}, {_path(name, 'N')}) AS DECIMAL(38,{types.scale}))"
        else:
            expr = f"json_extract({image}, {_path(name)})"
        columns.append((name, expr))
    return columns
