"""Folding the ledger: its records below each chain's newest replaced by one object.

Every change file leaves a put record, and a merge or expire a del record for each file it removes
(``changelog.ledger``): two empty objects per captured batch, which every coverage read lists, for
ever (100,000 of them took a local coverage read from 0.04 s to 3.3-3.9 s; on S3 they are 100
LIST calls). Each compaction folds them: a chain's records up to its first missing number (a hole stays
a hole, reported as before) and never its newest (so a chain whose fold went missing shows its whole
past as missing records). The fold carries what still says something (a put whose file no folded
del removed, a del whose put is in the ledger and not folded with it, a gap, a pending batch, the
keeps and drops of a quarantined record until all of them are folded together with a drop last, and
the put and del of every file an erasure names, which ``check`` reads) and drops the rest.
``changelog.ledger.read_ledger`` reads both alike.

Write first, delete last: the new fold, naming what the folds before it carried; then the old folds;
then the put records, then the rest (a del deleted before its put would make the put's file look
missing). A run stopped anywhere leaves the records and folds readers union.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass

from changelog.forgotten import read_erasures
from changelog.layout import forgotten_root, ledger_root
from changelog.ledger import Record, read_ledger
from changelog.store import Store

# Deletions per run (1,000 a call on S3): a first fold of a large ledger is spread over several runs
# (each run's fold carries what is still listed below it; the next deletes the rest).
MAX_DELETES = 20_000


@dataclass(frozen=True)
class _Fold:
    """One run's fold: the object to write, the folds it replaces and the records it deletes, in that order."""

    path: str
    body: bytes
    old_folds: tuple[str, ...]
    puts: tuple[str, ...]
    dels: tuple[str, ...]  # and gaps: the records deleted once the puts are


def fold_ledger(store: Store, table: str, max_deletes: int = MAX_DELETES) -> int:
    """Fold the table's ledger; returns how many record objects this run deleted."""
    fold = _plan(store, table, max_deletes)
    if fold is None:
        return 0
    store.write(fold.path, fold.body)
    store.delete_many(fold.old_folds)
    # Puts first (see _plan): the dels only once every put is gone.
    store.delete_many(fold.puts)
    store.delete_many(fold.dels)
    return len(fold.puts) + len(fold.dels)


def foldable_records(store: Store, table: str, max_deletes: int = MAX_DELETES) -> int:
    """How many record objects ``fold_ledger`` would delete now (nothing is written)."""
    fold = _plan(store, table, max_deletes)
    return 0 if fold is None else len(fold.puts) + len(fold.dels)


def _plan(store: Store, table: str, max_deletes: int) -> _Fold | None:
    root = ledger_root(table)
    listing = store.list(root)
    ledger = read_ledger(store, table, listing)
    listed = {path for path in listing if path.startswith(root)}
    numbers: dict[str, set[int]] = defaultdict(set)
    for record in ledger.records:
        if record.path in listed:
            numbers[record.chain].add(record.number)
    below = dict(ledger.folded)
    for chain, present in numbers.items():
        end = ledger.folded.get(chain, 0)
        while end < max(present) and end in present:
            end += 1
        below[chain] = end
    folding = [record for record in ledger.records if record.number < below.get(record.chain, 0)]
    gone = [record for record in folding if record.path in listed]
    if not gone:
        return None
    named = {path for erasure in read_erasures(store, table, store.list(forgotten_root(table)))
             for swap in erasure.replaced for path in (swap.old, swap.new) if path}
    settled = ({r.target for r in folding if r.kind == "put"} & {r.target for r in folding if r.kind == "del"}) - named
    published = {r.target for r in ledger.records if r.kind == "put"}
    # A quarantined record whose last record is a drop, with every record of it in this fold: its keeps
    # and drops say nothing more together. While any of them stays outside the fold (a chain's newest
    # is never folded), they all say something: a keep left alone would be read as the last word.
    quarantined = [r for r in ledger.records if r.kind in ("keep", "drop")]
    last = {r.target: r.kind for r in sorted(quarantined, key=lambda r: (r.written_us, r.chain, r.number))}
    folded_paths = {r.path for r in folding}
    unfolded = {r.target for r in quarantined if r.path not in folded_paths}
    dropped = {target for target, kind in last.items() if kind == "drop" and target not in unfolded}

    def carried(record: Record) -> bool:
        if record.kind in ("gap", "pend"):
            return True
        if record.kind in ("keep", "drop"):
            return record.target not in dropped
        # A del says something only beside its put (one from before the ledger, or folded away, has none).
        return record.target not in settled and (record.kind == "put" or record.target in published)

    kept = sorted(record.path[len(root):] for record in folding if carried(record))
    body = json.dumps({"chains": dict(sorted(below.items())), "records": kept}, sort_keys=True).encode("utf-8")
    # Puts first: a del deleted while its put is still listed would make the put's file look missing.
    doomed = sorted(gone, key=lambda r: r.kind != "put")[:max_deletes]
    return _Fold(f"{root}folds/{time.time_ns() // 1000:016d}-{hashlib.sha256(body).hexdigest()[:16]}.json", body,
                 tuple(ledger.folds), tuple(record.path for record in doomed if record.kind == "put"),
                 tuple(record.path for record in doomed if record.kind != "put"))
