"""``ddb-rewind check``: the integrity of every file in a store (exit 0 only when all is sound, else 6)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from changelog.errors import EXIT_DAMAGED
from changelog.store import open_store
from ddb_rewind.args import add_format, add_store, add_table

if TYPE_CHECKING:
    from replayer.proving.check import CheckReport


def register(subparsers: Any) -> None:
    """Add the subcommand."""
    parser = subparsers.add_parser(
        "check", help="verify every manifest, snapshot part and change file against its checksum",
        description="Verify manifests (parse, counts, hash chain), snapshot parts (present, recorded size), "
                    "change files (checksum in the name; their footer: rows of their table and hour partition) "
                    "and gap records (each gap a checkpoint lists still has its record); --read-data also reads, "
                    "hashes and decodes every file. "
                    "Names each problem and the restore points it affects. Exit 0 only when all is sound, 6 if not.")
    add_store(parser)
    add_table(parser, required=False)
    parser.add_argument("--read-data", action="store_true",
                        help="read every file whole: sha256 against its record and a full decode")
    add_format(parser)
    parser.set_defaults(run=run)


def _as_json(report: CheckReport) -> str:
    return json.dumps({
        "sound": report.sound,
        "read_data": report.read_data,
        "tables": list(report.tables),
        "checked": {"manifests": report.manifests, "parts": report.parts, "change_files": report.change_files,
                    "gap_records": report.gaps, "ledger_records": report.ledger, "erasures": report.erasures},
        "verified": report.verified,
        "not_verified": list(report.not_verified),
        "problems": [{"table": f.table, "file": f.path, "problem": f.problem, "affects": f.affects}
                     for f in report.problems],
        "notes": [{"table": f.table, "file": f.path, "note": f.problem, "affects": f.affects}
                  for f in report.findings if not f.is_problem],
    }, indent=2)


def _as_text(report: CheckReport) -> str:
    lines = [f"checked {len(report.tables):,} table(s)", f"verified: {report.verified}"]
    lines += [f"not verified: {what}" for what in report.not_verified]
    for finding in report.findings:
        label = "PROBLEM" if finding.is_problem else "note"
        lines.append(f"{label}: {finding.path} {finding.problem}")
        lines.append(f"  affects: {finding.affects}")
    problems = len(report.problems)
    lines.append("no problems found in what was verified" if not problems else
                 f"{problems:,} problem(s) found: restore the named files from the bucket's object versions "
                 "(or a copy), or rebuild a damaged snapshot with 'compact' after removing it")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the report; exit 0 when sound, 6 when anything a restore depends on is damaged."""
    from replayer.proving.check import check_store

    report = check_store(open_store(args.store), args.table, read_data=args.read_data)
    print(_as_json(report) if args.format == "json" else _as_text(report))
    return 0 if report.sound else EXIT_DAMAGED
