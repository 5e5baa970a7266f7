"""The DynamoDB Streams poller (``ddb-rewind consume``): capture, resume, refusals, shard lineage, gaps."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError

from changelog.errors import StreamConfigError, TableNotFound
from changelog.gaps import STREAM_CLOCK_STEP_US, STREAM_TIME_MARGIN_US, read_gaps
from changelog.layout import changes_root, checkpoint_path, checkpoints_root, meta_path, table_root
from changelog.settings import history
from changelog.state import coverage
from changelog.store import Store
from ddb_rewind.cli import main
from replayer.engines.views import open_sql
from stream_consumer.checkpoint import Checkpoint, write_checkpoint
from stream_consumer.poller import CAUGHT_UP_PAGES, Shard, StreamReadError, parent_first, poll

TABLE = "orders"


def make_table(name: str = TABLE, view: str | None = "NEW_AND_OLD_IMAGES") -> Any:
    client = boto3.client("dynamodb")
    extra: dict[str, Any] = {}
    if view:
        extra["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": view}
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        **extra,
    )
    return client


def change_rows(store: Store, table: str = TABLE) -> list[dict[str, Any]]:
    """Every row of every change file, duplicates included (to catch a record read twice)."""
    rows: list[dict[str, Any]] = []
    root = store.local_root()
    assert root is not None
    for path in store.list(changes_root(table) + "/"):
        rows.extend(pq.read_table(root / path).to_pylist())
    return rows


def change_files(store: Store, table: str = TABLE) -> list[str]:
    return [p for p in store.list(changes_root(table) + "/") if p.endswith(".parquet")]


# --- with moto ---------------------------------------------------------------------------------


def test_captures_puts_updates_and_deletes(aws: None, store: Store) -> None:
    client = make_table()
    client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}, "n": {"N": "1"}})
    client.update_item(TableName=TABLE, Key={"pk": {"S": "a"}}, UpdateExpression="SET n = :v",
                       ExpressionAttributeValues={":v": {"N": "12345678901234567890123456789012345678"}})
    client.delete_item(TableName=TABLE, Key={"pk": {"S": "a"}})

    summary = poll(store, TABLE, once=True)

    rows = open_sql(store).sql(
        "SELECT event_name, new_image, old_image, shard_id FROM changes ORDER BY sequence_number"
    ).fetchall()
    assert [r[0] for r in rows] == ["INSERT", "MODIFY", "REMOVE"]
    assert json.loads(rows[1][1])["n"] == {"N": "12345678901234567890123456789012345678"}
    assert json.loads(rows[2][2])["pk"] == {"S": "a"}
    assert all(r[3] for r in rows)
    assert (summary.captured, summary.quarantined, summary.shards, summary.gaps) == (3, 0, 1, 0)


def test_writes_the_table_meta_when_missing(aws: None, store: Store) -> None:
    make_table()
    poll(store, TABLE, once=True)
    meta = json.loads(store.read(meta_path(TABLE)))
    assert meta["key_schema"][0]["AttributeName"] == "pk"


def test_binary_attributes_come_out_as_base64_text(aws: None, store: Store) -> None:
    client = make_table()
    client.put_item(TableName=TABLE, Item={"pk": {"S": "b"}, "blob": {"B": b"\x00\xffdata"},
                                           "blobs": {"BS": [b"\x01", b"\x02"]}})
    poll(store, TABLE, once=True)
    ((image,),) = open_sql(store).sql("SELECT new_image FROM changes").fetchall()
    item = json.loads(image)
    assert item["blob"] == {"B": "AP9kYXRh"}
    assert sorted(item["blobs"]["BS"]) == ["AQ==", "Ag=="]


def test_resumes_from_its_checkpoint_without_duplicates(aws: None, store: Store) -> None:
    client = make_table()
    for key in ("a", "b"):
        client.put_item(TableName=TABLE, Item={"pk": {"S": key}})
    first = poll(store, TABLE, once=True)
    for key in ("c", "d", "e"):
        client.put_item(TableName=TABLE, Item={"pk": {"S": key}})

    second = poll(store, TABLE, once=True)

    assert (first.captured, second.captured) == (2, 3)
    rows = change_rows(store)
    assert len(rows) == 5
    assert len({row["event_id"] for row in rows}) == 5


def test_a_second_once_with_nothing_new_writes_no_change_file(aws: None, store: Store) -> None:
    client = make_table()
    client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})
    poll(store, TABLE, once=True)
    before = change_files(store)

    again = poll(store, TABLE, once=True)

    assert again.captured == 0
    assert change_files(store) == before


def test_the_checkpoint_sets_the_watermark(aws: None, store: Store) -> None:
    client = make_table()
    client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})
    poll(store, TABLE, once=True)

    (path,) = store.list(checkpoints_root(TABLE))
    body = json.loads(store.read(path))
    assert body["closed"] is False
    assert isinstance(body["watermark_us"], int)
    assert body["sequence_number"].isdigit()
    assert coverage(store, TABLE).latest_us == body["watermark_us"]


def test_keys_only_stream_is_refused_with_one_line(aws: None, store: Store, capsys: Any) -> None:
    make_table(view="KEYS_ONLY")
    code = main(["consume", "--table", TABLE, "--store", store.uri, "--once"])
    err = capsys.readouterr().err
    assert code != 0
    assert len(err.strip().splitlines()) == 1
    assert "KEYS_ONLY" in err and "Traceback" not in err


def test_old_image_stream_is_refused(aws: None, store: Store) -> None:
    make_table(view="OLD_IMAGE")
    with pytest.raises(StreamConfigError, match="OLD_IMAGE"):
        poll(store, TABLE, once=True)


def test_table_without_stream_is_refused(aws: None, store: Store) -> None:
    make_table(view=None)
    with pytest.raises(StreamConfigError, match="no stream"):
        poll(store, TABLE, once=True)


def test_unknown_table_is_refused(aws: None, store: Store, capsys: Any) -> None:
    with pytest.raises(TableNotFound):
        poll(store, "nope", once=True)
    code = main(["consume", "--table", "nope", "--store", store.uri, "--once"])
    assert code != 0
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_cli_prints_a_one_line_summary(aws: None, store: Store, capsys: Any) -> None:
    client = make_table()
    client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})
    code = main(["consume", "--table", TABLE, "--store", store.uri, "--once"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.strip().splitlines() == [
        f"consume {TABLE}: 1 records captured, 0 quarantined, 1 files, 1 shard, 0 gaps"
    ]


def test_ctrl_c_keeps_what_was_read_and_exits_130(aws: None, store: Store, capsys: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from stream_consumer import poller

    client = make_table()
    client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})
    real_round = poller._Session.round
    rounds: list[int] = []

    def round_then_ctrl_c(self: Any) -> int:
        rounds.append(1)
        if len(rounds) > 1:
            raise KeyboardInterrupt  # Ctrl-C while the second round runs
        return int(real_round(self))

    monkeypatch.setattr(poller._Session, "round", round_then_ctrl_c)
    code = main(["consume", "--table", TABLE, "--store", store.uri, "--poll-interval", "0"])

    assert code == 130
    out = capsys.readouterr().out
    assert "1 records captured" in out and out.rstrip().endswith("(interrupted)")
    assert len(change_rows(store)) == 1


def test_without_once_it_stops_after_max_seconds(aws: None, store: Store) -> None:
    client = make_table()
    client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})
    # A clock that moves only while the poller sleeps: the outcome does not depend on how loaded the machine is.
    now = [0.0]

    def pause(seconds: float) -> None:
        now[0] += seconds

    summary = poll(store, TABLE, once=False, poll_interval=0.01, max_seconds=0.05, sleep=pause, clock=lambda: now[0])
    assert summary.captured == 1
    assert summary.rounds >= 1 and now[0] == pytest.approx(0.05)


def test_consume_records_the_table_settings_when_it_starts(aws: None, store: Store) -> None:
    client = make_table()
    client.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "exp"})
    poll(store, TABLE, once=True)
    (version,) = history(store, TABLE)
    assert version.settings["ttl"]["AttributeName"] == "exp"


def test_a_long_poll_records_changed_settings_again_after_the_interval(
        aws: None, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from stream_consumer import poller

    client = make_table()
    arn = client.describe_table(TableName=TABLE)["Table"]["TableArn"]
    monkeypatch.setattr(poller, "SETTINGS_EVERY_S", 0.0)

    def tag_while_idle(_: float) -> None:
        if not client.list_tags_of_resource(ResourceArn=arn)["Tags"]:
            client.tag_resource(ResourceArn=arn, Tags=[{"Key": "owner", "Value": "ops"}])

    poll(store, TABLE, once=False, poll_interval=0.0, max_seconds=0.5, sleep=tag_while_idle)
    versions = history(store, TABLE)
    assert versions[0].settings["tags"] == [] and versions[-1].settings["tags"] == [{"Key": "owner", "Value": "ops"}]


def test_a_settings_read_that_fails_is_one_warning_and_capture_goes_on(aws: None, store: Store, capsys: Any) -> None:
    client = make_table()
    client.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})
    store.write(f"{table_root(TABLE)}/settings/{1:016d}-damaged.json", b"{not json")
    summary = poll(store, TABLE, once=True)
    assert summary.captured == 1
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"ddb-rewind: warning: the settings of table {TABLE!r} were not recorded this time")


# --- hand-built streams (moto has one shard and cannot expire or trim) --------------------------

ARN = f"arn:aws:dynamodb:us-east-1:123456789012:table/{TABLE}/stream/2024-01-01T00:00:00.000"


def getrecords_record(sequence: int, key: str) -> dict[str, Any]:
    """A record shaped as boto3's GetRecords returns it (datetime, bytes for binaries)."""
    return {
        "eventID": f"evt-{sequence}",
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": datetime(2024, 1, 1, 0, 0, sequence % 60, tzinfo=UTC),
            "Keys": {"pk": {"S": key}},
            "NewImage": {"pk": {"S": key}},
            "SequenceNumber": str(100 + sequence),
            "SizeBytes": 10,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


def client_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, operation)


@pytest.fixture
def dynamodb(aws: None) -> Any:
    """The table in moto: DescribeTable and the settings reads are real; only its stream is hand-built."""
    return make_table()


class FakeStreams:
    """A DynamoDB Streams client over hand-built shards; logs every call.

    ``shards``: shard id -> (parent id, records, closed). Iterators are ``shard|position``;
    ``trimmed`` holds sequence numbers no longer in the stream; ``expire_at_call`` makes that
    GetRecords call fail with ExpiredIteratorException.
    """

    def __init__(self, shards: dict[str, tuple[str | None, list[dict[str, Any]], bool]], *,
                 batch: int = 2, trimmed: set[str] | None = None, expire_at_call: int | None = None,
                 page: int = 100, empty_first: int = 0) -> None:
        self.shards = shards
        # GetRecords "might take multiple calls to get to a portion of the shard that contains stream
        # records" (AWS): a TRIM_HORIZON iterator answers this many empty pages first.
        self.empty_first = empty_first
        self.batch = batch
        self.trimmed = trimmed or set()
        self.expire_at_call = expire_at_call
        self.page = page
        self.calls: list[tuple[str, ...]] = []
        self.getrecords_calls = 0

    def describe_stream(self, StreamArn: str, ExclusiveStartShardId: str | None = None) -> dict[str, Any]:
        ids = list(self.shards)
        start = ids.index(ExclusiveStartShardId) + 1 if ExclusiveStartShardId else 0
        chosen = ids[start:start + self.page]
        listing = []
        for shard_id in chosen:
            parent, _records, closed = self.shards[shard_id]
            entry: dict[str, Any] = {"ShardId": shard_id, "SequenceNumberRange": {}}
            if parent:
                entry["ParentShardId"] = parent
            if closed:
                entry["SequenceNumberRange"]["EndingSequenceNumber"] = "999"
            listing.append(entry)
        description: dict[str, Any] = {"StreamArn": StreamArn, "Shards": listing}
        if start + self.page < len(ids):
            description["LastEvaluatedShardId"] = chosen[-1]
        return {"StreamDescription": description}

    def get_shard_iterator(self, StreamArn: str, ShardId: str, ShardIteratorType: str,
                           SequenceNumber: str | None = None) -> dict[str, Any]:
        self.calls.append(("iterator", ShardId, ShardIteratorType, SequenceNumber or ""))
        records = self.shards[ShardId][1]
        if ShardIteratorType == "TRIM_HORIZON":
            return {"ShardIterator": f"{ShardId}|0" + (f"|{self.empty_first}" if self.empty_first else "")}
        assert ShardIteratorType == "AFTER_SEQUENCE_NUMBER"
        if SequenceNumber in self.trimmed:
            raise client_error("TrimmedDataAccessException", "GetShardIterator")
        sequences = [r["dynamodb"]["SequenceNumber"] for r in records]
        return {"ShardIterator": f"{ShardId}|{sequences.index(SequenceNumber) + 1}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        self.getrecords_calls += 1
        if self.getrecords_calls == self.expire_at_call:
            raise client_error("ExpiredIteratorException", "GetRecords")
        shard_id, position, *empty = ShardIterator.split("|")
        self.calls.append(("records", shard_id, position))
        if empty and int(empty[0]):
            return {"Records": [], "NextShardIterator": f"{shard_id}|{position}|{int(empty[0]) - 1}"}
        _, records, closed = self.shards[shard_id]
        start = int(position)
        batch = records[start:start + min(self.batch, Limit)]
        end = start + len(batch)
        following = None if closed and end >= len(records) else f"{shard_id}|{end}"
        return {"Records": batch, "NextShardIterator": following}


def read_order(fake: FakeStreams) -> list[str]:
    """Shard ids in the order GetRecords first touched them."""
    order: list[str] = []
    for call in fake.calls:
        if call[0] == "records" and call[1] not in order:
            order.append(call[1])
    return order


def test_parents_are_ordered_before_children() -> None:
    shards = [Shard("c2", "c1"), Shard("c1", "p"), Shard("p", None), Shard("x", "gone")]
    assert [s.shard_id for s in parent_first(shards)] == ["p", "c1", "c2", "x"]


def test_a_child_shard_is_read_only_after_its_parent_is_drained(store: Store, dynamodb: Any) -> None:
    fake = FakeStreams({
        "child": ("parent", [getrecords_record(3, "c")], False),
        "parent": (None, [getrecords_record(1, "a"), getrecords_record(2, "b"), getrecords_record(4, "d")], True),
    })
    summary = poll(store, TABLE, once=True, dynamodb=dynamodb, streams=fake)

    touched = [call[1] for call in fake.calls if call[0] == "records"]
    first_child = touched.index("child")
    assert "parent" not in touched[first_child:]
    assert summary.captured == 4
    parent = json.loads(store.read(checkpoint_path(TABLE, "parent")))
    assert parent["closed"] is True and parent["sequence_number"] == "104"


def test_a_child_whose_parent_left_the_stream_is_read(store: Store, dynamodb: Any) -> None:
    fake = FakeStreams({"child": ("long-gone", [getrecords_record(1, "a")], False)})
    summary = poll(store, TABLE, once=True, dynamodb=dynamodb, streams=fake)
    assert (summary.captured, summary.gaps) == (1, 0)


def test_describe_stream_is_paginated(store: Store, dynamodb: Any) -> None:
    fake = FakeStreams({f"s{i}": (None, [getrecords_record(i, f"k{i}")], True) for i in range(5)}, page=2)
    summary = poll(store, TABLE, once=True, dynamodb=dynamodb, streams=fake)
    assert (summary.captured, summary.shards) == (5, 5)


def test_a_trimmed_checkpoint_is_reported_as_a_gap_then_capture_goes_on(
        store: Store, dynamodb: Any, capsys: Any) -> None:
    write_checkpoint(store, TABLE, Checkpoint("s1", None, "105", False, 1))
    fake = FakeStreams({"s1": (None, [getrecords_record(8, "h"), getrecords_record(9, "i")], False)},
                       trimmed={"105"})

    summary = poll(store, TABLE, once=True, dynamodb=dynamodb, streams=fake)

    err = capsys.readouterr().err
    assert "GAP" in err and "s1" in err and "105" in err
    assert (summary.gaps, summary.captured) == (1, 2)
    (gap_file,) = store.list(table_root(TABLE) + "/gaps/")
    assert json.loads(store.read(gap_file))["after_sequence_number"] == "105"
    checkpoint = json.loads(store.read(checkpoint_path(TABLE, "s1")))
    assert checkpoint["gaps"][0]["after_sequence_number"] == "105"
    assert checkpoint["sequence_number"] == "109"


def test_an_unfinished_shard_gone_from_the_stream_is_reported_as_a_gap(
        store: Store, dynamodb: Any, capsys: Any) -> None:
    write_checkpoint(store, TABLE, Checkpoint("parent", None, "101", False, 1))
    fake = FakeStreams({"child": ("parent", [getrecords_record(5, "e")], False)})

    summary = poll(store, TABLE, once=True, dynamodb=dynamodb, streams=fake)

    err = capsys.readouterr().err
    assert "GAP" in err and "parent" in err and "101" in err
    assert (summary.gaps, summary.captured) == (1, 1)
    parent = json.loads(store.read(checkpoint_path(TABLE, "parent")))
    assert parent["closed"] is True and len(parent["gaps"]) == 1


def test_a_gap_is_reported_once_not_again_on_restart(store: Store, dynamodb: Any, capsys: Any) -> None:
    write_checkpoint(store, TABLE, Checkpoint("s1", None, "105", False, 1))
    shards: dict[str, tuple[str | None, list[dict[str, Any]], bool]] = {
        "s1": (None, [getrecords_record(8, "h")], False)
    }
    poll(store, TABLE, once=True, dynamodb=dynamodb, streams=FakeStreams(shards, trimmed={"105"}))
    again = poll(store, TABLE, once=True, dynamodb=dynamodb, streams=FakeStreams(shards, trimmed={"105"}))
    assert again.gaps == 0 and again.captured == 0


def test_an_expired_iterator_is_renewed_without_loss_or_duplicates(store: Store, dynamodb: Any) -> None:
    records = [getrecords_record(i, f"k{i}") for i in range(1, 8)]
    fake = FakeStreams({"s1": (None, records, True)}, batch=2, expire_at_call=3)

    summary = poll(store, TABLE, once=True, dynamodb=dynamodb, streams=fake)

    assert ("iterator", "s1", "AFTER_SEQUENCE_NUMBER", "104") in fake.calls
    rows = change_rows(store)
    assert sorted(row["event_id"] for row in rows) == sorted(f"evt-{i}" for i in range(1, 8))
    assert summary.captured == 7


def test_a_closed_drained_shard_is_not_read_again(store: Store, dynamodb: Any) -> None:
    shards: dict[str, tuple[str | None, list[dict[str, Any]], bool]] = {
        "s1": (None, [getrecords_record(1, "a")], True)
    }
    poll(store, TABLE, once=True, dynamodb=dynamodb, streams=FakeStreams(shards))
    fake = FakeStreams(shards)
    poll(store, TABLE, once=True, dynamodb=dynamodb, streams=fake)
    assert read_order(fake) == []


def test_a_caught_up_shard_sets_its_watermark_a_margin_before_the_wall_clock(
    store: Store, dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Asked at 12.345678 s past a second: records stamped up to 7 s past are surely readable
    # (5 s margin), so the shard is complete up to the end of second 6.
    asked = 1_700_000_012_345_678
    monkeypatch.setattr("stream_consumer.poller._now_us", lambda: asked)
    fake = FakeStreams({"s1": (None, [], False)})

    poll(store, TABLE, once=True, dynamodb=dynamodb, streams=fake)

    checkpoint = json.loads(store.read(checkpoint_path(TABLE, "s1")))
    assert checkpoint["watermark_us"] == 1_700_000_007_000_000 - 1
    assert asked - checkpoint["watermark_us"] > STREAM_TIME_MARGIN_US


def test_empty_pages_before_a_shards_first_records_are_read_past_not_taken_as_caught_up(
        store: Store, dynamodb: Any) -> None:
    fake = FakeStreams({"s1": (None, [getrecords_record(1, "a")], False)}, empty_first=CAUGHT_UP_PAGES - 1)

    summary = poll(store, TABLE, once=True, dynamodb=dynamodb, streams=fake)

    assert summary.captured == 1
    checkpoint = json.loads(store.read(checkpoint_path(TABLE, "s1")))
    assert checkpoint["sequence_number"] == getrecords_record(1, "a")["dynamodb"]["SequenceNumber"]


def test_a_poller_gap_starts_just_after_the_shard_watermark(store: Store, dynamodb: Any) -> None:
    write_checkpoint(store, TABLE, Checkpoint("s1", None, "105", False, 1_700_000_000_999_999))
    fake = FakeStreams({"s1": (None, [getrecords_record(8, "h")], False)}, trimmed={"105"})

    poll(store, TABLE, once=True, dynamodb=dynamodb, streams=fake)

    (gap,) = read_gaps(store, TABLE)
    assert (gap.start_us, gap.after_sequence_number, gap.source) == (1_700_000_001_000_000, "105", "poller")
    assert coverage(store, TABLE).gaps == (gap,)


# --- coverage: the lineage rule (changelog.captured) ----------------------------------------------

SECOND = 1_000_000


def second_of(sequence: int) -> int:
    """The stream time (µs) ``getrecords_record(sequence, ...)`` carries."""
    return int(datetime(2024, 1, 1, 0, 0, sequence % 60, tzinfo=UTC).timestamp()) * SECOND


def test_a_parent_closed_before_its_child_is_listed_holds_coverage_at_its_end(store: Store, dynamodb: Any) -> None:
    # Round 1 sees only the parent, which closes while it is read; its child (one change in the
    # parent's last second) is listed from the next DescribeStream on.
    parent = (None, [getrecords_record(1, "a"), getrecords_record(2, "b")], True)
    poll(store, TABLE, once=True, dynamodb=dynamodb, streams=FakeStreams({"parent": parent}))

    assert coverage(store, TABLE).latest_us == second_of(2) - STREAM_CLOCK_STEP_US - 1

    child = ("parent", [getrecords_record(62, "c")], False)  # 62 % 60: the same second as the parent's last
    poll(store, TABLE, once=True, dynamodb=dynamodb,
         streams=FakeStreams({"parent": parent, "child": child}))
    assert coverage(store, TABLE).latest_us >= second_of(62)  # the child is read and caught up


class FailingStreams(FakeStreams):
    """GetRecords on the shards named in ``failing`` fails as a throttled call that outlasted its retries."""

    def __init__(self, *args: Any, failing: set[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failing = failing

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        if ShardIterator.split("|")[0] in self.failing:
            raise client_error("ProvisionedThroughputExceededException", "GetRecords")
        return super().get_records(ShardIterator, Limit)


def test_a_listed_shard_that_failed_before_it_was_read_proves_no_moment(store: Store, dynamodb: Any) -> None:
    fake = FailingStreams({"s1": (None, [getrecords_record(1, "a")], False),
                           "s2": (None, [getrecords_record(2, "b")], False)}, failing={"s2"})
    with pytest.raises(StreamReadError):
        poll(store, TABLE, once=True, dynamodb=dynamodb, streams=fake)

    # s1 is read, s2 may hold a change of any time: no moment is proven yet.
    assert json.loads(store.read(checkpoint_path(TABLE, "s2")))["watermark_us"] is None
    assert coverage(store, TABLE).latest_us is None


def test_a_listed_child_not_read_yet_holds_coverage_at_its_parents_end(store: Store, dynamodb: Any) -> None:
    fake = FailingStreams({"parent": (None, [getrecords_record(1, "a"), getrecords_record(3, "b")], True),
                           "child": ("parent", [getrecords_record(4, "c")], False)}, failing={"child"})
    with pytest.raises(StreamReadError):
        poll(store, TABLE, once=True, dynamodb=dynamodb, streams=fake)

    assert coverage(store, TABLE).latest_us == second_of(3) - STREAM_CLOCK_STEP_US - 1
