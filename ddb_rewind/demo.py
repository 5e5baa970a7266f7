"""The end-to-end demo on an embedded local AWS (moto): no account, no network, under a minute.

A table with a stream takes a working day of traffic; a bad deploy then corrupts and deletes items
within minutes, and traffic goes on. The poller captures everything, the compactor snapshots it, and
replay rebuilds the table as it was just before the bad deploy into a new table, which is then
checked item by item against what the live table held at that moment.

The day passes in seconds: the embedded DynamoDB stamps its stream records with the demo's clock
(``StreamClock``), so `timeline` and `report` show hours of traffic with the deploy as a spike.
Everything else is real: the records come from the embedded stream and are captured by the poller.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from changelog.codec import binaries_to_base64, item_key
from changelog.errors import ConflictError, UsageError
from changelog.store import open_store
from changelog.timefmt import format_time, from_micros

TABLE = "orders"
RESTORED = "orders-restored"
MARKER = ".ddb-rewind-demo-store"
_MARKER_TEXT = "created by 'ddb-rewind demo' in an empty directory; the demo may empty it again\n"
# What a demo run writes at the top of its store: the marker and its one table.
_DEMO_ENTRIES = frozenset({MARKER, "tables"})
STATUSES = ("new", "paid", "packed", "shipped", "delivered")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_aws() -> Iterator[str]:
    """Run moto's server on 127.0.0.1 and point boto3 at it (fake credentials); yields the endpoint."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise UsageError("the demo's embedded AWS is not installed: pip install 'ddb-rewind[demo]'") from None

    # The embedded server would print a line per request; the demo's own lines are what matter.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto keeps its state per process: a second demo in one process starts from an empty AWS.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30).close()
    saved = {name: os.environ.get(name) for name in _ENV}
    os.environ.update(_ENV | {"AWS_ENDPOINT_URL": endpoint})
    try:
        yield endpoint
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_ENV = {
    "AWS_ACCESS_KEY_ID": "demo",
    "AWS_SECRET_ACCESS_KEY": "demo",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    "AWS_ENDPOINT_URL": "",
}


def claim_store(store_dir: Path) -> None:
    """Make ``store_dir`` an empty store of the demo's own, or refuse (ConflictError) without touching it.

    The demo only ever writes into a new or empty directory, where it first writes its marker; a
    re-run may empty a directory that holds that marker and nothing but what the demo writes (its
    one table). Any other content means the directory is not the demo's: it is refused, never
    deleted. A marker in an unexpected place (an older demo planted one in real stores) is not
    proof enough, which is why the marker has a new name and the contents are checked too.
    """
    if store_dir.is_symlink() or (store_dir.exists() and not store_dir.is_dir()):
        raise ConflictError(f"demo store {str(store_dir)!r} is not a directory: choose another --store")
    if not store_dir.exists():
        store_dir.mkdir(parents=True)
    entries = {entry.name for entry in store_dir.iterdir()}
    if not entries:
        (store_dir / MARKER).write_text(_MARKER_TEXT)
        return
    foreign = entries - _DEMO_ENTRIES
    tables = store_dir / "tables"
    if tables.is_dir() and not tables.is_symlink():
        foreign |= {f"tables/{entry.name}" for entry in tables.iterdir() if entry.name != TABLE}
    if MARKER not in entries or (store_dir / MARKER).read_text() != _MARKER_TEXT or foreign:
        why = "holds " + ", ".join(sorted(foreign)[:3]) if foreign and MARKER in entries else "is not empty"
        raise ConflictError(f"demo store {str(store_dir)!r} {why} and was not created by the demo: "
                            "the demo only uses a new or empty directory; choose another --store")
    # Ours: remove what the demo wrote (its table's files), then start again from the marker alone.
    for name in sorted(entries - {MARKER}):
        path = store_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _order(rng: random.Random, number: int) -> dict[str, Any]:
    customer = f"customer-{rng.randrange(40):03d}"
    lines = [
        {"M": {"sku": {"S": f"SKU-{rng.randrange(900) + 100}"}, "qty": {"N": str(rng.randrange(1, 5))},
               "price": {"N": f"{rng.randrange(100, 99999) / 100:.2f}"}}}
        for _ in range(rng.randrange(1, 4))
    ]
    item: dict[str, Any] = {
        "pk": {"S": customer},
        "sk": {"N": str(number)},
        "status": {"S": rng.choice(STATUSES[:3])},
        "total": {"N": f"{rng.randrange(100, 500000) / 100:.2f}"},
        "lines": {"L": lines},
        "tags": {"SS": sorted(rng.sample(["gift", "express", "fragile", "b2b", "promo"], rng.randrange(1, 3)))},
        "receipt": {"B": bytes(rng.randrange(256) for _ in range(12))},
        "paid": {"BOOL": rng.random() < 0.7},
        "note": {"S": rng.choice(["leave at door", "call first", "ünïcödé ✓", "—"])},
        "ledger_ref": {"N": "1234567890123456789012345678901234567" + str(rng.randrange(10))},
    }
    if rng.random() < 0.2:
        item["coupon"] = {"NULL": True}
    return item


def _scan(client: Any, table: str) -> dict[str, dict[str, Any]]:
    items: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("scan").paginate(TableName=table):
        for raw in page["Items"]:
            item = binaries_to_base64(raw)
            items[item_key({"pk": item["pk"], "sk": item["sk"]})] = item
    return items


class StreamClock:
    """The clock the embedded DynamoDB stamps stream records with, moved forward by the demo.

    It starts ``hours_ago`` whole hours before now, so every moment of the story is in the past
    (coverage never claims the future) and lies on hour boundaries a reader can type.
    """

    def __init__(self, hours_ago: int) -> None:
        self.now_s: float = (int(time.time()) // 3600 - hours_ago) * 3600

    def __call__(self) -> datetime:
        # moto's own clock gives naive UTC datetimes.
        return datetime.fromtimestamp(self.now_s, tz=UTC).replace(tzinfo=None)

    def advance(self, seconds: float) -> None:
        self.now_s += seconds

    @property
    def micros(self) -> int:
        return round(self.now_s * 1_000_000)


@contextmanager
def stream_clock(clock: StreamClock) -> Iterator[None]:
    """Stamp the embedded DynamoDB's stream records (and table times), and the table settings the
    store records, with ``clock``: a settings version stamped with the real time would come after
    every moment of the story, and a restore into a new table would have none to recreate."""
    from unittest import mock

    # The one place moto reads the time for a table and its stream records; if a moto release
    # moves it, this patch fails loudly rather than the demo telling a five-second story.
    with mock.patch("moto.dynamodb.models.table.utcnow", clock), \
            mock.patch("changelog.settings.wall_clock_us", lambda: clock.micros):
        yield


def wait_for_ctrl_c(endpoint: str) -> None:
    """Block until Ctrl-C (the embedded AWS at ``endpoint`` serves meanwhile)."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def run_demo(store_dir: Path, say: Callable[[str], None] = print, orders: int = 300,
             keep_running: Callable[[str], None] | None = None) -> bool:
    """Run the whole demo against ``store_dir``; returns True when the restore matched exactly.

    ``keep_running`` is called with the endpoint after the demo, while the embedded AWS still runs
    (``demo --keep-running`` passes ``wait_for_ctrl_c``): every command can then be tried against it.
    """
    started = time.monotonic()
    claim_store(store_dir)
    (store_dir / "tables").mkdir(exist_ok=True)  # beside the marker, it is what makes the directory a store
    rng = random.Random(7)
    clock = StreamClock(hours_ago=9)
    with local_aws() as endpoint:
        with stream_clock(clock):
            matched, moment, deploy_end_us, day_start = _story(store_dir, say, orders, rng, clock, started)
        if keep_running is not None:
            # The story's clock is let go first: what is written from here on is stamped with the
            # real time, after the story, as a live table's changes would be.
            say("10. The local AWS keeps running until Ctrl-C. In another terminal, set:")
            for name, value in sorted((_ENV | {"AWS_ENDPOINT_URL": endpoint}).items()):
                say(f"     export {name}={value}")
            say(f"     export REWIND_STORE={store_dir.resolve()}")
            say(f"   then try: ddb-rewind verify --table {TABLE} --against {RESTORED} --at {moment}")
            say(f"             ddb-rewind repair --table {TABLE} --from {moment} "
                f"--to {format_time(from_micros(deploy_end_us))} --target {TABLE} --dry-run")
            say(f"             ddb-rewind timeline --table {TABLE} --from {format_time(from_micros(day_start))} "
                "--to latest")
            say("   (run 'ddb-rewind consume --table orders --once' to capture what you write)")
            keep_running(endpoint)
    return matched


def _story(store_dir: Path, say: Callable[[str], None], orders: int, rng: random.Random, clock: StreamClock,
           started: float) -> tuple[bool, str, int, int]:
    """The demo's working day, deploy, capture, restore and check; (matched, restore point, deploy end, day start)."""
    from changelog.settings import observe as observe_settings
    from compactor.compaction import compact
    from replayer.engines.views import open_sql
    from replayer.forensics.attrdiff import items_equal
    from replayer.forensics.diff import diff_states
    from replayer.restoring.replay import open_items, replay_to_table, select_counts
    from replayer.restoring.target import prepare_target
    from replayer.restoring.writer import WriteSettings
    from stream_consumer.poller import poll

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    say(f"1. Local AWS (moto) at {endpoint}; store {store_dir}")
    client = boto3.client("dynamodb")
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    store = open_store(str(store_dir))
    # As the stack's consumer does when capture starts: the table's settings, which a restore into a
    # new table (replay --create-table) recreates as they were at its moment.
    observe_settings(store, TABLE, dynamodb=client)
    day_start = clock.micros
    say(f"2. Table {TABLE!r} with a NEW_AND_OLD_IMAGES stream; a working day from "
        f"{format_time(from_micros(day_start))}: {orders} orders over six hours, with payments, "
        "shipments and cancellations")
    # Six hours of orders, each order's payment or shipment and the odd cancellation some
    # steps after it, interleaved at a steady pace.
    updated = set(rng.sample(range(orders), orders // 2))
    cancelled = set(rng.sample(range(orders), orders // 20))
    work = [(n, 0, n) for n in range(orders)]
    work += [(n + rng.randrange(1, 40), 1, n) for n in updated]
    work += [(n + rng.randrange(40, 80), 2, n) for n in cancelled]
    work.sort()
    keys: dict[int, dict[str, Any]] = {}
    for _position, kind, number in work:
        clock.advance(6 * 3600 / len(work))
        if kind == 0:
            item = _order(rng, 100_000 + number)
            client.put_item(TableName=TABLE, Item=item)
            keys[number] = {"pk": item["pk"], "sk": item["sk"]}
        elif kind == 1:
            client.update_item(TableName=TABLE, Key=keys[number], UpdateExpression="SET #s = :s",
                               ExpressionAttributeNames={"#s": "status"},
                               ExpressionAttributeValues={":s": {"S": rng.choice(STATUSES[2:])}})
        else:
            client.delete_item(TableName=TABLE, Key=keys[number])
    clock.now_s = int(clock.now_s) + 60  # a quiet minute; the restore point is on a whole second
    good_us = clock.micros
    before = _scan(client, TABLE)
    say(f"   the table holds {len(before)} items at {format_time(from_micros(good_us))}: our restore point")

    clock.advance(30)
    say("3. A bad deploy: within five minutes 15% of the orders get status 'ERROR' and total 0, "
        "and 5% are deleted; new orders keep coming for two more hours")
    alive = [json.loads(k) for k in before]
    damaged = rng.sample(alive, len(alive) * 15 // 100)
    deleted = rng.sample(alive, len(alive) * 5 // 100)
    deploy_step_s = 300 / max(1, len(damaged) + len(deleted))
    for key in damaged:
        clock.advance(deploy_step_s)
        client.update_item(TableName=TABLE, Key=key,
                           UpdateExpression="SET #s = :s, #t = :t",
                           ExpressionAttributeNames={"#s": "status", "#t": "total"},
                           ExpressionAttributeValues={":s": {"S": "ERROR"}, ":t": {"N": "0"}})
    for key in deleted:
        clock.advance(deploy_step_s)
        client.delete_item(TableName=TABLE, Key=key)
    clock.now_s = int(clock.now_s) + 1
    deploy_end_us = clock.micros
    # Traffic goes on for two more hours at the day's pace: new orders only.
    later = max(1, len(work) // 3)
    for number in range(later):
        clock.advance(2 * 3600 / later)
        client.put_item(TableName=TABLE, Item=_order(rng, 200_000 + number))
    after = _scan(client, TABLE)

    summary = poll(store, TABLE, once=True)
    say(f"4. Captured the stream with the poller: {summary.captured} changes in {summary.files} Parquet "
        f"file(s), {summary.quarantined} quarantined, {summary.gaps} gaps")

    result = compact(store, TABLE)
    if result.snapshot:
        say(f"5. Compacted: snapshot at {format_time(result.snapshot.snapshot_time)} with "
            f"{result.snapshot.items} items")

    con = open_sql(store, plain_tables=True)
    say("6. SQL over the whole history (orders per status before and after the deploy):")
    moment = format_time(from_micros(good_us))
    latest = _latest_us(store)
    rows = con.execute(
        f"""SELECT status, count(*) FILTER (WHERE phase = 'before') AS before, count(*) FILTER (WHERE phase = 'now')
            AS now FROM (SELECT 'before' AS phase, status FROM orders_at('{moment}')
                         UNION ALL SELECT 'now', status FROM orders_at('{format_time(from_micros(latest))}'))
            GROUP BY status ORDER BY status"""
    ).fetchall()
    for status, count_before, count_now in rows:
        say(f"     {status:<10} {count_before:>5} -> {count_now:>5}")

    changed = diff_states(store, TABLE, good_us, latest)
    say(f"7. diff since the restore point: {len(changed.added)} added, {len(changed.removed)} removed, "
        f"{len(changed.changed)} changed")

    items = open_items(store, TABLE, from_micros(good_us))
    selection = select_counts(items)
    prepare_target(client, RESTORED, json.loads((store_dir / "tables" / TABLE / "meta.json").read_text()),
                   create=True, into_existing=False)
    report, _errors = replay_to_table(items, client, RESTORED, selection.items, WriteSettings(workers=4))
    say(f"8. Replayed {TABLE} as of {moment} into new table {RESTORED!r}: written {report.written}, "
        f"retried {report.retried}, failed {report.failed}")

    restored = _scan(client, RESTORED)
    same = {k for k in before if items_equal(before[k], restored.get(k))}
    matched = len(same) == len(before) == len(restored)
    say(f"9. Check: {len(same)} of {len(before)} items identical to the live table at {moment}; "
        f"{len(restored) - len(same)} unexpected; live table now differs in "
        f"{sum(1 for k in before if not items_equal(before[k], after.get(k)))} items")
    say(f"   {'MATCH' if matched else 'MISMATCH'}: the restore equals the table as it was "
        f"({time.monotonic() - started:.1f}s). Explore it: ddb-rewind sql --store {store_dir} "
        f"\"SELECT * FROM orders_at('{moment}') LIMIT 5\"")
    return matched, moment, deploy_end_us, day_start


def _latest_us(store: Any) -> int:
    from changelog.state import coverage

    latest = coverage(store, TABLE).latest_us
    assert latest is not None
    return latest
