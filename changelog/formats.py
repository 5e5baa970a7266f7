"""The store's format version: written into every Parquet file's footer and every manifest.

Format 1 kept each image twice (DynamoDB JSON and plain JSON); format 2 keeps the DynamoDB JSON only
(``changelog.docs`` derives the plain JSON). Readers read every format up to ``FORMAT_VERSION`` and
refuse a newer one by name, rather than misread columns they do not know. A file or manifest that
carries no version is format 1.
"""

from __future__ import annotations

from changelog.errors import DamagedStore
from changelog.store import Store

FORMAT_VERSION = 2
FOOTER_KEY = b"ddb_rewind.format"
MANIFEST_KEY = "format_version"


def footer_version(metadata: dict[bytes, bytes] | None) -> int:
    """The format a Parquet footer's key-value metadata declares (1 when it declares none)."""
    value = (metadata or {}).get(FOOTER_KEY)
    try:
        return int(value) if value is not None else 1
    except ValueError:
        return FORMAT_VERSION + 1  # not a number this version wrote: refuse, do not guess


def check_format(store: Store, path: str, version: int) -> None:
    """Refuse (DamagedStore, exit 6) a file or manifest in a format newer than this ddb-rewind reads,
    or in one no version ever wrote (0 or negative)."""
    if version < 1:
        raise DamagedStore(f"{store.uri}/{path} declares store format {version}, which no ddb-rewind writes "
                           "(formats start at 1): the file was altered; restore it from a copy")
    if version > FORMAT_VERSION:
        raise DamagedStore(
            f"{store.uri}/{path} is in store format {version}, written by a newer ddb-rewind; this one reads "
            f"formats 1 to {FORMAT_VERSION}: upgrade ddb-rewind to read this store"
        )
