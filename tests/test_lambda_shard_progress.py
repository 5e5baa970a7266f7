"""Per-shard progress on the Lambda path: what the consumer stored of each shard, and the probe that lists them.

A DynamoDB stream event names no shard unless the event source mapping uses tumbling windows (the
stack turns them on); then the consumer records, per shard, the newest record it stored, and the
scheduled probe lists the stream's shards and proves how far each is complete. The latest
restorable time is then the one lineage rule over those shards: a shard Lambda reads behind the
others holds it back, where the newest stored change alone would have claimed moments whose
changes are not stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from changelog.captured import ShardProgress, ShardRead, lineage_holds, record_shard_progress, with_progress
from changelog.gaps import STREAM_CLOCK_STEP_US, STREAM_TIME_MARGIN_US
from changelog.layout import capture_root, shard_progress_path
from changelog.state import coverage
from changelog.store import Store
from changelog.timefmt import to_micros
from ddb_rewind.cli import main
from stream_consumer import handler
from stream_consumer.checkpoint import Checkpoint, read_checkpoints, write_checkpoint
from stream_consumer.poller import CAUGHT_UP_PAGES
from stream_consumer.probe import probe_stream
from tests.events import ARN, lambda_record
from tests.test_lineage_property import ModelShard, streams

TABLE = "orders"
US = 1_000_000
STREAM = ARN.format(table=TABLE)


def windowed(records: list[dict[str, Any]], shard: str) -> dict[str, Any]:
    """A Lambda event as a tumbling-window mapping delivers it: it names the shard."""
    return {"Records": records, "shardId": shard, "eventSourceARN": STREAM, "state": {},
            "window": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:15:00Z"},
            "isFinalInvokeForWindow": False, "isWindowTerminatedEarly": False}


def put(pk: str, second: int, sequence: int) -> dict[str, Any]:
    return lambda_record(TABLE, "INSERT", {"pk": {"S": pk}}, second, sequence, new={"pk": {"S": pk}})


def progress(store: Store) -> dict[str, Any]:
    return {path: json.loads(store.read(path)) for path in store.list(capture_root(TABLE) + "progress/")}


# --- the consumer ------------------------------------------------------------------------------


def test_a_windowed_event_records_how_far_its_shard_is_stored(handler_store: Store) -> None:
    answer = handler.lambda_handler(windowed([put("a", 1_700_000_000, 100), put("b", 1_700_000_005, 101)],
                                             "shardId-00000001-aaaa"), None)

    assert answer == {"batchItemFailures": [], "state": {}}
    assert progress(handler_store) == {shard_progress_path(TABLE, "shardId-00000001-aaaa"): {
        "shard_id": "shardId-00000001-aaaa", "stream_arn": STREAM, "last_sequence": "101",
        "last_us": 1_700_000_005 * US}}


def test_the_final_invocation_of_a_window_answers_with_state(handler_store: Store) -> None:
    assert handler.lambda_handler({**windowed([], "shardId-00000001-aaaa"), "isFinalInvokeForWindow": True},
                                  None) == {"batchItemFailures": [], "state": {}}


def test_an_event_that_names_no_shard_records_no_progress(handler_store: Store) -> None:
    answer = handler.lambda_handler({"Records": [put("a", 1_700_000_000, 100)]}, None)

    assert answer == {"batchItemFailures": []}
    assert progress(handler_store) == {}


def test_a_shard_id_that_cannot_name_a_file_is_not_recorded(handler_store: Store) -> None:
    answer = handler.lambda_handler(windowed([put("a", 1_700_000_000, 100)], "shardId-../../x"), None)

    assert answer["batchItemFailures"] == []
    assert progress(handler_store) == {}


# --- the rule ----------------------------------------------------------------------------------


def stored(store: Store, shard: str, sequence: int, second: int) -> None:
    """What the consumer leaves for a shard it stored up to ``sequence`` (its change included)."""
    handler.lambda_handler(windowed([put(f"{shard}-{sequence}", second, sequence)], shard), None)


def test_a_record_the_streams_clock_stamped_a_second_early_falls_after_every_moment_proven(
        handler_store: Store) -> None:
    # c at T+5 and a at T+10 stored, then b at T+9: the next record of the shard, stamped a second
    # earlier (the stream's clock stepped back). T+9 was proven with the first batch, and its answer
    # changed once b was stored.
    from replayer.restoring.replay import open_items

    handler.lambda_handler(windowed([put("c", 1_700_000_005, 100), put("a", 1_700_000_010, 101)], "shardId-1"), None)
    write_checkpoint(handler_store, TABLE, Checkpoint("shardId-1"))  # listed by the probe
    proven = coverage(handler_store, TABLE).latest_us
    assert proven is not None

    def keys_at(moment_us: int) -> set[str]:
        con = open_items(handler_store, TABLE, datetime.fromtimestamp(moment_us / US, tz=UTC))
        return {row[0] for row in con.execute("SELECT item_key FROM items").fetchall()}

    before = keys_at(proven)
    handler.lambda_handler(windowed([put("b", 1_700_000_009, 102)], "shardId-1"), None)

    assert keys_at(proven) == before


def test_a_shard_read_behind_the_others_holds_the_latest_restorable_time(handler_store: Store) -> None:
    stored(handler_store, "shardId-1", 100, 1_700_000_100)
    stored(handler_store, "shardId-2", 500, 1_700_000_900)  # the newest stored change
    for shard in ("shardId-1", "shardId-2"):  # both listed by the probe, neither proven further
        write_checkpoint(handler_store, TABLE, Checkpoint(shard))

    found = coverage(handler_store, TABLE)

    # Shard 1 may hold changes from a second before its newest stored one on (the stream's clock can
    # step back): nothing after that is proven.
    assert found.latest_us == 1_700_000_099 * US - 1


def test_progress_without_a_listing_of_the_shards_proves_no_moment(handler_store: Store) -> None:
    stored(handler_store, "shardId-1", 100, 1_700_000_100)

    found = coverage(handler_store, TABLE)

    assert found.latest_us is None
    assert any("not listed yet" in hold.what for hold in found.holds)


def test_a_damaged_progress_record_is_refused_as_damage(handler_store: Store) -> None:
    stored(handler_store, "shardId-1", 100, 1_700_000_100)
    handler_store.write(shard_progress_path(TABLE, "shardId-1"), b'{"shard_id": "shardId-1", "last_us": "soon"}')

    assert main(["status", "--store", handler_store.uri, "--table", TABLE]) == 6


# --- the probe, against moto's stream ----------------------------------------------------------


@pytest.fixture
def table(aws: None) -> Any:
    client = boto3.client("dynamodb")
    client.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST",
                        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    return client


@dataclass(frozen=True)
class Stream:
    arn: str
    shard: str
    records: list[dict[str, Any]]


def read_stream() -> Stream:
    """Every record of the table's (one) moto shard, as GetRecords returns them."""
    arn = boto3.client("dynamodb").describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    streams = boto3.client("dynamodbstreams")
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    return Stream(arn, shard, records)


def deliver(stream: Stream, count: int) -> None:
    """The consumer Lambda, handed the shard's first ``count`` records as one windowed batch."""
    records = []
    for record in stream.records[:count]:
        body = dict(record["dynamodb"])
        body["ApproximateCreationDateTime"] = body["ApproximateCreationDateTime"].timestamp()
        records.append({**record, "dynamodb": body, "eventSourceARN": stream.arn})
    event = {**windowed(records, stream.shard), "eventSourceARN": stream.arn}
    assert handler.lambda_handler(event, None)["batchItemFailures"] == []


def created_us(record: dict[str, Any]) -> int:
    return to_micros(record["dynamodb"]["ApproximateCreationDateTime"])


def test_the_probe_proves_a_shard_whose_records_are_all_stored_up_to_when_it_asked(
    table: Any, handler_store: Store
) -> None:
    for key in ("a", "b"):
        table.put_item(TableName=TABLE, Item={"pk": {"S": key}})
    stream = read_stream()
    deliver(stream, 2)
    before = to_micros(datetime.now(UTC))

    summary = probe_stream(handler_store, TABLE, boto3.client("dynamodbstreams"), stream.arn)

    (finding,) = summary.findings
    assert finding.state == "caught up"
    assert finding.watermark_us is not None
    assert finding.watermark_us >= before - STREAM_TIME_MARGIN_US - US
    assert coverage(handler_store, TABLE).latest_us == finding.watermark_us
    assert read_checkpoints(handler_store, TABLE)[stream.shard].sequence_number == \
        stream.records[1]["dynamodb"]["SequenceNumber"]


def test_the_probe_bounds_a_shard_lambda_is_behind_on_a_second_before_its_first_record_not_stored(
    table: Any, handler_store: Store
) -> None:
    for key in ("a", "b", "c"):
        table.put_item(TableName=TABLE, Item={"pk": {"S": key}})
    stream = read_stream()
    deliver(stream, 2)

    (finding,) = probe_stream(handler_store, TABLE, boto3.client("dynamodbstreams"), stream.arn).findings

    # A second before it: the stream's clock may step back that far for the records after it.
    assert finding.state == "behind"
    assert finding.watermark_us == created_us(stream.records[2]) - STREAM_CLOCK_STEP_US - 1
    assert coverage(handler_store, TABLE).latest_us == created_us(stream.records[2]) - STREAM_CLOCK_STEP_US - 1


def test_the_probe_reads_a_shard_nothing_was_stored_from_from_its_start(table: Any, handler_store: Store) -> None:
    table.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})
    stream = read_stream()

    (finding,) = probe_stream(handler_store, TABLE, boto3.client("dynamodbstreams"), stream.arn).findings

    assert finding.state == "behind"
    assert finding.watermark_us == created_us(stream.records[0]) - STREAM_CLOCK_STEP_US - 1


def test_the_probe_reads_past_empty_pages_before_a_shards_records(
        table: Any, handler_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # GetRecords "might take multiple calls to get to a portion of the shard that contains stream records".
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend

    real = DynamoDBStreamsBackend.get_records
    empty = {"left": CAUGHT_UP_PAGES - 1}

    def empty_first(self: Any, iterator_arn: str, limit: int) -> dict[str, Any]:
        if empty["left"]:
            empty["left"] -= 1
            return {"Records": [], "NextShardIterator": iterator_arn}
        return real(self, iterator_arn, limit)

    table.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})
    stream = read_stream()
    monkeypatch.setattr(DynamoDBStreamsBackend, "get_records", empty_first)

    (finding,) = probe_stream(handler_store, TABLE, boto3.client("dynamodbstreams"), stream.arn).findings

    assert finding.state == "behind"
    assert finding.watermark_us == created_us(stream.records[0]) - STREAM_CLOCK_STEP_US - 1


def test_a_dry_run_probe_writes_nothing(table: Any, handler_store: Store) -> None:
    table.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})
    stream = read_stream()

    probe_stream(handler_store, TABLE, boto3.client("dynamodbstreams"), stream.arn, dry_run=True)

    assert read_checkpoints(handler_store, TABLE) == {}


def test_recover_probe_prints_each_shard_and_exits_0(table: Any, handler_store: Store, capsys: Any) -> None:
    table.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})
    deliver(read_stream(), 1)

    status = main(["recover", "--probe", "--table", TABLE, "--store", handler_store.uri])

    out = capsys.readouterr().out
    assert status == 0
    assert "caught up, complete to" in out
    assert "probe: 1 shards, 0 behind, 0 trimmed, 0 gaps" in out


def test_recover_without_a_queue_or_a_probe_is_refused(handler_store: Store, capsys: Any) -> None:
    assert main(["recover", "--store", handler_store.uri]) == 2
    assert "--queue-url" in capsys.readouterr().err


def test_the_scheduled_recover_invocation_probes_the_stacks_stream(
    table: Any, handler_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream_consumer import recover

    table.put_item(TableName=TABLE, Item={"pk": {"S": "a"}})
    stream = read_stream()
    deliver(stream, 1)
    monkeypatch.setattr(recover, "_store", lambda: handler_store)
    monkeypatch.setenv("REWIND_TABLE", TABLE)
    monkeypatch.setenv("REWIND_STREAM_ARN", stream.arn)

    answer = recover.lambda_handler({"detail-type": "Scheduled Event", "source": "aws.events"}, None)

    assert answer == {"probed": 1, "gaps": 0}
    assert read_checkpoints(handler_store, TABLE)[stream.shard].watermark_us is not None


# --- the property --------------------------------------------------------------------------------


@st.composite
def lambda_states(draw: st.DrawFn) -> tuple[dict[str, ModelShard], dict[str, int], set[str]]:
    """A stream, how far Lambda stored each shard, and what an earlier probe saw of it.

    Lambda stores a prefix of each shard it has reached (``read``). The probe ran earlier: it listed
    the shards that existed then (a child appears only when its parent closes) and saw a shorter
    stored prefix of each (``probed``: how many records were stored when it asked).
    """
    shards = draw(streams())
    listed: set[str] = set()

    def visit(shard_id: str) -> None:
        listed.add(shard_id)
        if draw(st.booleans()):
            for child in shards[shard_id].children:
                visit(child)

    visit("root")
    probed: dict[str, int] = {}
    for shard in shards.values():
        shard.read = draw(st.integers(0, len(shard.times)))
        if shard.shard_id in listed:
            probed[shard.shard_id] = draw(st.integers(0, shard.read))
    return shards, probed, listed


def probe_checkpoints(shards: dict[str, ModelShard], probed: dict[str, int]) -> dict[str, ShardRead]:
    """The checkpoints the probe writes (stream_consumer/probe.py) for what it saw."""
    found = {}
    for shard_id, seen in probed.items():
        shard = shards[shard_id]
        if seen < len(shard.times):
            mark: int | None = shard.times[seen] - 1  # behind: before the first record not stored
        elif shard.closed:
            mark = shard.times[seen - 1] - 1 if seen else None
        else:
            # Caught up: it asked before the next record, if any, was written; none came after this model's end.
            mark = shard.times[-1] - 1 + 1 if seen else None
        found[shard_id] = ShardRead(shard_id, shard.parent, shard.closed and seen == len(shard.times), mark)
    return found


def lambda_progress(shards: dict[str, ModelShard]) -> list[ShardProgress]:
    return [ShardProgress(shard.shard_id, STREAM, str(shard.read), shard.times[shard.read - 1])
            for shard in shards.values() if shard.read]


@settings(max_examples=300, deadline=None)
@given(lambda_states())
def test_progress_and_the_probe_never_claim_a_moment_with_a_change_not_stored(
    state: tuple[dict[str, ModelShard], dict[str, int], set[str]]
) -> None:
    shards, probed, _ = state
    listing = probe_checkpoints(shards, probed)
    holds = [hold.at_us for hold in lineage_holds(with_progress(listing, lambda_progress(shards)))]
    if not listing or not holds or any(hold is None for hold in holds):
        return  # no moment is claimed (without a listing, coverage adds a hold that proves nothing)
    claimed = min(hold for hold in holds if hold is not None)
    unstored = [t for shard in shards.values() for t in shard.times[shard.read:]]
    assert all(t > claimed for t in unstored), (claimed, unstored)


def test_recording_progress_refuses_a_sequence_that_cannot_name_a_record(store: Store) -> None:
    with pytest.raises(ValueError):
        record_shard_progress(store, TABLE, ShardProgress("shardId-1", STREAM, "12x", None))


def test_check_counts_a_store_with_progress_records_sound(handler_store: Store) -> None:
    stored(handler_store, "shardId-1", 100, 1_700_000_100)
    write_checkpoint(handler_store, TABLE, Checkpoint("shardId-1"))

    assert main(["check", "--store", handler_store.uri, "--table", TABLE]) == 0
