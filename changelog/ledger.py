"""The ledger: what the store's own writers published and removed, so that a deletion is noticed.

Every change file a writer publishes (capture on every path, requeue, merge: all go through
``changelog.changefile.publish_change_file``) is recorded right after its bytes are written, and so
is every record that holds coverage back: a gap record (``changelog.gaps.write_gap``), a quarantined
record (``keep``, with the loss it stands for; ``requeue`` and ``forget`` record a ``drop`` before
they remove one) and a pending batch record (``pend``, never removed). A change file that the
store's own writers delete on purpose (merge replacing small files, ``expire`` dropping old ones,
``forget`` replacing files that held an erased item) is
recorded as removed right before it is deleted. Write first, record last: a crash in between leaves
a file no record names, which is never an alarm (stores written before the ledger have only such).

Each record is one empty object whose name says everything, so the ledger is read from the listing
every reader already makes (``changelog.state.coverage``), never fetched, but for its folds
(``read_ledger``; each compaction folds the records, ``compactor.ledger_fold``):

    tables/<table>/ledger/<chain>/<n, 12 digits>-<written µs, 16 digits>~put~<bytes>~dt=YYYY-MM-DD~hour=HH~<file name>
    ...~del~dt=YYYY-MM-DD~hour=HH~<file name>
    ...~gap~<start µs, or x when unknown>~<end µs>~<gap record name>
    ...~keep~<start µs, or x when unknown>~<end µs>~<quarantined record name>
    ...~drop~<quarantined record name>
    ...~pend~<hold µs, or x when unknown>~<pending batch record name>

(names without their ``.parquet`` / ``.json``, so that no glob over a table's files matches a record).

A chain is one writer's records in one table (a Lambda container, a ``consume`` run, a ``recover``,
``requeue``, ``compact``, ``expire`` or ``forget`` run), numbered from 0 with no hole. What goes missing:

- a change file a ``put`` record names and no ``del`` record names: a loss from the start of its
  hour partition (its rows' first time is inside that hour) to the hour's end;
- a gap record a ``gap`` record names that neither exists nor is listed by a checkpoint: the loss
  the gap was, from the bounds its ``gap`` record carries;
- a quarantined record a ``keep`` record names, not dropped since: the loss it was, from its bounds;
- a pending batch record a ``pend`` record names, and no stored record settles its batch: a loss from
  its hold on (the batch's changes may be missing from every moment after it);
- a record numbered below its chain's newest: what it recorded is unknown, so every moment up to
  the next record's time (plus the stream time margin) may lack a change.

The limit: the newest record of a chain names nothing after it, so deleting it together with what it
records goes unnoticed. S3 Object Lock (compliance mode on the store's prefix) closes that: no record
and no file can be deleted before its retention ends. ``docs/reliability.md`` says the same.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
import weakref
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from changelog.damage import damaged, read_json_object
from changelog.layout import (
    HOUR_US,
    MAX_SEQUENCE_DIGITS,
    capture_root,
    change_file_place,
    ledger_root,
    parse_change_file_name,
    quarantine_path,
    table_root,
)
from changelog.restorable import GAP_REMEDY, QUARANTINE_REMEDY, Loss
from changelog.store import Store
from changelog.timefmt import format_time, from_micros

# How long before a record is written a change it names may be stamped (changelog.gaps's margin).
_MARGIN_US = 5_000_000
_CHAIN = r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{16}"
# A fold of records (compactor.ledger_fold): JSON, fetched by every reader of the ledger.
FOLD = re.compile(r"folds/[0-9]{16}-[0-9a-f]{16}\.json")
_PARTITION = r"dt=[0-9]{4}-[0-9]{2}-[0-9]{2}~hour=[0-9]{2}"
# Names are kept without their extensions: no glob for *.parquet or *.json ever matches a record.
# A change file is named by its first and last sequence numbers as stored: DynamoDB's padded to 40
# digits, Kinesis's whole (56 digits today).
_SEQUENCE = f"[0-9]{{1,{MAX_SEQUENCE_DIGITS}}}"
_FILE = _SEQUENCE + "-" + _SEQUENCE + "-[0-9a-f]{32}"
_PENDING = _SEQUENCE + "-[0-9a-f]{16}"  # a pending batch: its first sequence number, its stream's digest
_RECORD = re.compile(
    r"(?P<chain>" + _CHAIN + r")/(?P<n>[0-9]{12})-(?P<written>[0-9]{16})~(?:"
    r"put~(?P<size>[0-9]{1,15})~(?P<put>" + _PARTITION + "~" + _FILE + r")"
    r"|del~(?P<del>" + _PARTITION + "~" + _FILE + r")"
    r"|gap~(?P<start>[0-9]{1,17}|x)~(?P<end>[0-9]{1,17})~(?P<gap>[A-Za-z0-9._-]{1,300})"
    r"|keep~(?P<kstart>[0-9]{1,17}|x)~(?P<kend>[0-9]{1,17})~(?P<keep>[0-9a-f]{16})"
    r"|drop~(?P<drop>[0-9a-f]{16})"
    r"|pend~(?P<hold>[0-9]{1,17}|x)~(?P<pend>" + _PENDING + "))")
_GAP_NAME = re.compile(r"[A-Za-z0-9._-]{1,300}\.json")
_QUARANTINED_NAME = re.compile(r"[0-9a-f]{16}\.json")
_PENDING_NAME = re.compile(_PENDING + r"\.json")

GAP_RECORD = "gap record"
CHANGE_FILE = "change file"
LEDGER_RECORD = "ledger record"
QUARANTINED_RECORD = "quarantined record"
PENDING_RECORD = "pending batch record"
MISSING_FILE_REMEDY = ("put it back from the bucket's object versions (or a copy of the store), or bootstrap a new "
                       "base with 'ddb-rewind bootstrap --scan' to restore moments after it")
MISSING_RECORD_REMEDY = ("put it back from the bucket's object versions (or a copy of the store), or bootstrap a "
                         "new base with 'ddb-rewind bootstrap --scan' to restore moments after it")


@dataclass(frozen=True)
class Record:
    """One ledger record, as its name says."""

    path: str
    chain: str
    number: int
    written_us: int
    kind: str  # "put", "del", "gap", "keep", "drop" or "pend"
    target: str  # the change file, gap, quarantined or pending record it names (a store path)
    size: int | None = None  # put: the file's bytes
    start_us: int | None = None  # gap and keep: the loss's bounds; pend: the hold
    end_us: int | None = None


@dataclass(frozen=True)
class Missing:
    """Something the ledger says the store holds and it does not: ``path`` and the loss it is."""

    path: str
    kind: str  # CHANGE_FILE, GAP_RECORD or LEDGER_RECORD
    problem: str  # a phrase after the path, for ``check``
    loss: Loss


@dataclass
class _Chain:
    name: str
    next_number: int = 0


_lock = threading.Lock()
# One chain per store object and table: a Lambda container's cached store, a command's store.
_chains: weakref.WeakKeyDictionary[Store, dict[str, _Chain]] = weakref.WeakKeyDictionary()


def _new_chain() -> _Chain:
    return _Chain(f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:16]}")


def _append(store: Store, table: str, entry: str) -> str:
    """Write one record at the end of this writer's chain in ``table``; returns its path."""
    with _lock:
        chains = _chains.setdefault(store, {})
        chain = chains.setdefault(table, _new_chain())
        path = f"{ledger_root(table)}{chain.name}/{chain.next_number:012d}-{time.time_ns() // 1000:016d}~{entry}"
        store.write(path, b"")
        chain.next_number += 1  # only once written: a failed write is retried under the same number
        return path


def _file_entry(path: str) -> tuple[str, str]:
    """(table, ``dt=...~hour=...~name``) of a change file path; ValueError when it is not one."""
    place = change_file_place(path)
    name = path.rsplit("/", 1)[-1]
    if place is None or parse_change_file_name(path) is None:
        raise ValueError(f"{path} is not a change file path")
    return place.table, f"{place.partition.replace('/', '~')}~{name.removesuffix('.parquet')}"


def record_published(store: Store, path: str, size: int) -> str:
    """Record that the change file ``path`` of ``size`` bytes is in the store; call after writing it."""
    table, entry = _file_entry(path)
    return _append(store, table, f"put~{size}~{entry}")


def record_removed(store: Store, paths: Iterable[str]) -> None:
    """Record that the store's own writer is deleting these change files; call before deleting them."""
    for path in paths:
        table, entry = _file_entry(path)
        _append(store, table, f"del~{entry}")


def record_gap(store: Store, table: str, path: str, start_us: int | None, end_us: int) -> str:
    """Record that the gap record ``path`` (its loss from ``start_us`` to ``end_us``) is in the store."""
    name = path.rsplit("/", 1)[-1]
    if not _GAP_NAME.fullmatch(name) or path != f"{table_root(table)}/gaps/{name}":
        raise ValueError(f"{path} is not a gap record of {table}")
    start = "x" if start_us is None else str(max(start_us, 0))
    return _append(store, table, f"gap~{start}~{max(end_us, 0)}~{name.removesuffix('.json')}")


def _bound(value: int | None) -> str:
    return "x" if value is None else str(max(value, 0))


def _quarantined_name(table: str, path: str) -> str | None:
    """The name (without ``.json``) of a quarantined record of ``table`` at ``path`` as capture names it, or None."""
    name = path.rsplit("/", 1)[-1].removesuffix(".json")
    return name if _QUARANTINED_NAME.fullmatch(name + ".json") and path == quarantine_path(table, name) else None


def record_kept(store: Store, table: str, path: str, start_us: int | None, end_us: int) -> str:
    """Record that the quarantined record ``path`` (its loss from ``start_us`` to ``end_us``) is in the store."""
    name = _quarantined_name(table, path)
    if name is None:
        raise ValueError(f"{path} is not a quarantined record of {table}")
    return _append(store, table, f"keep~{_bound(start_us)}~{max(end_us, 0)}~{name}")


def record_dropped(store: Store, table: str, paths: Iterable[str]) -> None:
    """Record that ``requeue`` or ``forget`` is removing these quarantined records; call before removing them.

    A document under another name (placed by hand, or moved from another table) was never kept by a
    ``keep`` record, so its removal has nothing to answer.
    """
    for path in paths:
        name = _quarantined_name(table, path)
        if name is not None:
            _append(store, table, f"drop~{name}")


def record_pending(store: Store, table: str, path: str, hold_us: int | None) -> str:
    """Record that the pending batch record ``path`` (coverage held at ``hold_us``) is in the store."""
    name = path.rsplit("/", 1)[-1]
    if not _PENDING_NAME.fullmatch(name) or path != f"{capture_root(table)}pending/{name}":
        raise ValueError(f"{path} is not a pending batch record of {table}")
    return _append(store, table, f"pend~{_bound(hold_us)}~{name.removesuffix('.json')}")


def parse_records(table: str, listing: Iterable[str]) -> tuple[list[Record], list[str]]:
    """The ledger records of ``table`` in a listing of its prefix, and the paths under the ledger that are none
    (a fold, read by ``read_ledger``, is neither)."""
    root = ledger_root(table)
    records: list[Record] = []
    foreign: list[str] = []
    for path in listing:
        if not path.startswith(root):
            continue
        record = parse_record(table, path)
        if record is not None:
            records.append(record)
        elif not FOLD.fullmatch(path[len(root):]):
            foreign.append(path)
    return records, foreign


def parse_record(table: str, path: str) -> Record | None:
    """The record a path under the table's ledger names; None when it names none."""
    match = _RECORD.fullmatch(path[len(ledger_root(table)):])
    if match is None:
        return None
    common = (path, match["chain"], int(match["n"]), int(match["written"]))
    if match["put"] is not None:
        return Record(*common, "put", _change_path(table, match["put"]), size=int(match["size"]))
    if match["del"] is not None:
        return Record(*common, "del", _change_path(table, match["del"]))
    if match["keep"] is not None:
        return Record(*common, "keep", quarantine_path(table, match["keep"]), start_us=_time(match["kstart"]),
                      end_us=int(match["kend"]))
    if match["drop"] is not None:
        return Record(*common, "drop", quarantine_path(table, match["drop"]))
    if match["pend"] is not None:
        return Record(*common, "pend", f"{capture_root(table)}pending/{match['pend']}.json",
                      start_us=_time(match["hold"]))
    return Record(*common, "gap", f"{table_root(table)}/gaps/{match['gap']}.json", start_us=_time(match["start"]),
                  end_us=int(match["end"]))


def _time(text: str) -> int | None:
    return None if text == "x" else int(text)


@dataclass(frozen=True)
class Ledger:
    """The table's ledger as its records and folds say.

    ``records``: those listed and those the folds carry; ``folded``: per chain, the number below which
    its records were folded; ``folds``: the fold objects' paths; ``foreign``: other objects under it.
    """

    records: list[Record]
    foreign: list[str]
    folded: dict[str, int]
    folds: list[str]


def read_ledger(store: Store, table: str, listing: Sequence[str]) -> Ledger:
    """The ledger of ``table`` from a listing of its prefix: its records, and what its folds carry.

    A fold (``compactor.ledger_fold``) stands for each chain's records below a number: it carries
    those that still say something and replaces their objects; the put and del of a file removed on
    purpose say nothing more together and are dropped. A fold that does not parse is a damaged store.
    """
    records, foreign = parse_records(table, listing)
    root = ledger_root(table)
    folds = sorted(path for path in listing if path.startswith(root) and FOLD.fullmatch(path[len(root):]))
    by_path = {record.path: record for record in records}
    folded: dict[str, int] = {}
    for path in folds:
        body = read_json_object(store, path)
        chains, carried = body.get("chains"), body.get("records")
        if not isinstance(chains, dict) or not isinstance(carried, list) \
                or not all(isinstance(c, str) and re.fullmatch(_CHAIN, c) and isinstance(n, int)
                           and not isinstance(n, bool) and n >= 0 for c, n in chains.items()) \
                or not all(isinstance(name, str) for name in carried):
            raise damaged(store, path, "is not a sound ledger fold (chains, records)")
        for name in carried:
            record = parse_record(table, root + name)
            if record is None or record.number >= chains.get(record.chain, 0):
                raise damaged(store, path, f"carries {name[:80]!r}, which is no record it folded")
            by_path.setdefault(record.path, record)
        for chain, below in chains.items():
            folded[chain] = max(folded.get(chain, 0), below)
    return Ledger(sorted(by_path.values(), key=lambda r: r.path), foreign, folded, folds)


def _change_path(table: str, entry: str) -> str:
    day, hour, name = entry.split("~")
    return f"{table_root(table)}/changes/{day}/{hour}/{name}.parquet"


def find_missing(store: Store, table: str, listing: Sequence[str], records: Sequence[Record],
                 gap_records: Iterable[str], folded: Mapping[str, int] | None = None) -> tuple[Missing, ...]:
    """What the ledger records and the store no longer holds, unless its own writer removed it.

    ``listing`` is of the table's prefix; ``gap_records`` the gap record paths known otherwise
    (listed by a checkpoint); ``folded`` what ``read_ledger`` says the folds stand for. A suspect is
    looked up once more before it is reported: a listing is not one instant, and a writer may have
    added a file and its record while it ran.
    """
    present = set(listing)
    known_gaps = set(gap_records)
    removed = {r.target for r in records if r.kind == "del"}
    # A quarantined record may be dropped (requeue) and kept again (a later batch held the same record):
    # what its latest record says stands.
    latest = {r.target: r for r in sorted((r for r in records if r.kind in ("keep", "drop")),
                                          key=lambda r: (r.written_us, r.chain, r.number))}
    found: dict[str, Missing] = {}
    for record in records:
        if record.target in present or record.target in found:
            continue
        if record.kind == "put" and record.target not in removed and not store.exists(record.target):
            found[record.target] = _missing_file(record)
        if record.kind == "gap" and record.target not in known_gaps and not store.exists(record.target):
            found[record.target] = _missing_gap(record)
        if record.kind == "keep" and latest[record.target].kind == "keep" and not store.exists(record.target):
            found[record.target] = _missing_quarantined(latest[record.target])
        if record.kind == "pend" and not _settled(table, record, present) and not store.exists(record.target):
            found[record.target] = _missing_pending(record)
    for hole in _holes(store, table, records, folded or {}):
        found[hole.path] = hole
    return tuple(found[path] for path in sorted(found))


def _missing_file(record: Record) -> Missing:
    place = change_file_place(record.target)
    assert place is not None  # parse_records built the path from a checked partition
    loss = Loss(place.hour_us, place.hour_us + HOUR_US - 1,
                f"a missing change file {record.target} (written by capture, removed by no merge or expire)",
                MISSING_FILE_REMEDY)
    problem = (f"is missing: the ledger record {record.path} says capture published it ({record.size} bytes) "
               "and no merge or expire removed it")
    return Missing(record.target, CHANGE_FILE, problem, loss)


def _missing_gap(record: Record) -> Missing:
    assert record.end_us is not None
    start = "an unknown time" if record.start_us is None else format_time(from_micros(record.start_us))
    bounds = f"from {start} to {format_time(from_micros(record.end_us))}"
    loss = Loss(record.start_us, record.end_us, f"a gap whose record {record.target} is missing ({bounds})",
                GAP_REMEDY)
    problem = f"is missing: the ledger record {record.path} says a gap was recorded here ({bounds})"
    return Missing(record.target, GAP_RECORD, problem, loss)


def _missing_quarantined(record: Record) -> Missing:
    assert record.end_us is not None
    name = record.target.rsplit("/", 1)[-1]
    loss = Loss(record.start_us, record.end_us,
                f"a missing quarantined record {name} (kept by capture, dropped by no requeue or forget)",
                MISSING_RECORD_REMEDY, "quarantine")
    problem = (f"is missing: the ledger record {record.path} says capture kept a record here that it could not "
               f"decode, and no requeue or forget removed it ({QUARANTINE_REMEDY} once it is back)")
    return Missing(record.target, QUARANTINED_RECORD, problem, loss)


def _settled(table: str, record: Record, present: set[str]) -> bool:
    """Whether a stored batch record from the pending batch's first sequence number, of its stream, is listed."""
    first, stream = record.target.rsplit("/", 1)[-1].removesuffix(".json").split("-")
    prefix = f"{capture_root(table)}batches/{first}-"
    return any(path.startswith(prefix) and path.endswith(f"-{stream}.json") for path in present)


def _missing_pending(record: Record) -> Missing:
    # The batch failed before its record was written: its changes are stamped from just after the hold
    # until then.
    start = None if record.start_us is None else record.start_us + 1
    loss = Loss(start, record.written_us + _MARGIN_US,
                f"a missing pending batch record {record.target} (a failed batch no stored record settles)",
                MISSING_RECORD_REMEDY)
    problem = (f"is missing: the ledger record {record.path} says a stream batch failed here, and no stored "
               "record says it was stored since")
    return Missing(record.target, PENDING_RECORD, problem, loss)


def _holes(store: Store, table: str, records: Sequence[Record], folded: Mapping[str, int]) -> list[Missing]:
    """Records missing inside a chain (numbers below its newest that no record carries and no fold stands for)."""
    by_chain: dict[str, dict[int, int]] = defaultdict(dict)
    for record in records:
        by_chain[record.chain][record.number] = record.written_us
    holes: list[Missing] = []
    for chain, numbers in sorted(by_chain.items()):
        below = folded.get(chain, 0)
        if all(number in numbers for number in range(below, max(numbers))):
            continue
        # Listed again: a writer may have written the later records while the listing passed.
        again, _ = parse_records(table, store.list(f"{ledger_root(table)}{chain}/"))
        numbers = {**numbers, **{r.number: r.written_us for r in again}}
        for number in range(below, max(numbers)):
            if number in numbers:
                continue
            later = min(written for n, written in numbers.items() if n > number)
            path = f"{ledger_root(table)}{chain}/{number:012d}"
            loss = Loss(None, later + _MARGIN_US, f"a missing ledger record {path} (what it recorded is unknown)",
                        MISSING_RECORD_REMEDY)
            problem = (f"is missing: record {number} of the ledger chain {chain}, whose later records are there; "
                       "the change file or gap it recorded cannot be known")
            holes.append(Missing(path, LEDGER_RECORD, problem, loss))
    return holes


def missing_losses(store: Store, table: str, listing: Sequence[str], gap_records: Iterable[str]) -> list[Loss]:
    """The losses coverage counts for what went missing (``find_missing``); foreign names are ``check``'s."""
    ledger = read_ledger(store, table, listing)
    return [missing.loss for missing in find_missing(store, table, listing, ledger.records, gap_records,
                                                     ledger.folded)]
