"""Folding the ledger never changes what it says is missing, and a fold that goes missing is noticed.

The ledger leaves two empty objects per captured batch (a put, and a del when a merge removes the
file), each listed by every coverage read; each compaction folds them (compactor/ledger_fold.py).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from changelog.errors import DamagedStore
from changelog.layout import ledger_root, table_root
from changelog.ledger import (
    LEDGER_RECORD,
    Missing,
    find_missing,
    read_ledger,
    record_gap,
    record_published,
    record_removed,
)
from changelog.store import LocalStore, Store
from compactor.ledger_fold import fold_ledger

TABLE = "orders"
HOUR = 3_600_000_000


def _file(number: int) -> str:
    first, last = str(10**20 + number * 10), str(10**20 + number * 10 + 9)
    return f"{table_root(TABLE)}/changes/dt=2025-06-15/hour=10/{first}-{last}-{'0' * 32}.parquet"


def _gap(number: int) -> str:
    return f"{table_root(TABLE)}/gaps/shardId-{number}-1-2.json"


def _missing(store: Store) -> list[tuple[str, str, int | None, int]]:
    """What the ledger says is missing, as coverage and check read it."""
    listing = store.list(table_root(TABLE) + "/")
    ledger = read_ledger(store, TABLE, listing)
    found: tuple[Missing, ...] = find_missing(store, TABLE, listing, ledger.records, [], ledger.folded)
    return [(m.path, m.kind, m.loss.start_us, m.loss.end_us) for m in found]


# One step of the store's writers: a writer (a chain) publishes a file, removes one (a merge),
# records a gap, a file or gap record goes missing (what the ledger is there to notice), or a fold.
steps = st.lists(st.one_of(
    st.tuples(st.just("put"), st.integers(0, 3), st.integers(0, 30)),
    st.tuples(st.just("del"), st.integers(0, 3), st.integers(0, 30)),
    st.tuples(st.just("gap"), st.integers(0, 3), st.integers(0, 5)),
    st.tuples(st.just("lose"), st.just(0), st.integers(0, 30)),
    st.tuples(st.just("lose-gap"), st.just(0), st.integers(0, 5)),
    st.tuples(st.just("fold"), st.just(0), st.sampled_from([1, 2, 5, 20_000])),  # at most this many deletions
), max_size=40)


def _lost(store: Store) -> list[tuple[str, str, int | None, int]]:
    """What the ledger says is missing among files and gap records (named alike in any store)."""
    return [finding for finding in _missing(store) if finding[1] != LEDGER_RECORD]


@settings(max_examples=60, deadline=None)
@given(steps)
def test_folding_never_changes_what_the_ledger_says_is_missing(plan: list[tuple[str, int, int]]) -> None:
    # The same writes into two stores; only the second is folded, whenever the plan says.
    with tempfile.TemporaryDirectory() as plain_root, tempfile.TemporaryDirectory() as folded_root:
        writers = {root: [LocalStore(Path(root)) for _ in range(4)] for root in (plain_root, folded_root)}
        plain, folded = writers[plain_root][0], writers[folded_root][0]
        published: set[int] = set()
        for kind, writer, number in plan:
            if kind == "fold":
                before = _missing(folded)
                fold_ledger(folded, TABLE, max_deletes=number)
                assert _missing(folded) == before
                assert _lost(folded) == _lost(plain)
                continue
            for chains in writers.values():
                chain = chains[writer]
                if kind == "put" and number not in published:
                    chain.write(_file(number), b"x")
                    record_published(chain, _file(number), 1)
                elif kind == "del" and number in published:
                    record_removed(chain, [_file(number)])
                    chain.delete(_file(number))
                elif kind == "gap":
                    chain.write(_gap(number), b"{}")
                    record_gap(chain, TABLE, _gap(number), number * HOUR, number * HOUR + 1)
                elif kind == "lose":
                    chain.delete(_file(number))
                elif kind == "lose-gap":
                    chain.delete(_gap(number))
            if kind == "put":
                published.add(number)
            elif kind == "del":
                published.discard(number)
        before = _missing(folded)
        fold_ledger(folded, TABLE)
        assert _missing(folded) == before
        assert _lost(folded) == _lost(plain)
        assert fold_ledger(folded, TABLE) == 0  # nothing left to fold but each chain's newest
        # A fold carries only what still says something: no file's put and del both, no del without a put.
        listing = folded.list(table_root(TABLE) + "/")
        ledger = read_ledger(folded, TABLE, listing)
        only_folded = [record for record in ledger.records if record.path not in listing]
        puts = {record.target for record in only_folded if record.kind == "put"}
        dels = {record.target for record in only_folded if record.kind == "del"}
        assert not puts & dels
        assert dels <= {record.target for record in ledger.records if record.kind == "put"}


def test_a_missing_record_stays_missing_after_a_fold(store: Store) -> None:
    _history(store, 10)
    capture = sorted(path for path in store.list(ledger_root(TABLE)) if "~put~" in path)
    store.delete(capture[3])  # a record below its chain's newest: what it recorded is unknown
    before = _missing(store)
    assert [kind for _path, kind, *_ in before] == [LEDGER_RECORD]
    fold_ledger(store, TABLE)
    assert _missing(store) == before


def _history(store: Store, files: int) -> None:
    """A capture chain publishing ``files`` files, and a merge chain removing all but the last."""
    capture, merge = LocalStore(store.local_root() or Path()), LocalStore(store.local_root() or Path())
    for number in range(files):
        capture.write(_file(number), b"x")
        record_published(capture, _file(number), 1)
    record_removed(merge, [_file(number) for number in range(files - 1)])
    for number in range(files - 1):
        merge.delete(_file(number))


def _ledger_objects(store: Store) -> list[str]:
    return [path for path in store.list(ledger_root(TABLE)) if "/folds/" not in path]


def test_a_fold_replaces_all_but_each_chains_newest_record(store: Store) -> None:
    _history(store, 10)
    assert len(_ledger_objects(store)) == 19
    assert fold_ledger(store, TABLE) == 17
    assert len(_ledger_objects(store)) == 2
    assert _missing(store) == []


def test_a_file_lost_after_its_put_was_folded_is_still_missing(store: Store) -> None:
    _history(store, 10)
    capture = LocalStore(store.local_root() or Path())
    capture.write(_file(20), b"x")
    record_published(capture, _file(20), 1)
    record_published(capture, _file(21), 1)  # the chain's newest: file 20's put is folded
    fold_ledger(store, TABLE)
    store.delete(_file(20))
    assert [path for path, *_ in _missing(store)] == [_file(20), _file(21)]


def test_a_deleted_fold_shows_the_records_it_stood_for_as_missing(store: Store) -> None:
    _history(store, 10)
    fold_ledger(store, TABLE)
    (fold,) = [path for path in store.list(ledger_root(TABLE)) if "/folds/" in path]
    store.delete(fold)
    kinds = [kind for _path, kind, *_ in _missing(store)]
    assert kinds and set(kinds) == {LEDGER_RECORD}


def test_a_fold_that_does_not_parse_is_a_damaged_store(store: Store) -> None:
    _history(store, 3)
    fold_ledger(store, TABLE)
    (fold,) = [path for path in store.list(ledger_root(TABLE)) if "/folds/" in path]
    store.write(fold, b'{"chains": {"../x": 1}, "records": []}')
    with pytest.raises(DamagedStore, match="ledger fold"):
        _missing(store)



def test_a_fold_stopped_by_its_deletion_cap_is_finished_by_the_next_and_carries_nothing_settled(
        store: Store) -> None:
    _history(store, 10)
    assert fold_ledger(store, TABLE, max_deletes=3) == 3  # three puts, their dels still listed
    assert _missing(store) == []
    assert fold_ledger(store, TABLE) == 14
    assert _missing(store) == []
    (fold,) = [path for path in store.list(ledger_root(TABLE)) if "/folds/" in path]
    # Of every folded record only one still says something: file 8's put, whose del is its chain's newest.
    (carried,) = json.loads(store.read(fold))["records"]
    assert "~put~" in carried and _file(8).rsplit("/", 1)[-1].removesuffix(".parquet") in carried
