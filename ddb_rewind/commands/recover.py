"""``ddb-rewind recover``: re-capture the batches Lambda gave up on, from the stack's on-failure queue."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from changelog.errors import UsageError
from changelog.store import Store, open_store
from changelog.timefmt import format_time, from_micros
from ddb_rewind.args import add_store

if TYPE_CHECKING:
    from stream_consumer.probe import ProbeSummary
    from stream_consumer.recover import Outcome


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser(
        "recover", help="re-capture failed stream batches from the on-failure queue; record lost ones as gaps",
        description="Read Lambda's on-failure records from the queue, read each batch's records again from "
                    "the stream and store them; a batch the stream no longer holds is recorded as a gap "
                    "(tables/<T>/gaps/), which status shows and replay refuses to cross. A message is "
                    "deleted only after its records or its gap are stored. Exit 1 when a gap was recorded "
                    "or a message could not be read; exit 8 when messages are held invisible by another "
                    "reader (a recover still running, or one stopped within its 15-minute hold).",
    )
    parser.add_argument("--queue-url", metavar="URL",
                        help="the on-failure queue (the stack's FailureQueueUrl output); needed unless --probe")
    parser.add_argument("--probe", action="store_true",
                        help="then probe the shards of --table's stream: list them and read one page after "
                             "what the consumer Lambda stored of each, and record what that proves (the stack "
                             "runs this on a schedule); coverage on the Lambda path needs it")
    add_store(parser)
    parser.add_argument("--table", metavar="T", default=None,
                        help="only this table's batches (others stay in the queue); a Kinesis batch is the "
                             "table's when the table holds the consumer's pending record for it")
    parser.add_argument("--dry-run", action="store_true",
                        help="read the stream and report; write nothing and delete no message")
    parser.set_defaults(run=run)


def _line(outcome: Outcome, dry_run: bool) -> str:
    batch = outcome.batch
    tables = f" ({', '.join(outcome.tables)})" if batch.table is None and outcome.tables else ""
    where = f"{batch.label}{tables} shard {batch.shard_id} sequence {batch.start_sequence} to {batch.end_sequence}"
    if outcome.gap is None:
        verb = "would recover" if dry_run else "recovered"
        files = "" if dry_run else f", {len(outcome.files):,} files"
        return f"{verb} {where}: {outcome.records} records{files}"
    start = format_time(from_micros(outcome.gap.start_us)) if outcome.gap.start_us is not None else "unknown"
    recorded = "would be recorded" if dry_run else f"recorded in {outcome.gap_path}"
    return (f"GAP {where}: {outcome.gap.reason}; {outcome.records} records read back; moments from "
            f"{start} on need a new bootstrap; gap {recorded}")


def probe(store: Store, table: str, *, dry_run: bool) -> ProbeSummary:
    """Probe the shards of ``table``'s stream (a refused stream raises as ``consume`` does) and print each finding."""
    import boto3

    from stream_consumer.poller import stream_arn
    from stream_consumer.probe import probe_stream
    from stream_consumer.recover import streams_client

    _, arn = stream_arn(boto3.client("dynamodb"), table)
    summary = probe_stream(store, table, streams_client(), arn, dry_run=dry_run)
    for finding in summary.findings:
        proven = format_time(from_micros(finding.watermark_us)) if finding.watermark_us is not None else "nothing"
        print(f"probe {table} shard {finding.shard_id}: {finding.state}, complete to {proven}", flush=True)
    states = [finding.state for finding in summary.findings]
    print(f"probe: {len(states):,} shards, {states.count('behind'):,} behind, {states.count('trimmed'):,} trimmed, "
          f"{summary.gaps:,} gaps" + (" (dry run: nothing written)" if summary.dry_run else ""))
    return summary


def run(args: argparse.Namespace) -> int:
    """Drain the queue, one line per batch and one summary line; then probe the table's shards if asked."""
    if args.queue_url is None and not args.probe:
        raise UsageError("recover needs --queue-url (drain the on-failure queue), --probe (probe --table's "
                         "shards), or both")
    if args.probe and args.table is None:
        raise UsageError("--probe needs --table (the table whose stream's shards are probed)")
    store = open_store(args.store, allow_empty=True)  # recovered batches may start the store
    status = _drain(args, store) if args.queue_url is not None else 0
    if not args.probe:
        return status
    return max(status, 1 if probe(store, args.table, dry_run=args.dry_run).gaps else 0)


def _drain(args: argparse.Namespace, store: Store) -> int:
    import boto3

    from stream_consumer.recover import RecoveryInFlight, recover_queue, streams_client

    summary = recover_queue(
        store, boto3.client("sqs"), streams_client(), args.queue_url, table=args.table, dry_run=args.dry_run,
        report=lambda outcome: print(_line(outcome, args.dry_run), flush=True),
        warn=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(
        f"recover: {summary.recovered:,} batches recovered, {summary.gaps:,} gaps, {summary.records:,} records, "
        f"{summary.files:,} files, {summary.skipped:,} left for other tables, {summary.unreadable:,} unreadable"
        + (" (dry run: nothing written, no message deleted)" if summary.dry_run else "")
    )
    if summary.in_flight:
        raise RecoveryInFlight(
            f"{summary.in_flight:,} messages of {args.queue_url} are held by another reader (a recover still "
            "running, or one stopped within its 15-minute hold): their batches are not recovered and coverage "
            "stays held before them; run recover again once they are visible"
        )
    return 1 if summary.gaps or summary.unreadable else 0
