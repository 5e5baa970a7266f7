"""``ddb-rewind history``: every version of one item, with the attribute paths each change touched."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from changelog.store import open_store
from changelog.timefmt import format_time
from ddb_rewind.args import add_engine, add_format, add_store, add_table

if TYPE_CHECKING:
    from replayer.forensics.attrdiff import PathChange


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser("history", help="every version of one item, in order",
                                   description="Every change of one item: time, event, sequence number, "
                                               "and the attribute paths added, removed or changed.")
    add_table(parser)
    add_store(parser)
    parser.add_argument("--key", required=True, metavar="KEY",
                        help='DynamoDB JSON ({"pk":{"S":"a"}}) or pk=a,sk=5 typed from the key schema')
    parser.add_argument("--partial", action="store_true",
                        help="list the changes the store holds even when a gap or a quarantined record "
                             "means some may be missing, and name each such loss")
    add_format(parser)
    add_engine(parser)
    parser.set_defaults(run=run)


def _describe(change: PathChange) -> str:
    from changelog.codec import dump_json

    if change.kind == "added":
        return f"+ {change.path} = {dump_json(change.new)}"
    if change.kind == "removed":
        return f"- {change.path} (was {dump_json(change.old)})"
    return f"~ {change.path}: {dump_json(change.old)} -> {dump_json(change.new)}"


def run(args: argparse.Namespace) -> int:
    """Print the item's versions as a readable list or a JSON array."""
    from changelog.docs import key_text
    from changelog.meta import key_names
    from replayer.forensics.history import history_losses, item_history, resolve_key

    store = open_store(args.store)
    versions = item_history(store, args.table, args.key, engine=args.engine, partial=args.partial)
    losses = history_losses(store, args.table) if args.partial else ()
    for loss in losses:
        # Said on stderr so that the versions on stdout stay one shape for scripts.
        print(f"ddb-rewind: may be missing: {loss.what}", file=sys.stderr)
    if args.format == "json":
        json.dump([v.as_json() for v in versions], sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    if not versions:
        # Most often a mistyped key: say so, and exit non-zero so scripts notice.
        print(f"ddb-rewind: no changes recorded for key {args.key} in table {args.table}", file=sys.stderr)
        return 1
    if args.format == "json":
        return 0
    key, _canonical = resolve_key(store, args.table, args.key)
    print(f"{args.table} {key_text(key, key_names(store, args.table))}")
    for version in versions:
        label = "REMOVE (TTL)" if version.is_ttl_delete else version.event_name
        sequence = version.sequence_number.lstrip("0") or "0"
        print(f"{format_time(version.event_time)}  {label:<12}  seq {sequence}")
        for change in version.changes:
            print(f"    {_describe(change)}")
    print(f"({len(versions):,} change{'s' if len(versions) != 1 else ''})")
    return 0
