"""Serve speed and scale: ``ddb-rewind serve`` beside ``replay --to-file`` and a moto server, in one run.

Run ``python -m bench.serve [--keys K] [--changes N] [--gets G] [--queries Q] [--scan-pages P]
[--anchor-items A]`` (defaults 1,500,000 keys, 1.2 changes per key: about 1,000,000 live items).
It builds a synthetic store with ``bench.storegen`` (key schema ``pk`` S, ``sk`` N; up to four items per
partition), then, each in its own process:

1. start-up anchor: ``ddb-rewind replay --to-file state.jsonl`` of the last moment (wall time, peak RSS);
2. ``ddb-rewind serve --at`` the same moment: time from spawn until it says it serves and DescribeTable answers;
3. latency anchor: moto's ThreadedMotoServer on 127.0.0.1 in a child process, the table created with the
   same key schema and the replayed items put straight into its backend (load time printed);
4. against both, with one boto3 client each, the same requests in the same order: G GetItem of random
   live keys, Q Query ``pk = :p`` of random live partitions (p50/p99 of each; only the first
   ``--anchor-queries``, default 10, go to moto: its Query sorts the whole table each time, seconds per
   request at 1M items), then P Scan pages of
   DynamoDB's 1 MB (items/s over those pages; moto's Scan walks the whole table for every page, so a
   full scan is not timed); the first 200 GetItem answers of the two must be equal;
5. peak RSS (VmHWM) of the serve process and of the moto process after the whole workload, and the serve
   process's resident memory (VmRSS) once answering and after the workload (its peak is the start-up's
   state computation, the same DuckDB query as replay's), and how much of the latter is anonymous
   (RssAnon; the rest is pages of the memory-mapped index files, which the kernel can drop).

``--startup-pairs N`` then measures start-up alone N more times, a ``replay --to-file`` and a serve
start-up back to back, which one goes first alternating, and prints each pair's wall and CPU
(user + system of the child) ratios and their medians: on a shared machine one pair's ratio moves
with the load, the median of alternated pairs much less. ``--startup-only`` skips the workload and
moto (only the pairs).

``--anchor-items A`` loads only the first A items of the state into moto (the requests then go to keys
of those A items on both sides) where moto cannot hold the whole table. Prints one table; asserts only
that the answers agree.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import boto3
import orjson
from botocore.config import Config

from bench.storegen import generate_store
from changelog.meta import meta_from_description, write_meta
from changelog.store import LocalStore
from changelog.timefmt import format_time, from_micros

TABLE = "orders"
KEY_SCHEMA = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
ATTRIBUTES = [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "N"}]
COMPARED = 200


@dataclass(frozen=True)
class Figures:
    """What one endpoint did with the workload."""

    get_ms: list[float]
    query_ms: list[float]
    scan_items: int
    scan_s: float
    gets: list[dict[str, Any] | None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _client(port: int) -> Any:
    return boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=600))


def _rss_mb(pid: int, field: str = "VmHWM") -> float:
    """VmHWM (peak resident) or VmRSS (resident now) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cli() -> str:
    beside = Path(sys.executable).with_name("ddb-rewind")
    found = str(beside) if beside.exists() else shutil.which("ddb-rewind")
    if found is None:
        raise SystemExit("ddb-rewind is not installed in this environment (pip install -e '.[serve]')")
    return found


def _moto_child(state: str, limit: int, port: int, reply: Connection) -> None:
    """A moto server holding the first ``limit`` items of ``state`` (put straight into its backend)."""
    os.environ["AWS_ACCOUNT_ID_ENDPOINT_MODE"] = "disabled"
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    _client(port).create_table(TableName=TABLE, KeySchema=KEY_SCHEMA, AttributeDefinitions=ATTRIBUTES,
                               BillingMode="PAY_PER_REQUEST")
    table = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_table(TABLE)
    started = time.perf_counter()
    count = 0
    with open(state, "rb") as lines:
        for line in lines:
            if count >= limit:
                break
            table.put_item(orjson.loads(line)["Item"], overwrite=True)
            count += 1
    reply.send((count, time.perf_counter() - started))
    reply.recv()  # held until the parent is done
    server.stop()


def _child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _replay_startup(cli: str, root: Path, at: str, target: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``replay --to-file`` of ``at`` (the start-up anchor)."""
    target.unlink(missing_ok=True)
    cpu, started = _child_cpu_s(), time.perf_counter()
    subprocess.run([cli, "replay", "--table", TABLE, "--store", str(root), "--at", at, "--to-file", str(target)],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started, _child_cpu_s() - cpu


def _start_serve(cli: str, root: Path, at: str, port: int) -> subprocess.Popen[bytes]:
    """``serve --at`` started, returned once it says it serves and DescribeTable has answered.

    serve prints its "serving" line once the moment is loaded; polling instead (a request every
    20 ms) made the server answer about 250 "loading" errors on the two cores its load was using.
    """
    serve = subprocess.Popen([cli, "serve", "--store", str(root), "--at", at, "--tables", TABLE,
                              "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert serve.stdout is not None
    if not serve.stdout.readline().startswith(b"serving "):
        raise SystemExit(f"serve exited with {serve.wait()} before serving")
    _client(port).describe_table(TableName=TABLE)
    return serve


def _serve_startup(cli: str, root: Path, at: str) -> tuple[float, float]:
    """Wall seconds from spawning ``serve --at`` until DescribeTable answers, and the process's CPU seconds."""
    cpu, started = _child_cpu_s(), time.perf_counter()
    serve = _start_serve(cli, root, at, _free_port())
    wall = time.perf_counter() - started
    serve.terminate()
    serve.wait()
    return wall, _child_cpu_s() - cpu


def _startup_pairs(cli: str, root: Path, at: str, work: Path, pairs: int) -> None:
    """Start-up of serve against replay --to-file, ``pairs`` times back to back, the first of each alternating."""
    walls, cpus = [], []
    for number in range(pairs):
        if number % 2 == 0:
            replay, serve = _replay_startup(cli, root, at, work / "pair.jsonl"), _serve_startup(cli, root, at)
        else:
            serve, replay = _serve_startup(cli, root, at), _replay_startup(cli, root, at, work / "pair.jsonl")
        walls.append(serve[0] / replay[0])
        cpus.append(serve[1] / replay[1])
        first = "replay" if number % 2 == 0 else "serve"
        print(f"pair {number + 1} ({first} first, load {os.getloadavg()[0]:.1f}): serve {serve[0]:.2f} s wall "
              f"{serve[1]:.2f} s cpu, replay {replay[0]:.2f} s wall {replay[1]:.2f} s cpu: "
              f"{walls[-1]:.2f}x wall, {cpus[-1]:.2f}x cpu", flush=True)
    print(f"start-up over {pairs} pairs: median {statistics.median(walls):.2f}x wall "
          f"(from {min(walls):.2f}x to {max(walls):.2f}x), median {statistics.median(cpus):.2f}x cpu "
          f"(from {min(cpus):.2f}x to {max(cpus):.2f}x) of replay --to-file", flush=True)


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    answer = call()
    return (time.perf_counter() - started) * 1000, answer


def _workload(client: Any, gets: list[dict[str, Any]], partitions: list[dict[str, Any]], pages: int) -> Figures:
    client.describe_table(TableName=TABLE)  # the connection is open before the clock runs
    get_ms, answers = [], []
    for key in gets:
        ms, answer = _timed(partial(client.get_item, TableName=TABLE, Key=key))
        get_ms.append(ms)
        answers.append(answer.get("Item"))
    query_ms = []
    for pk in partitions:
        ms, answer = _timed(partial(client.query, TableName=TABLE, KeyConditionExpression="pk = :p",
                                    ExpressionAttributeValues={":p": pk}))
        if not answer["Items"]:
            raise SystemExit("a Query of a live partition returned nothing")
        query_ms.append(ms)
    scanned = 0
    started = time.perf_counter()
    request: dict[str, Any] = {"TableName": TABLE}
    for _ in range(pages):
        page = client.scan(**request)
        scanned += len(page["Items"])
        if "LastEvaluatedKey" not in page:
            break
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return Figures(get_ms, query_ms, scanned, time.perf_counter() - started, answers[:COMPARED])


def _q(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def _row(name: str, value: float, anchor: float, anchor_name: str, unit: str) -> str:
    ratio = value / anchor if anchor else float("nan")
    return f"{name:<22} {value:>12,.2f} {unit:<6} {anchor:>12,.2f} {unit:<6} {ratio:>7.2f}x  {anchor_name}"


def main() -> None:
    """Build, start, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_500_000, help="key space of the synthetic store")
    parser.add_argument("--changes", type=int, help="changes in the store (default 1.2 per key)")
    parser.add_argument("--gets", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--scan-pages", type=int, default=10, help="1 MB Scan pages timed on each side")
    parser.add_argument("--anchor-queries", type=int, default=10,
                        help="how many of the Queries go to moto too (its Query sorts the whole table every time)")
    parser.add_argument("--anchor-items", type=int, help="load only this many items into moto (default: all)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--store", type=Path, help="an empty directory for the store (default: a temporary one)")
    parser.add_argument("--startup-pairs", type=int, default=0,
                        help="then time start-up alone this many times, replay and serve back to back")
    parser.add_argument("--startup-only", action="store_true", help="only the start-up pairs (no workload, no moto)")
    args = parser.parse_args()
    if args.startup_only and args.startup_pairs < 1:
        parser.error("--startup-only needs --startup-pairs N")
    os.environ["AWS_ACCOUNT_ID_ENDPOINT_MODE"] = "disabled"
    changes = args.changes or int(args.keys * 1.2)
    cli = _cli()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        root = args.store or work / "store"
        root.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        generated = generate_store(root, TABLE, changes=changes, keys=args.keys)
        # storegen's meta is the stream's (key roles unknown); serve needs the roles, as DescribeTable records them.
        write_meta(LocalStore(root), meta_from_description({"TableName": TABLE, "KeySchema": KEY_SCHEMA,
                                                            "AttributeDefinitions": ATTRIBUTES}))
        at = format_time(from_micros(generated.last_us))
        print(f"store: {generated.changes:,} changes over {generated.keys:,} keys in {generated.files:,} files "
              f"({generated.bytes_written / 1e6:,.0f} MB), built in {time.perf_counter() - started:,.1f} s; "
              f"moment {at}", flush=True)

        if args.startup_only:
            _startup_pairs(cli, root, at, work, args.startup_pairs)
            return
        state = work / "state.jsonl"
        replay_s, _ = _replay_startup(cli, root, at, state)
        replay_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the only child so far
        keys = []
        with state.open("rb") as lines:
            for line in lines:
                item = orjson.loads(line)["Item"]
                keys.append({"pk": item["pk"], "sk": item["sk"]})
        live = len(keys)
        print(f"state: {live:,} live items ({state.stat().st_size / 1e6:,.0f} MB of JSON lines); "
              f"replay --to-file {replay_s:,.1f} s, peak RSS {replay_rss:,.0f} MB", flush=True)

        anchor_items = min(args.anchor_items or live, live)
        rng = random.Random(args.seed)
        pool = keys[:anchor_items]
        gets = [rng.choice(pool) for _ in range(args.gets)]
        partitions = [rng.choice(pool)["pk"] for _ in range(args.queries)]
        del keys, pool

        port = _free_port()
        client = _client(port)
        started = time.perf_counter()
        serve = _start_serve(cli, root, at, port)
        try:
            serve_s = time.perf_counter() - started
            loaded_rss = _rss_mb(serve.pid, "VmRSS")
            print(f"serve: answering after {serve_s:,.1f} s, resident {loaded_rss:,.0f} MB", flush=True)
            served = _workload(client, gets, partitions, args.scan_pages)
            serve_rss, serving_rss = _rss_mb(serve.pid), _rss_mb(serve.pid, "VmRSS")
            # VmRSS counts the pages of the mapped index files read so far: the kernel's to drop, unlike RssAnon.
            serving_anon = _rss_mb(serve.pid, "RssAnon")
        finally:
            serve.terminate()
            serve.wait()

        moto_port = _free_port()
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        moto = context.Process(target=_moto_child, args=(str(state), anchor_items, moto_port, theirs), daemon=True)
        moto.start()
        try:
            loaded, load_s = ours.recv()
            subset = "" if loaded == live else f" (a SUBSET: --anchor-items {loaded:,} of {live:,})"
            print(f"moto: {loaded:,} items loaded into its backend in {load_s:,.1f} s{subset}", flush=True)
            anchor = _workload(_client(moto_port), gets, partitions[:args.anchor_queries], args.scan_pages)
            assert moto.pid is not None
            moto_rss = _rss_mb(moto.pid)
            ours.send("done")
        finally:
            moto.join(30)
            if moto.is_alive():
                moto.terminate()
        if args.startup_pairs:
            _startup_pairs(cli, root, at, work, args.startup_pairs)

    if served.gets != anchor.gets:
        raise SystemExit("serve and moto returned different items for the same GetItem")
    print(f"checked: the first {len(served.gets)} GetItem answers are equal on both sides")
    load = os.getloadavg()
    print(f"\n{live:,} items served; moto anchor holds {loaded:,}; load average {load[0]:.1f} on "
          f"{os.cpu_count()} cores")
    print(f"{'':<22} {'serve':>19} {'anchor':>19} {'ratio':>8}")
    print(_row("start-up", serve_s, replay_s, "replay --to-file of the same moment", "s"))
    print(_row("peak RSS", serve_rss, replay_rss, "replay --to-file", "MB"))
    print(_row("peak RSS", serve_rss, moto_rss, "moto server holding the items", "MB"))
    print(_row("RSS after the workload", serving_rss, moto_rss, "moto server's peak", "MB"))
    print(_row("  of it anonymous", serving_anon, moto_rss, "moto server's peak (the rest: mapped index files)", "MB"))
    for name, ours_ms, theirs_ms in (("GetItem", served.get_ms, anchor.get_ms),
                                     ("Query pk = :p", served.query_ms, anchor.query_ms)):
        for p in (50, 99):
            print(_row(f"{name} p{p}", _q(ours_ms, p), _q(theirs_ms, p),
                       f"moto server ({len(ours_ms):,} requests here, the first {len(theirs_ms):,} there)", "ms"))
    print(_row(f"Scan ({args.scan_pages} pages)", served.scan_items / served.scan_s,
               anchor.scan_items / anchor.scan_s, f"moto server ({anchor.scan_items:,} items)", "it/s"))


if __name__ == "__main__":
    main()
