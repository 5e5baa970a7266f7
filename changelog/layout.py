"""Where things live in a store. Every path a writer or reader uses is built here, nowhere else.

    tables/<table>/meta.json
    tables/<table>/changes/dt=YYYY-MM-DD/hour=HH/<first seq>-<last seq>-<sha256 of the bytes, 32 hex>.parquet
    tables/<table>/snapshots/<YYYYMMDDTHHMMSSZ>/part-<writer>-NNNNN.parquet + manifest.json
    tables/<table>/snapshot-removals/<YYYYMMDDTHHMMSSZ>-<manifest sha256, 16 hex>.json
    tables/<table>/quarantine/<digest>.json
    tables/<table>/checkpoints/<shard id>.json
    tables/<table>/capture/batches/<first seq>-<last seq>-<stream digest>.json
    tables/<table>/capture/pending/<first seq>-<stream digest>.json
    tables/<table>/ledger/<chain>/<n>-<written µs>~<what was published or removed> (changelog.ledger)
    tables/<table>/ledger/folds/<written µs>-<sha256 of the bytes, 16 hex>.json   (compactor.ledger_fold)
    tables/<table>/forgotten/secret.key + <written µs>-<key hash>.json   (changelog.forgotten)
    tables/<table>/retention.json
    tables/<table>/gaps/<shard id>-<sequence numbers>.json   (changelog/gaps.py)
    tables/<table>/settings/<observed µs, 16 digits>-<sha256 of the bytes, 16 hex>.json
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from changelog.errors import UnsafeName
from changelog.timefmt import from_micros, to_micros

TABLES = "tables"
HOUR_US = 3_600_000_000
# One step of a path: the characters of DynamoDB's table names and shard ids (letters, digits,
# '_', '-', '.'), never a path separator, never "." or "..". Every name that comes from outside
# (a table name, a shard id, a queue message's fields) is checked against it where a path is built,
# so no input can name a file outside its table's folder, whichever caller forgot to check first.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}")


def safe_name(name: str, what: str) -> str:
    """``name`` when it can be one step of a path in the store; UnsafeName (saying ``what`` it is) otherwise."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name in (".", ".."):
        shown = repr(name) if len(str(name)) <= 60 else repr(str(name)[:57] + "...")
        raise UnsafeName(f"{what} {shown} cannot name a file in the store (1 to 255 letters, digits, '_', '-' "
                         "or '.', and not '.' or '..')")
    return name


def table_root(table: str) -> str:
    """Prefix of everything stored for one table."""
    return f"{TABLES}/{safe_name(table, 'table name')}"


def meta_path(table: str) -> str:
    """The table's meta.json (key schema and description)."""
    return f"{table_root(table)}/meta.json"


def changes_root(table: str) -> str:
    """Prefix of the table's change files."""
    return f"{table_root(table)}/changes"


def hour_partition(event_time_us: int) -> str:
    """The Hive partition (``dt=YYYY-MM-DD/hour=HH``) a change of that time belongs to."""
    moment = from_micros(event_time_us)
    return f"dt={moment:%Y-%m-%d}/hour={moment:%H}"


def partition_of(path: str) -> str:
    """The ``dt=.../hour=...`` partition of a change file's path."""
    parts = path.split("/")
    return f"{parts[-3]}/{parts[-2]}"


def digest(parts: Iterable[str]) -> str:
    """A short, stable digest of a set of ids (order does not matter)."""
    hasher = hashlib.sha256()
    for part in sorted(parts):
        hasher.update(part.encode("utf-8"))
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]


# DynamoDB Streams' sequence numbers have 21 to 40 digits, Kinesis's 56 today. A change file's name
# holds two of them and must stay within the 255 bytes a file name may have; a longer one is no
# stream's and is quarantined (changelog.codec), not allowed to fail its batch on every retry.
MAX_SEQUENCE_DIGITS = 100
CHANGE_DIGEST_HEX = 32
_CHANGE_NAME = re.compile(r"^([0-9]+)-([0-9]+)-([0-9a-f]{" + str(CHANGE_DIGEST_HEX) + r"})\.parquet$")


def content_digest(data: bytes) -> str:
    """The digest a change file's name carries: sha256 of its bytes, first 32 hex digits (128 bits)."""
    return hashlib.sha256(data).hexdigest()[:CHANGE_DIGEST_HEX]


def change_file_path(table: str, partition: str, first_seq: str, last_seq: str, data: bytes) -> str:
    """Deterministic name of a change file, carrying the digest of its bytes.

    The same rows give the same bytes (changefile.parquet_bytes is deterministic), so a retried
    batch rewrites the same object; and any reader can check the bytes against the name.
    """
    return f"{changes_root(table)}/{partition}/{first_seq}-{last_seq}-{content_digest(data)}.parquet"


@dataclass(frozen=True)
class ChangeFileName:
    """What a change file's name says about it."""

    first_seq: str
    last_seq: str
    digest: str


def parse_change_file_name(path: str) -> ChangeFileName | None:
    """The parts of a change file's name, or None when the name is not one this product writes."""
    match = _CHANGE_NAME.match(path.rsplit("/", 1)[-1])
    if match is None:
        return None
    return ChangeFileName(match.group(1), match.group(2), match.group(3))


_PARTITION = re.compile(r"^dt=([0-9]{4})-([0-9]{2})-([0-9]{2})/hour=([0-9]{2})$")


@dataclass(frozen=True)
class ChangeFilePlace:
    """Where a change file sits, which bounds its rows: their table, and the hour their times fall in."""

    table: str
    partition: str
    hour_us: int  # start of the hour (inclusive); rows' times are before hour_us + HOUR_US

    def holds_time(self, event_time_us: int) -> bool:
        """True when a change of that time belongs in this file's hour partition."""
        return self.hour_us <= event_time_us < self.hour_us + HOUR_US


def change_file_place(path: str) -> ChangeFilePlace | None:
    """The table and hour a change file's path puts it in, or None when the path is not
    ``tables/<table>/changes/dt=YYYY-MM-DD/hour=HH/<name>`` with a real date and hour."""
    parts = path.split("/")
    if len(parts) != 6 or parts[0] != TABLES or parts[2] != "changes" or not parts[1]:
        return None
    partition = f"{parts[3]}/{parts[4]}"
    match = _PARTITION.match(partition)
    if match is None:
        return None
    year, month, day, hour = (int(group) for group in match.groups())
    try:
        start = datetime(year, month, day, hour, tzinfo=UTC)
    except ValueError:
        return None
    return ChangeFilePlace(parts[1], partition, to_micros(start))


def snapshots_root(table: str) -> str:
    """Prefix of the table's snapshots."""
    return f"{table_root(table)}/snapshots"


def snapshot_dir(table: str, at: datetime) -> str:
    """Directory of the snapshot taken at ``at``."""
    return f"{snapshots_root(table)}/{at:%Y%m%dT%H%M%SZ}"


def snapshot_removals_root(table: str) -> str:
    """Prefix of the records a deliberate snapshot removal leaves (ends with '/', for listing)."""
    return f"{table_root(table)}/snapshot-removals/"


def snapshot_removal_path(table: str, at: datetime, manifest_sha256: str) -> str:
    """The record written before a published manifest is deleted on purpose (expire, bootstrap)."""
    return f"{snapshot_removals_root(table)}{at:%Y%m%dT%H%M%SZ}-{manifest_sha256[:16]}.json"


def quarantine_path(table: str, record_digest: str) -> str:
    """Where a record that could not be decoded is kept whole.

    Named by the record alone (no date), so a batch retried at any later time, even across
    midnight, rewrites the same object instead of quarantining the record twice.
    """
    return f"{table_root(table)}/quarantine/{record_digest}.json"


def spark_compaction_path(table: str) -> str:
    """The compactor's record of the Spark job computing the table's next snapshot (``compactor.spark_runs``)."""
    return f"{table_root(table)}/spark-compaction.json"


def retention_path(table: str) -> str:
    """The floor ``expire`` left: no restore before it (``{"restorable_from_us": ...}``)."""
    return f"{table_root(table)}/retention.json"


def checkpoints_root(table: str) -> str:
    """Prefix of the poller's checkpoints (ends with '/', for listing)."""
    return f"{table_root(table)}/checkpoints/"


def checkpoint_path(table: str, shard_id: str) -> str:
    """The poller's checkpoint for one shard."""
    return f"{checkpoints_root(table)}{safe_name(shard_id, 'shard id')}.json"


def capture_root(table: str) -> str:
    """Prefix of the Lambda path's and recover's per-batch capture records (ends with '/', for listing)."""
    return f"{table_root(table)}/capture/"


def _batch_digest(stream_arn: str, shard_id: str | None) -> str:
    # A DynamoDB stream batch is named by its stream alone (its Lambda event does not name the
    # shard); a Kinesis one by its stream and shard, so the names of the records stay as they were.
    return digest([stream_arn] if shard_id is None else [stream_arn, shard_id])


def stored_batch_path(table: str, stream_arn: str, first_seq: str, last_seq: str, shard_id: str | None = None) -> str:
    """The record that one stream batch, first to last sequence number, is in the store.

    Sequence numbers are checked digits (changelog.captured) before they reach here.
    """
    return f"{capture_root(table)}batches/{first_seq}-{last_seq}-{_batch_digest(stream_arn, shard_id)}.json"


def pending_batch_path(table: str, stream_arn: str, first_seq: str, shard_id: str | None = None) -> str:
    """The record that a stream batch from ``first_seq`` failed and is not (yet) in the store."""
    return f"{capture_root(table)}pending/{first_seq}-{_batch_digest(stream_arn, shard_id)}.json"


def shard_progress_path(table: str, shard_id: str) -> str:
    """The Lambda path's record of how far it has stored one shard (replaced after every batch)."""
    return f"{capture_root(table)}progress/{safe_name(shard_id, 'shard id')}.json"


def ledger_root(table: str) -> str:
    """Prefix of the ledger's records of what the store's writers published and removed (ends with '/')."""
    return f"{table_root(table)}/ledger/"


def forgotten_root(table: str) -> str:
    """Prefix of the forget ledger: the erasures of the table and their secret (ends with '/')."""
    return f"{table_root(table)}/forgotten/"


def settings_root(table: str) -> str:
    """Prefix of the table's settings history (one object per observed change of its settings)."""
    return f"{table_root(table)}/settings"


def settings_path(table: str, observed_us: int, data: bytes) -> str:
    """One settings version: named by when it was observed (sorts by time) and by its content."""
    return f"{settings_root(table)}/{observed_us:016d}-{content_digest(data)[:16]}.json"


def table_names(paths: Iterable[str]) -> list[str]:
    """Table names found in a listing of the store's ``tables/`` prefix.

    A folder whose name no table can have (a copy named ``orders copy``) is no table of the store:
    it is left out here, and ``check`` names it (``foreign_table_folders``).
    """
    return [name for name in _folders(paths) if _is_safe(name)]


def foreign_table_folders(paths: Iterable[str]) -> list[str]:
    """The folders of a listing of ``tables/`` whose names no table can have."""
    return [name for name in _folders(paths) if not _is_safe(name)]


def _folders(paths: Iterable[str]) -> list[str]:
    return sorted({path.split("/")[1] for path in paths if path.startswith(TABLES + "/") and path.count("/") >= 2})


def _is_safe(name: str) -> bool:
    return bool(_SAFE_NAME.fullmatch(name)) and name not in (".", "..")
