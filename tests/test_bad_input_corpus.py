"""The bad-input corpus: every command and the Lambda handler, fed what a hostile tester would feed them.

Each case runs as a real process: ``ddb-rewind`` forked from a warm interpreter of this checkout
(``tests.forkserver``: its own environment, stdio and exit code, without paying the imports two
hundred times), the handler through a small ``python -c``. Each must end with: no traceback, the documented exit
code (changelog/errors.py, docs/reliability.md), exactly one line on stderr, and the store
byte-for-byte as it was. The processes run a few at a time; the store is built once per module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from changelog.store import LocalStore
from compactor.compaction import compact
from tests.events import ARN, kinesis_record, lambda_record
from tests.forkserver import ForkServer
from tests.workloads import Workload

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
TABLE = "orders"
BASE = 1_750_000_000
AT = str(BASE + 30)
EARLY, LATE = str(BASE - 3600), str(BASE + 10 * 86_400)
FROM, TO = str(BASE + 5), str(BASE + 50)
HANDLER = (
    "import json, sys\n"
    "from stream_consumer.handler import lambda_handler\n"
    "result = lambda_handler(json.load(open(sys.argv[1])), None)\n"
    "print('RESULT ' + json.dumps(result))\n"
)
# No case may reach the internet: AWS calls go to a closed local port unless a case says otherwise.
# Cases run this many at a time (each in a child of its own warm interpreter).
WORKERS = 3
UNREACHABLE = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"}


@dataclass(frozen=True)
class Case:
    """One bad invocation: argv for ``ddb-rewind`` (``{S}`` = the store, ``{D}`` = a scratch dir)."""

    name: str
    argv: tuple[str, ...]
    code: int
    says: str = ""  # a fragment the one stderr line must contain
    env: dict[str, str] = field(default_factory=dict)
    store: str = "good"  # which fixture store {S} is


def c(name: str, code: int, *argv: str, says: str = "", env: dict[str, str] | None = None,
      store: str = "good") -> Case:
    return Case(name, tuple(argv), code, says, env or {}, store)


def _table_cases() -> list[Case]:
    """A bad --table for every command that takes one, and a valid name the store lacks."""
    commands = {
        "replay": ("--at", AT, "--to-file", "{D}/t.jsonl"),
        "history": ("--key", "pk=a"),
        "timeline": (),
        "diff": ("--from", FROM, "--to", TO),
        "report": ("--from", FROM, "--to", TO, "-o", "{D}/r.html"),
        "verify": ("--drill",),
        "repair": ("--from", FROM, "--to", TO, "--target", "orders", "--dry-run"),
        "compact": (),
        "expire": ("--keep", "changes=1d", "--dry-run"),
        "status": (),
        "check": (),
    }
    cases = []
    for command, rest in commands.items():
        for label, name in (("empty", ""), ("dotdot", ".."), ("short", "ab"), ("slash", "a/b"),
                            ("long", "x" * 256)):
            cases.append(c(f"{command}-table-{label}", 2, command, "--table", name, "--store", "{S}", *rest,
                           says="not a DynamoDB table name"))
    for command in ("replay", "history", "timeline", "diff", "report", "status"):
        cases.append(c(f"{command}-table-unknown", 4, command, "--table", "nosuchtable", "--store", "{S}",
                       *commands[command]))
    return cases


def _time_cases() -> list[Case]:
    cases = []
    for label, value in (("word", "yesterday"), ("month13", "2025-13-01T00:00:00Z"), ("empty", ""),
                         ("huge", "1e30"), ("nan", "nan")):
        cases.append(c(f"replay-at-{label}", 2, "replay", "--table", TABLE, "--store", "{S}", "--at", value,
                       "--to-file", "{D}/x.jsonl"))
    cases += [
        c("diff-from-bad", 2, "diff", "--table", TABLE, "--store", "{S}", "--from", "soon", "--to", TO),
        c("timeline-to-bad", 2, "timeline", "--table", TABLE, "--store", "{S}", "--to", "2025-02-30"),
        c("compact-at-bad", 2, "compact", "--table", TABLE, "--store", "{S}", "--at", "x"),
        c("verify-drill-at-bad", 2, "verify", "--table", TABLE, "--store", "{S}", "--drill-at", "-"),
        c("repair-to-bad", 2, "repair", "--table", TABLE, "--store", "{S}", "--from", FROM, "--to", "??",
          "--target", "orders"),
        c("replay-before-coverage", 5, "replay", "--table", TABLE, "--store", "{S}", "--at", EARLY,
          "--to-file", "{D}/x.jsonl", says="before the earliest restorable time"),
        c("replay-after-coverage", 5, "replay", "--table", TABLE, "--store", "{S}", "--at", LATE,
          "--to-file", "{D}/x.jsonl", says="after the latest restorable time"),
        c("diff-out-of-coverage", 5, "diff", "--table", TABLE, "--store", "{S}", "--from", EARLY, "--to", TO),
        c("diff-inverted", 2, "diff", "--table", TABLE, "--store", "{S}", "--from", TO, "--to", FROM,
          says="give the earlier time first"),
        c("repair-inverted", 2, "repair", "--table", TABLE, "--store", "{S}", "--from", TO, "--to", FROM,
          "--target", "orders", "--dry-run"),
        c("report-out-of-coverage", 5, "report", "--table", TABLE, "--store", "{S}", "--from", EARLY, "--to", TO,
          "-o", "{D}/r.html"),
        c("report-inverted", 2, "report", "--table", TABLE, "--store", "{S}", "--from", TO, "--to", FROM,
          "-o", "{D}/r.html", says="give the earlier time first"),
        c("verify-drill-out-of-coverage", 5, "verify", "--table", TABLE, "--store", "{S}", "--drill-at", LATE),
        c("replay-at-year-1-offset", 2, "replay", "--table", TABLE, "--store", "{S}", "--at",
          "0001-01-01T00:00:00+01:00", "--to-file", "{D}/x.jsonl", says="out of range"),
        c("replay-at-year-9999-offset", 2, "replay", "--table", TABLE, "--store", "{S}", "--at",
          "9999-12-31T23:59:59-01:00", "--to-file", "{D}/x.jsonl", says="out of range"),
        c("diff-from-year-1-offset", 2, "diff", "--table", TABLE, "--store", "{S}", "--from",
          "0001-01-01T00:00:00+05:00", "--to", TO, says="out of range"),
        c("history-key-deep", 2, "history", "--table", TABLE, "--store", "{S}", "--key",
          '{"pk":' + '{"M":{"a":' * 3000 + '{"S":"x"}' + "}}" * 3000 + "}", says="key"),
        c("history-key-lone-surrogate", 2, "history", "--table", TABLE, "--store", "{S}", "--key",
          '{"pk":{"S":"\\ud800"}}', says="key"),
    ]
    return cases


HOSTILE_WHERE = [
    ("copy-escape", "1=1); COPY (SELECT 1) TO '{S}/tables/orders/meta.json'; SELECT (1"),
    ("read-csv", "read_csv('/etc/passwd') IS NOT NULL"),
    ("read-text-subquery", "status IN (SELECT content FROM read_text('/etc/passwd'))"),
    ("install", "INSTALL httpfs"),
    ("load", "LOAD httpfs"),
    ("attach", "ATTACH '/tmp/evil.db'"),
    ("second-statement", "status = 'x'; DROP TABLE state"),
    ("getenv", "getenv('HOME') = 'x'"),
    ("union", "status = 'x' UNION SELECT 1"),
    ("qualified", "state.status = 'x'"),
    ("unknown-column", "nosuch = 1"),
    ("syntax", "status = ("),
    ("empty", ""),
    ("struct-cast", "CAST(status AS STRUCT(a INT)) IS NULL"),
    ("deep", "(" * 400 + "status" + ")" * 400),
    ("placeholder", "status = $1"),
]


def _where_cases() -> list[Case]:
    cases = []
    for label, text in HOSTILE_WHERE:
        cases.append(c(f"replay-where-{label}", 2, "replay", "--table", TABLE, "--store", "{S}", "--at", AT,
                       "--to-file", "{D}/w.jsonl", "--dry-run", "--where", text, says="--where"))
        cases.append(c(f"diff-where-{label}", 2, "diff", "--table", TABLE, "--store", "{S}", "--from", FROM,
                       "--to", TO, "--where", text, says="--where"))
    return cases


def _number_cases() -> list[Case]:
    replay = ("replay", "--table", TABLE, "--store", "{S}", "--at", AT, "--to-table", "restored", "--dry-run")
    repair = ("repair", "--table", TABLE, "--store", "{S}", "--from", FROM, "--to", TO, "--target", "orders",
              "--dry-run")
    verify = ("verify", "--table", TABLE, "--store", "{S}", "--against", "orders")
    cases = [
        c("replay-workers-0", 2, *replay, "--workers", "0", says="--workers"),
        c("replay-workers-negative", 2, *replay, "--workers", "-3"),
        c("replay-workers-word", 2, *replay, "--workers", "many"),
        c("replay-workers-huge", 2, *replay, "--workers", "100000000"),
        c("replay-max-rate-negative", 2, *replay, "--max-rate", "-1", says="--max-rate"),
        c("replay-max-rate-zero", 2, *replay, "--max-rate", "0"),
        c("replay-max-rate-nan", 2, *replay, "--max-rate", "nan"),
        c("replay-max-rate-inf", 2, *replay, "--max-rate", "inf"),
        c("replay-to-table-empty", 2, "replay", "--table", TABLE, "--store", "{S}", "--at", AT, "--to-table", ""),
        c("replay-to-table-dotdot", 2, "replay", "--table", TABLE, "--store", "{S}", "--at", AT, "--to-table",
          ".."),
        c("replay-both-targets", 2, "replay", "--table", TABLE, "--store", "{S}", "--at", AT, "--to-table",
          "restored", "--to-file", "{D}/x.jsonl"),
        c("replay-no-target", 2, "replay", "--table", TABLE, "--store", "{S}", "--at", AT),
        c("repair-workers-0", 2, *repair, "--workers", "0"),
        c("repair-sample-negative", 2, *repair, "--sample", "-1"),
        c("repair-target-empty", 2, "repair", "--table", TABLE, "--store", "{S}", "--from", FROM, "--to", TO,
          "--target", ""),
        c("verify-segments-0", 2, *verify, "--segments", "0"),
        c("verify-segments-word", 2, *verify, "--segments", "x"),
        c("verify-sample-negative", 2, *verify, "--sample", "-5"),
        c("verify-against-bad-name", 2, "verify", "--table", TABLE, "--store", "{S}", "--against", "a"),
        c("verify-nothing-to-do", 2, "verify", "--table", TABLE, "--store", "{S}"),
        c("bootstrap-segments-0", 2, "bootstrap", "--table", TABLE, "--store", "{S}", "--scan", "--segments", "0"),
        c("bootstrap-no-source", 2, "bootstrap", "--table", TABLE, "--store", "{S}"),
        c("consume-poll-negative", 2, "consume", "--table", TABLE, "--store", "{S}", "--poll-interval", "-1"),
        c("consume-poll-nan", 2, "consume", "--table", TABLE, "--store", "{S}", "--poll-interval", "nan"),
        c("consume-poll-inf", 2, "consume", "--table", TABLE, "--store", "{S}", "--poll-interval", "inf"),
        c("consume-max-seconds-nan", 2, "consume", "--table", TABLE, "--store", "{S}", "--max-seconds", "nan"),
        c("consume-max-seconds-word", 2, "consume", "--table", TABLE, "--store", "{S}", "--max-seconds", "x"),
        c("demo-orders-0", 2, "demo", "--store", "{D}/demo", "--orders", "0", says="--orders"),
        c("demo-orders-negative", 2, "demo", "--store", "{D}/demo", "--orders", "-5"),
        c("demo-orders-word", 2, "demo", "--store", "{D}/demo", "--orders", "lots"),
        c("timeline-bucket-bad", 2, "timeline", "--table", TABLE, "--store", "{S}", "--bucket", "week"),
        c("status-format-bad", 2, "status", "--store", "{S}", "--format", "xml"),
        c("sql-format-bad", 2, "sql", "--store", "{S}", "--format", "yaml", "SELECT 1"),
    ]
    for label, policy in (("huge-years", "changes=99999999y"), ("huge-days", "changes=999999999999d"),
                          ("huge-daily", "daily=99999999d,changes=1d"), ("zero", "changes=0d"),
                          ("no-changes", "daily=3d"), ("garbage", "keep everything"), ("empty", ""),
                          ("negative", "changes=-1d"), ("twice", "changes=1d,changes=2d"), ("unit", "changes=5q")):
        cases.append(c(f"expire-keep-{label}", 2, "expire", "--table", TABLE, "--store", "{S}", "--keep", policy,
                       "--dry-run"))
    return cases


def _output_cases() -> list[Case]:
    replay = ("replay", "--table", TABLE, "--store", "{S}", "--at", AT)
    diff = ("diff", "--table", TABLE, "--store", "{S}", "--from", FROM, "--to", TO)
    report = ("report", "--table", TABLE, "--store", "{S}", "--from", FROM, "--to", TO)
    return [
        c("replay-existing-file", 2, *replay, "--to-file", "{D}/existing.jsonl", says="add --overwrite"),
        c("replay-existing-file-dry-run", 2, *replay, "--to-file", "{D}/existing.jsonl", "--dry-run"),
        c("replay-directory-as-file", 2, *replay, "--to-file", "{D}/dir.jsonl", "--overwrite",
          says="is a directory"),
        c("replay-missing-directory", 2, *replay, "--to-file", "{D}/no/such/x.jsonl", says="does not exist"),
        c("replay-bad-extension", 2, *replay, "--to-file", "{D}/x.xlsx", says=".jsonl, .parquet, .avro or .csv"),
        c("replay-no-extension", 2, *replay, "--to-file", "{D}/x"),
        c("diff-existing-output", 2, *diff, "--format", "parquet", "--output", "{D}/existing.parquet",
          says="add --overwrite"),
        c("diff-parquet-no-output", 2, *diff, "--format", "parquet", says="--output"),
        c("diff-output-without-parquet", 2, *diff, "--output", "{D}/d.parquet"),
        c("diff-output-directory", 2, *diff, "--format", "parquet", "--output", "{D}/dir.jsonl"),
        c("diff-format-bad", 2, *diff, "--format", "csv"),
        c("report-existing-output", 2, *report, "-o", "{D}/existing.parquet", says="add --overwrite"),
        c("report-output-directory", 2, *report, "-o", "{D}/dir.jsonl", "--overwrite", says="is a directory"),
        c("report-no-output", 2, *report),
        c("report-samples-negative", 2, *report, "-o", "{D}/r.html", "--samples", "-1"),
        c("report-where-unknown", 2, *report, "-o", "{D}/r.html", "--where", "nosuch = 1"),
        c("replay-to-export-no-bucket", 2, *replay, "--to-export", "s3://", says="names no bucket"),
        c("replay-to-export-bucket-not-a-name", 2, *replay, "--to-export", "s3://Bad_Bucket/x",
          says="not an S3 bucket name"),
        c("replay-to-export-s3-colon", 2, *replay, "--to-export", "s3:", says="neither a directory"),
        c("replay-import-prefix-no-bucket", 2, *replay, "--to-table", "restored", "--via-import",
          "--import-prefix", "s3://", says="names no bucket"),
        c("replay-to-dir-empty", 2, "replay", "--tables", TABLE, "--store", "{S}", "--at", AT, "--to-dir", "",
          says="empty"),
        c("replay-to-file-empty", 2, *replay, "--to-file", "", says="empty"),
        c("replay-to-file-fifo", 2, *replay, "--to-file", "{D}/fifo.jsonl", "--overwrite",
          says="not a regular file"),
        c("replay-create-table-to-file", 2, *replay, "--to-file", "{D}/c.jsonl", "--create-table",
          says="acts on a target table"),
        c("replay-clear-first-to-file", 2, *replay, "--to-file", "{D}/c.jsonl", "--clear-first", "--yes",
          says="acts on a target table"),
        c("replay-create-table-to-export", 2, *replay, "--to-export", "{D}/exports", "--create-table",
          says="acts on a target table"),
        c("replay-create-table-to-dir", 2, "replay", "--tables", TABLE, "--store", "{S}", "--at", AT, "--to-dir",
          "{D}", "--create-table", says="acts on a target table"),
        c("replay-create-table-into-existing", 2, *replay, "--to-table", "restored", "--create-table",
          "--into-existing", says="not allowed with argument --create-table"),
        c("athena-sql-database-newline", 2, "athena-sql", "--table", TABLE, "--store", "{S}", "--at", AT,
          "--database", "rewind_orders\nDROP TABLE x; --", says="not a Glue database name"),
        c("athena-sql-database-quote", 2, "athena-sql", "--table", TABLE, "--store", "{S}", "--at", AT,
          "--database", 'x"."y', says="not a Glue database name"),
    ]


def _into_the_store_cases() -> list[Case]:
    """Nothing but the store's own writers writes inside it: every output path into it is refused."""
    replay = ("replay", "--table", TABLE, "--store", "{S}", "--at", AT)
    return [
        c("replay-to-file-into-changes", 2, *replay, "--to-file", "{S}/tables/orders/changes/x.jsonl",
          says="is inside the store"),
        c("replay-to-file-into-the-root", 2, *replay, "--to-file", "{S}/x.jsonl", says="is inside the store"),
        c("replay-to-file-through-a-symlink", 2, *replay, "--to-file", "{D}/store-link/tables/x.jsonl",
          says="is inside the store"),
        c("replay-to-export-into-the-table", 2, *replay, "--to-export", "{S}/tables/orders",
          says="is inside the store"),
        c("replay-to-export-the-store-itself", 2, *replay, "--to-export", "{S}/", says="is inside the store"),
        c("replay-to-dir-into-the-store", 2, "replay", "--tables", TABLE, "--store", "{S}", "--at", AT,
          "--to-dir", "{S}/tables", says="is inside the store"),
        c("diff-output-into-the-store", 2, "diff", "--table", TABLE, "--store", "{S}", "--from", FROM, "--to", TO,
          "--format", "parquet", "--output", "{S}/tables/orders/changes/d.parquet", says="is inside the store"),
        c("report-output-into-the-store", 2, "report", "--table", TABLE, "--store", "{S}", "--from", FROM,
          "--to", TO, "-o", "{S}/tables/orders/r.html", says="is inside the store"),
        c("status-not-a-store", 4, "status", "--store", "{D}", says="holds no ddb-rewind store"),
        c("sql-not-a-store", 4, "sql", "--store", "{D}", "SELECT 1", says="holds no ddb-rewind store"),
        c("consume-into-not-a-store", 4, "consume", "--table", TABLE, "--store", "{D}", "--once",
          says="holds no ddb-rewind store"),
    ]


def _internal_message_cases() -> list[Case]:
    """Inputs whose refusal once leaked an internal message (a Python UDF's, DuckDB's) or a wrong exit code."""
    deep = '{"pk":' + '{"M":{"a":' * 3000 + '{"S":"x"}' + "}}" * 3000 + "}"
    return [
        c("replay-memory-limit-out-of-range", 2, "replay", "--table", TABLE, "--store", "{S}", "--at", AT,
          "--to-file", "{D}/m.jsonl", env={"DDB_REWIND_MEMORY_LIMIT": "99999999TB"}, says="out of range"),
        c("replay-memory-limit-zero", 2, "replay", "--table", TABLE, "--store", "{S}", "--at", AT,
          "--to-file", "{D}/m.jsonl", env={"DDB_REWIND_MEMORY_LIMIT": "0GB"}, says="DDB_REWIND_MEMORY_LIMIT"),
        c("sql-history-lone-surrogate", 2, "sql", "--store", "{S}",
          """SELECT * FROM history('{"pk":{"S":"\\ud800"}}')""", says="malformed key"),
        c("sql-history-plain-key", 2, "sql", "--store", "{S}", "SELECT * FROM history('nope=a')",
          says="no table's key schema reads the key"),
        c("sql-history-deep-key", 2, "sql", "--store", "{S}", f"SELECT * FROM history('{deep}')",
          says="nested too deep"),
        # SQL reads TIME as the command line does: a year past 9999 is no TIME it takes.
        c("sql-state-at-past-year-9999", 2, "sql", "--store", "{S}", "SELECT * FROM state_at('290000-01-01')",
          says="cannot read time '290000-01-01'"),
        c("timeline-minutes-over-10000-years", 2, "timeline", "--table", TABLE, "--store", "{S}", "--from",
          "1970-01-02T00:00:00Z", "--to", "9998-12-31T00:00:00Z", "--bucket", "minute", says="buckets"),
        c("timeline-minutes-over-a-year", 2, "timeline", "--table", TABLE, "--store", "{S}", "--from",
          "2024-01-01T00:00:00Z", "--to", "2025-01-01T00:00:00Z", "--bucket", "minute", says="--bucket 15min"),
    ]


def _destructive_cases() -> list[Case]:
    return [
        c("repair-needs-yes", 2, "repair", "--table", TABLE, "--store", "{S}", "--from", FROM, "--to", TO,
          "--target", "orders", says="add --yes"),
        c("replay-clear-first-needs-yes", 2, "replay", "--table", TABLE, "--store", "{S}", "--at", AT,
          "--to-table", "restored", "--into-existing", "--clear-first", says="add --yes"),
        c("expire-needs-yes", 2, "expire", "--table", TABLE, "--store", "{S}", "--keep", "changes=1d",
          says="add --yes"),
        c("demo-foreign-store", 8, "demo", "--store", "{S}", "--orders", "5", says="choose another --store"),
        c("demo-store-is-a-file", 8, "demo", "--store", "{D}/existing.jsonl", "--orders", "5"),
    ]


def _store_cases() -> list[Case]:
    return [
        c("status-missing-store", 4, "status", "--store", "{D}/nowhere", says="does not exist"),
        c("sql-missing-store", 4, "sql", "--store", "{D}/nowhere", "SELECT 1"),
        c("replay-missing-store", 4, "replay", "--table", TABLE, "--store", "{D}/nowhere", "--at", AT,
          "--to-file", "{D}/x.jsonl"),
        c("status-store-is-a-file", 4, "status", "--store", "{D}/existing.jsonl"),
        c("sql-bad-query", 2, "sql", "--store", "{S}", "SELEC nonsense", says="query failed"),
        c("sql-unknown-table", 2, "sql", "--store", "{S}", "SELECT * FROM nope"),
        c("sql-copy-into-the-store", 2, "sql", "--store", "{S}",
          "COPY (SELECT 1 AS x) TO '{S}/tables/orders/changes/x.parquet'", says="only reads"),
        c("sql-attach", 2, "sql", "--store", "{S}", "ATTACH '{S}/x.duckdb'", says="only reads"),
        c("sql-install", 2, "sql", "--store", "{S}", "INSTALL httpfs", says="only reads"),
        c("sql-select-then-copy", 2, "sql", "--store", "{S}", "SELECT 1; COPY (SELECT 1) TO '{D}/x.csv'",
          says="only reads"),
        c("history-bad-key-json", 2, "history", "--table", TABLE, "--store", "{S}", "--key", "{bad json"),
        c("history-key-wrong-schema", 2, "history", "--table", TABLE, "--store", "{S}", "--key", "nokey=1"),
        c("history-unknown-key", 1, "history", "--table", TABLE, "--store", "{S}", "--key", "pk=zzz",
          says="no changes recorded"),
        c("s3-store-unreachable", 7, "status", "--store", "s3://bucket/prefix", env=UNREACHABLE),
        c("check-missing-store", 4, "check", "--store", "{D}/nowhere"),
        c("check-format-bad", 2, "check", "--store", "{S}", "--format", "xml"),
        c("no-command", 2),
        c("unknown-command", 2, "restore"),
        c("unknown-option", 2, "status", "--store", "{S}", "--colour"),
        c("missing-store-option", 2, "status"),
    ]


def _aws_cases() -> list[Case]:
    no_region = {"AWS_REGION": "", "AWS_DEFAULT_REGION": "", "AWS_CONFIG_FILE": "/nonexistent"}
    no_credentials = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "",
                      "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
                      "AWS_EC2_METADATA_DISABLED": "true", **UNREACHABLE}
    replay = ("replay", "--table", TABLE, "--store", "{S}", "--at", AT, "--to-table", "restored", "--create-table")
    return [
        c("replay-to-table-no-region", 7, *replay, env=no_region, says="region"),
        c("replay-to-table-unreachable", 7, *replay, env=UNREACHABLE, says="could not reach AWS"),
        c("replay-to-table-no-credentials", 7, *replay, env=no_credentials, says="credentials"),
        c("verify-against-unreachable", 7, "verify", "--table", TABLE, "--store", "{S}", "--against", "orders",
          env=UNREACHABLE),
        c("verify-against-no-region", 7, "verify", "--table", TABLE, "--store", "{S}", "--against", "orders",
          env=no_region),
        c("repair-unreachable", 7, "repair", "--table", TABLE, "--store", "{S}", "--from", FROM, "--to", TO,
          "--target", "orders", "--dry-run", env=UNREACHABLE),
        c("consume-unreachable", 7, "consume", "--table", TABLE, "--store", "{S}", "--once", env=UNREACHABLE),
        c("consume-no-region", 7, "consume", "--table", TABLE, "--store", "{S}", "--once", env=no_region),
        c("bootstrap-scan-unreachable", 7, "bootstrap", "--table", TABLE, "--store", "{S}", "--scan",
          env=UNREACHABLE),
        c("recover-unreachable", 7, "recover", "--queue-url", "http://127.0.0.1:9/q", "--store", "{S}", "--dry-run",
          env=UNREACHABLE),
        c("recover-no-region", 7, "recover", "--queue-url", "http://127.0.0.1:9/q", "--store", "{S}", "--dry-run",
          env=no_region, says="region"),
        c("recover-missing-store", 4, "recover", "--queue-url", "http://127.0.0.1:9/q", "--store", "{D}/nowhere"),
        c("bootstrap-missing-export", 4, "bootstrap", "--table", TABLE, "--store", "{S}", "--from-export",
          "{D}/no-export"),
    ]


def _damaged_cases() -> list[Case]:
    """Stores with one damaged file each: refused in one line, never a traceback."""
    cases = []
    for store in ("garbage-meta", "empty-meta"):
        cases.append(c(f"replay-to-table-{store}", 6, "replay", "--table", TABLE, "--store", "{S}", "--at", AT,
                       "--to-table", "restored", "--dry-run", store=store, env=UNREACHABLE))
    for store in ("truncated-change", "zero-byte-change", "garbage-change"):
        cases.append(c(f"replay-{store}", 6, "replay", "--table", TABLE, "--store", "{S}", "--at", AT,
                       "--to-file", "{D}/x.jsonl", store=store))
        cases.append(c(f"sql-{store}", 6, "sql", "--store", "{S}", "SELECT count(*) FROM changes", store=store))
    return cases


CASES = (_table_cases() + _time_cases() + _where_cases() + _number_cases() + _output_cases()
         + _destructive_cases() + _store_cases() + _aws_cases() + _damaged_cases() + _into_the_store_cases()
         + _internal_message_cases())


# ---------------------------------------------------------------- the Lambda handler's corpus


def _good(sequence: int) -> dict[str, Any]:
    key = {"pk": {"S": f"h{sequence}"}}
    return lambda_record(TABLE, "INSERT", key, BASE, sequence, new=key)


def _with(record: dict[str, Any], **body: Any) -> dict[str, Any]:
    record["dynamodb"].update(body)
    return record


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"S": "x"}
    for _ in range(depth):
        value = {"M": {"m": value}}
    return value


def _handler_events() -> dict[str, tuple[dict[str, Any], str]]:
    """name -> (event whose second record is bad, a fragment of its quarantine reason)."""
    bad: dict[str, tuple[dict[str, Any], str]] = {
        "millis": (_with(_good(2), ApproximateCreationDateTime=BASE * 1000), "future"),
        "1e20": (_with(_good(2), ApproximateCreationDateTime=1e20), "not a time"),
        "negative": (_with(_good(2), ApproximateCreationDateTime=-5), "before 2012"),
        "zero": (_with(_good(2), ApproximateCreationDateTime=0), "before 2012"),
        "far-future": (_with(_good(2), ApproximateCreationDateTime=32_503_680_000), "future"),
        "string-time": (_with(_good(2), ApproximateCreationDateTime="yesterday"), "epoch seconds"),
        "bool-time": (_with(_good(2), ApproximateCreationDateTime=True), "epoch seconds"),
        "deep-map": (_with(_good(2), NewImage={"pk": {"S": "h2"}, "d": _nested(200)}), "nested"),
        "no-keys": (_with(_good(2), Keys=None), "key"),
        "bad-number": (_with(_good(2), NewImage={"pk": {"S": "h2"}, "n": {"N": "12abc"}}), "N must hold"),
        "bad-base64": (_with(_good(2), NewImage={"pk": {"S": "h2"}, "b": {"B": "***"}}), "base64"),
        "unknown-type": (_with(_good(2), NewImage={"pk": {"S": "h2"}, "x": {"Q": "1"}}), "unknown"),
        "bad-sequence": (_with(_good(2), SequenceNumber="12x"), "sequence"),
        "300-digit-sequence": (_with(_good(2), SequenceNumber="7" * 300), "300 digits"),
        "string-set-duplicate": (_with(_good(2), NewImage={"pk": {"S": "h2"}, "s": {"SS": ["a", "a"]}}),
                                 "same member twice"),
        "empty-attribute-name": (_with(_good(2), NewImage={"pk": {"S": "h2"}, "": {"S": "x"}}), "name is empty"),
        "image-missing-key": (_with(_good(2), NewImage={"other": {"S": "h2"}}), "lacks the key"),
        "keys-disagree": (_with(_good(2), NewImage={"pk": {"S": "someone-else"}}), "Keys disagree"),
        "over-400-kb": (_with(_good(2), NewImage={"pk": {"S": "h2"}, "x": {"S": "x" * 409_600}}), "400 KB"),
    }
    dotdot = lambda_record("..", "INSERT", {"pk": {"S": "h2"}}, BASE, 2, new={"pk": {"S": "h2"}})
    bad["arn-dotdot"] = (dotdot, "not a DynamoDB table name")
    slash = _good(2)
    slash["eventSourceARN"] = ARN.format(table="x") + "/../../../../etc"
    bad["arn-short"] = (slash, "not a DynamoDB table name")
    not_object = _good(2)
    not_object["dynamodb"] = "nope"
    bad["body-not-object"] = (not_object, "body")
    events = {name: ({"Records": [_good(1), record]}, reason) for name, (record, reason) in bad.items()}
    kinesis = kinesis_record("../evil", "INSERT", {"pk": {"S": "k"}}, BASE * 1000, "1", new={"pk": {"S": "k"}})
    good_kinesis = kinesis_record(TABLE, "INSERT", {"pk": {"S": "g"}}, BASE * 1000, "2", new={"pk": {"S": "g"}})
    events["kinesis-table-path"] = ({"Records": [good_kinesis, kinesis]}, "tableName")
    return events


HANDLER_EVENTS = _handler_events()


# ---------------------------------------------------------------- running it


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **UNREACHABLE}
    for name in ("AWS_ENDPOINT_URL", "AWS_MAX_ATTEMPTS"):
        env.setdefault(name, UNREACHABLE[name])
    env.update(extra)
    return {k: v for k, v in env.items() if v != ""}


def _damage(root: Path, how: str) -> None:
    changes = sorted((root / "tables" / TABLE / "changes").rglob("*.parquet"))
    target = changes[-1]
    data = target.read_bytes()
    if how == "garbage-meta":
        (root / "tables" / TABLE / "meta.json").write_text("{not json")
    elif how == "empty-meta":
        (root / "tables" / TABLE / "meta.json").write_text("")
    elif how == "truncated-change":
        target.write_bytes(data[: len(data) // 2])
    elif how == "zero-byte-change":
        target.write_bytes(b"")
    elif how == "garbage-change":
        target.write_bytes(b"PAR1" + bytes(range(256)) * 4 + b"PAR1")


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    changed: bool
    root: Path | None = None  # the handler's own store
    seconds: float = 0.0


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    base = tmp_path_factory.mktemp("corpus")
    good = base / "store"
    good.mkdir()
    store = LocalStore(good)
    work = Workload(table=TABLE)
    for n in range(30):
        work.put({"pk": {"S": f"k{n:02d}"}, "status": {"S": "new"}, "total": {"N": str(n)}}, BASE + n)
    for n in range(0, 30, 3):
        work.put({"pk": {"S": f"k{n:02d}"}, "status": {"S": "shipped"}, "total": {"N": str(n)}}, BASE + 30 + n)
    work.capture(store, batch=20)
    compact(store, TABLE, (BASE + 20) * 1_000_000, merge=False)
    stores = {"good": good}
    for how in ("garbage-meta", "empty-meta", "truncated-change", "zero-byte-change", "garbage-change"):
        shutil.copytree(good, base / how)
        _damage(base / how, how)
        stores[how] = base / how
    scratch = base / "scratch"
    scratch.mkdir()
    (scratch / "existing.jsonl").write_text("the user's file\n")
    (scratch / "existing.parquet").write_text("the user's file\n")
    (scratch / "dir.jsonl").mkdir()
    os.mkfifo(scratch / "fifo.jsonl")
    (scratch / "store-link").symlink_to(good)
    before = {name: _digest(root) for name, root in stores.items()}
    scratch_before = _digest(scratch)

    servers: queue.SimpleQueue[ForkServer] = queue.SimpleQueue()

    def run_case(case: Case) -> Outcome:
        argv = [a.replace("{S}", str(stores[case.store])).replace("{D}", str(scratch)) for a in case.argv]
        started = time.monotonic()
        server = servers.get()
        try:
            done = server.run(argv, _env(case.env))
        finally:
            servers.put(server)
        changed = _digest(stores[case.store]) != before[case.store]
        return Outcome(done.returncode, done.stdout, done.stderr, changed, seconds=time.monotonic() - started)

    def run_handler(name: str) -> Outcome:
        root = base / "handler" / name
        (root / "store").mkdir(parents=True)
        (root / "event.json").write_text(json.dumps(HANDLER_EVENTS[name][0]))
        done = subprocess.run([sys.executable, "-c", HANDLER, str(root / "event.json")], capture_output=True,
                              text=True, env=_env({"REWIND_STORE": str(root / "store")}),
                              stdin=subprocess.DEVNULL, timeout=120, check=False)
        return Outcome(done.returncode, done.stdout, done.stderr, False, root / "store")

    results: dict[str, Outcome] = {}
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(max_workers=WORKERS + 1) as pool:
        for _ in range(WORKERS):
            servers.put(stack.enter_context(ForkServer(_env({}))))
        futures = {f"handler-{name}": pool.submit(run_handler, name) for name in HANDLER_EVENTS}
        futures |= {case.name: pool.submit(run_case, case) for case in CASES}
        for name, future in futures.items():
            results[name] = future.result()
    if os.environ.get("CORPUS_TIMES"):
        for name, outcome in sorted(results.items(), key=lambda item: -item[1].seconds)[:25]:
            print(f"{outcome.seconds:6.2f}s {name}", file=sys.stderr)
    scratch_after = _digest(scratch)
    touched = sorted(set(scratch_after.items()) ^ set(scratch_before.items()))
    results["__scratch_unchanged__"] = Outcome(0, "", repr(touched), scratch_after != scratch_before)
    yield results


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) + len(HANDLER_EVENTS) >= 150
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_bad_input_is_one_line_with_its_exit_code_and_changes_nothing(outcomes: dict[str, Outcome],
                                                                        case: Case) -> None:
    outcome = outcomes[case.name]
    assert "Traceback" not in outcome.stderr, outcome.stderr
    # Internals of the libraries underneath are no message for a user.
    for leak in ("Python exception occurred", "Parameter validation failed", "Invalid Input Error"):
        assert leak not in outcome.stderr, outcome.stderr
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, outcome.stderr
    # Exit 1 is an answer ("no"), not an error: its line says so without the error prefix.
    assert lines[0].startswith("ddb-rewind: " if case.code == 1 else "ddb-rewind: error: "), lines[0]
    assert case.says in lines[0]
    assert outcome.code == case.code, lines[0]
    assert not outcome.changed, "the store was modified"


def test_no_bad_input_touched_the_users_files(outcomes: dict[str, Outcome]) -> None:
    assert not outcomes["__scratch_unchanged__"].changed, outcomes["__scratch_unchanged__"].stderr


@pytest.mark.parametrize("name", sorted(HANDLER_EVENTS))
def test_the_handler_quarantines_a_bad_record_and_captures_the_rest(outcomes: dict[str, Outcome],
                                                                    name: str) -> None:
    outcome = outcomes[f"handler-{name}"]
    assert outcome.code == 0 and "Traceback" not in outcome.stderr, outcome.stderr
    (result,) = [line for line in outcome.stdout.splitlines() if line.startswith("RESULT ")]
    assert json.loads(result.removeprefix("RESULT ")) == {"batchItemFailures": []}
    root = outcome.root
    assert root is not None
    assert [p.name for p in root.iterdir()] == ["tables"]
    quarantined = [json.loads(p.read_text()) for p in root.rglob("quarantine/**/*") if p.is_file()]
    assert len(quarantined) == 1
    assert HANDLER_EVENTS[name][1] in quarantined[0]["reason"]
    tables = {p.name for p in (root / "tables").iterdir()}
    assert tables <= {TABLE, "_unknown"}
    assert list(root.rglob("changes/**/*.parquet")), "the good record of the batch was not captured"
