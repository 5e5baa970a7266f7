"""Readers stay exact when a merge replaces the files they listed.

The race is made deterministic: the store runs a real merge of every closed hour right after it
hands a reader its first listing of change files, so every listed original is gone by the time the
reader opens it. A reader must list again and give the same answer as without the merge.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from changelog.codec import decode_lambda_record
from changelog.errors import FileVanished
from changelog.state import change_files
from changelog.store import LocalStore
from compactor.merge import merge_small_files
from compactor.snapshots import build_snapshot
from replayer.engines.views import SqlSession
from replayer.forensics.diff import diff_states
from replayer.forensics.history import item_history
from replayer.restoring.replay import open_items
from stream_consumer.capture import capture_batch
from tests.model import Op, model_state, stream_records

TABLE = "orders"
T0 = 1_700_000_000
OPS = [Op(i % 3, {"pk": {"S": "abc"[i % 3]}, "n": {"N": str(i)}}, T0 + 900 * i) for i in range(12)]
RECORDS = stream_records(TABLE, OPS)
END = OPS[-1].second


class MergedUnderfoot(LocalStore):
    """A local store where another compactor merges every closed hour just after a listing of changes."""

    def __init__(self, root: Path, merges: int = 1) -> None:
        super().__init__(root)
        self.merges_left = merges

    def list(self, prefix: str) -> list[str]:
        found = super().list(prefix)
        if self.merges_left and "/changes" in prefix and any(p.endswith(".parquet") for p in found):
            self.merges_left -= 1
            merge_small_files(LocalStore(self.root), TABLE, (END + 7200) * 1_000_000)
        return found


@pytest.fixture
def racing(tmp_path: Path) -> MergedUnderfoot:
    plain = LocalStore(tmp_path)
    for start in range(0, len(RECORDS), 2):
        capture_batch(plain, RECORDS[start:start + 2], decode_lambda_record, source="test")
    return MergedUnderfoot(tmp_path)


def test_a_replay_during_a_merge_equals_the_model(racing: MergedUnderfoot) -> None:
    con = open_items(racing, TABLE, datetime.fromtimestamp(END, tz=UTC))
    assert dict(con.execute("SELECT item_key, image FROM items").fetchall()) == model_state(OPS, END)
    assert racing.merges_left == 0


def test_a_diff_during_a_merge_equals_the_model(racing: MergedUnderfoot) -> None:
    diff = diff_states(racing, TABLE, T0 * 1_000_000, END * 1_000_000)
    assert len(diff.all()) == len(model_state(OPS, END))


def test_a_history_during_a_merge_lists_every_version(racing: MergedUnderfoot) -> None:
    versions = item_history(racing, TABLE, '{"pk":{"S":"a"}}')
    assert len(versions) == sum(1 for op in OPS if op.key_index == 0)


def test_a_snapshot_built_during_a_merge_holds_the_model(racing: MergedUnderfoot) -> None:
    manifest = build_snapshot(racing, TABLE, END * 1_000_000)
    assert manifest.items == len(model_state(OPS, END))


def test_an_sql_session_opened_during_a_merge_sees_every_change(racing: MergedUnderfoot) -> None:
    result = SqlSession(racing).query("SELECT count(*) FROM changes")
    assert racing.merges_left == 0
    assert result is not None and result[1] == [(len(RECORDS),)]


def test_an_sql_query_after_a_merge_replaced_the_sessions_files_sees_every_change(
        racing: MergedUnderfoot) -> None:
    racing.merges_left = 0
    session = SqlSession(racing)
    merge_small_files(LocalStore(racing.root), TABLE, (END + 7200) * 1_000_000)
    result = session.query("SELECT count(*) FROM changes")
    assert result is not None and result[1] == [(len(RECORDS),)]


def test_the_loser_of_two_racing_merges_finishes_without_an_error(racing: MergedUnderfoot) -> None:
    # This merge lists the originals; the other compactor then merges and deletes them.
    merge_small_files(racing, TABLE, (END + 7200) * 1_000_000)
    files = change_files(LocalStore(racing.root), TABLE)
    assert len({path.split("/")[-2] for path in files}) == len(files)  # one file per hour left
    con = open_items(LocalStore(racing.root), TABLE, datetime.fromtimestamp(END, tz=UTC))
    assert dict(con.execute("SELECT item_key, image FROM items").fetchall()) == model_state(OPS, END)


def test_a_store_that_keeps_changing_is_refused_in_one_line(tmp_path: Path) -> None:
    plain = LocalStore(tmp_path)
    for start in range(0, len(RECORDS), 2):
        capture_batch(plain, RECORDS[start:start + 2], decode_lambda_record, source="test")

    class Churning(LocalStore):
        def list(self, prefix: str) -> list[str]:
            found = super().list(prefix)
            if "/changes" in prefix:
                for path in found:  # every listed change file is replaced by a copy under a new name
                    data = (self.root / path).read_bytes()
                    (self.root / path).unlink()
                    (self.root / (path[:-8] + "0.parquet")).write_bytes(data)
            return found

    with pytest.raises(FileVanished, match="kept being replaced"):
        item_history(Churning(tmp_path), TABLE, '{"pk":{"S":"a"}}')
