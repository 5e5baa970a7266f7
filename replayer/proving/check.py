"""``ddb-rewind check``: every file of a store against its recorded checksum, like ``restic check``.

Lives in ``replayer/`` because it is a read-only audit of what restores depend on (as ``verify`` is),
built from the same readers' pieces: manifests and the chain (``changelog.snapshot``), recorded
checksums (``changelog.integrity``) and the state plan's rule for which files a moment reads.

Per table it checks: meta.json, retention.json and checkpoints parse; every manifest parses, its
counts add up and the chain of manifests and removal records is unbroken; every listed part is
present with its recorded size; every change file carries a checksum in its name, and its footer
says its rows are of its table and its hour partition (a few KB per file, not its rows); every gap
record parses, and every gap a checkpoint lists still has its record; every change file and gap
record the ledger names is there unless merge or expire recorded removing it, and no ledger record
is missing before its chain's newest (``changelog.ledger``, read from the listing alone); every erasure
``forget`` recorded (``changelog.forgotten``) replaced files that are gone, with replacements the ledger
names, and (with ``read_data``) no file or quarantined record read holds a version it erased. With
``read_data`` every part and change file is read whole, hashed and fully decoded (page checksums
verified). It names orphans (parts no manifest lists, ``.tmp-*`` leftovers of a crashed write) as
notes: they affect no restore.
Each problem says which restore points it affects. A ``sample`` limits the reading to the files it
selects (the scheduled verifier re-hashes a rotating share each run, ``replayer.proving.scheduled``); every
other check still covers every file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from changelog.captured import read_capture_record
from changelog.damage import damaged, read_json_object
from changelog.errors import DamagedStore, TableNotFound
from changelog.forgotten import (
    Erasure,
    erased_keys,
    erased_versions_in,
    erasure_records,
    foreign_objects,
    read_erasure,
)
from changelog.gaps import checkpoint_gaps, gap_path, gaps_root, read_gap
from changelog.integrity import Expected, expectations, inspect_file
from changelog.layout import (
    TABLES,
    capture_root,
    changes_root,
    checkpoints_root,
    foreign_table_folders,
    forgotten_root,
    hour_partition,
    meta_path,
    parse_change_file_name,
    partition_of,
    retention_path,
    settings_root,
    snapshots_root,
    table_names,
    table_root,
)
from changelog.ledger import CHANGE_FILE, find_missing, read_ledger
from changelog.quarantine import is_quarantine_path, read_quarantined
from changelog.settings import is_settings_record, read_settings_record
from changelog.snapshot import (
    MANIFEST,
    Removal,
    StoredManifest,
    chain_problems,
    read_manifest,
    read_removals,
)
from changelog.store import ObjectMissing, Store
from changelog.timefmt import format_time, from_micros


@dataclass(frozen=True)
class Finding:
    """One thing ``check`` found. ``problem`` findings make the store unsound; notes do not."""

    table: str
    path: str
    problem: str
    affects: str
    is_problem: bool = True


@dataclass(frozen=True)
class CheckReport:
    """What ``check`` looked at and found."""

    tables: tuple[str, ...]
    manifests: int
    parts: int
    change_files: int
    read_data: bool
    findings: tuple[Finding, ...]
    gaps: int = 0  # gap records read
    files_read: int = 0  # parts and change files read whole (all of them unless sampled)
    sampled: bool = False  # only a sample of the files was read whole
    ledger: int = 0  # ledger records matched against the listing
    erasures: int = 0  # erasure records (``forget``) whose replaced files were checked gone

    @property
    def verified(self) -> str:
        """What this check verified, in words."""
        files = ("read whole, hashed against their records and decoded" if self.read_data else
                 "present with their recorded sizes and names")
        if self.sampled:
            files = f"present with their recorded sizes and names ({self.files_read:,} of them {files})"
        return (f"{self.manifests:,} manifests and their chain, {self.parts:,} snapshot parts and "
                f"{self.change_files:,} change files {files}, the table and hour of every change file's rows, "
                f"{self.gaps:,} gap records, and that every change file and gap record the ledger's "
                f"{self.ledger:,} records name is present unless merge or expire removed it"
                + (f"; {self.erasures:,} erasures: every file they replaced is gone and every replacement is in "
                   "the ledger" + (", and no file or quarantined record read holds a version they erased"
                                  if self.read_data else "")
                   if self.erasures else ""))

    @property
    def not_verified(self) -> tuple[str, ...]:
        """What this check did not verify (each a reason a store it passes may still be damaged)."""
        if self.read_data and not self.sampled:
            return ()
        if self.sampled:
            return ("file contents outside this sample: a changed byte inside a file of the right size",)
        return ("file contents: a changed byte inside a file of the right size (run with --read-data)",)

    @property
    def problems(self) -> tuple[Finding, ...]:
        """Findings that make the store unsound."""
        return tuple(f for f in self.findings if f.is_problem)

    @property
    def sound(self) -> bool:
        """True when nothing a restore depends on is damaged."""
        return not self.problems


def _at(us: int) -> str:
    return format_time(from_micros(us))


def _snapshot_window(manifests: list[StoredManifest], index: int) -> str:
    """Which restore points read snapshot ``index`` (of time-ordered manifests)."""
    at = manifests[index].manifest.snapshot_time_us
    later = [m.manifest.snapshot_time_us for m in manifests[index + 1:] if m.manifest.snapshot_time_us > at]
    until = f" until {_at(min(later))}" if later else " on"
    return f"snapshot {_at(at)} unusable; moments from {_at(at)}{until} affected"


def _change_window(path: str, manifests: list[StoredManifest]) -> str:
    """Which restore points read a change file: from its hour until a later snapshot consumed it."""
    partition = partition_of(path)
    day, hour = partition.split("/")
    start = f"{day[3:]}T{hour[5:]}:00:00Z"
    for stored in manifests:  # oldest first
        manifest = stored.manifest
        if hour_partition(manifest.snapshot_time_us) > partition and path in manifest.consumed_files:
            return f"moments from {start} until {_at(manifest.snapshot_time_us)} affected (and sql, history, status)"
    return f"moments from {start} on affected (and sql, history, status)"


def _tmp_leftovers(store: Store, table: str) -> list[str]:
    """``.tmp-*`` files a crashed local write left (S3 writes are atomic and leave none)."""
    root = store.local_root()
    if root is None or not (root / table_root(table)).is_dir():
        return []
    found: list[str] = []
    for directory, _subdirs, files in os.walk(root / table_root(table)):
        found.extend(os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/")
                     for name in files if name.startswith(".tmp-"))
    return sorted(found)


def _check_json(store: Store, table: str, sizes: dict[str, int]) -> list[Finding]:
    found: list[Finding] = []
    documents: list[tuple[str, str, Callable[[Store, str], object]]] = [
        (meta_path(table), "every restore of the table (meta.json holds its key schema)", read_json_object),
        (retention_path(table), "the earliest restorable time (every reader refuses the table)", read_json_object),
    ]
    # Capture's records, read as coverage reads them (changelog.captured): one coverage would refuse
    # stops every reader of the table.
    documents += [(p, "the latest restorable time (every reader refuses the table)",
                   lambda s, p: read_capture_record(s, table, p))
                  for p in sorted(sizes) if p.endswith(".json")
                  and (p.startswith(checkpoints_root(table)) or p.startswith(capture_root(table)))]
    documents += [(p, "every moment of the table (a quarantined record of unknown time may be a change of any moment)",
                   _read_quarantined)
                  for p in sorted(sizes) if is_quarantine_path(table, p)]
    documents += [(p, "restores that recreate the table's settings (--create-table, serve): they refuse the table",
                   read_settings_record)
                  for p in sorted(sizes) if p.startswith(settings_root(table) + "/") and is_settings_record(p)]
    for path, affects, read in documents:
        if path not in sizes:
            continue
        try:
            read(store, path)
        except DamagedStore as exc:
            found.append(Finding(table, path, _short(exc, path), affects))
        except OSError as exc:
            found.append(Finding(table, path, f"cannot be read ({exc})", affects))
    return found


def _read_quarantined(store: Store, path: str) -> None:
    """A quarantine document as capture wrote it: a JSON object saying when it kept the record.

    The kept record itself may be anything (it could not be decoded); the document around it, once
    unreadable, leaves the loss it stands for without a time, so coverage refuses every moment.
    """
    kept = read_quarantined(store, path)
    if kept is not None and (kept.document is None or kept.quarantined_at_us is None):
        raise damaged(store, path, "is not a quarantine document capture writes (no readable quarantined_at): "
                                   "the loss it stands for has no known time")


def _short(exc: Exception, path: str) -> str:
    """The problem part of a DamagedStore message (after the path, before what to do)."""
    text = str(exc)
    text = text.split(f"/{path} ", 1)[-1]
    return text.split(": restore it from", 1)[0]


def _check_manifests(store: Store, table: str, sizes: dict[str, int], reads: Callable[[str], bool],
                     ) -> tuple[list[StoredManifest], list[Finding], int]:
    found: list[Finding] = []
    manifests: list[StoredManifest] = []
    for path in sorted(p for p in sizes if p.startswith(snapshots_root(table) + "/") and p.endswith("/" + MANIFEST)):
        try:
            manifests.append(read_manifest(store, path))
        except DamagedStore as exc:
            moment = path.split("/")[-2]
            found.append(Finding(table, path, _short(exc, path),
                                 f"snapshot {moment} unusable; every reader refuses the table until it is restored"))
    manifests.sort(key=lambda m: m.manifest.snapshot_time_us)
    removals: list[Removal] = []
    try:
        removals = read_removals(store, table)
    except DamagedStore as exc:
        found.append(Finding(table, "snapshot-removals", str(exc), "every reader refuses the table"))
    for broken in chain_problems(manifests, removals):
        when = f" (snapshot {_at(broken.snapshot_time_us)})" if broken.snapshot_time_us is not None else ""
        found.append(Finding(table, broken.path, broken.problem + when,
                             "the snapshot history is not trustworthy; every reader refuses the table"))
    parts = 0
    listed: set[str] = set()
    for index, stored in enumerate(manifests):
        directory = stored.path.rsplit("/", 1)[0]
        for entry in stored.manifest.part_sums:
            part = f"{directory}/{entry.name}"
            listed.add(part)
            parts += 1
            expected = Expected(part, "snapshot part", entry.sha256, entry.size, entry.rows)
            problem = inspect_file(store, expected, sizes.get(part), reads(part))
            if problem:
                found.append(Finding(table, part, problem, _snapshot_window(manifests, index)))
    parsed = {stored.path.rsplit("/", 1)[0] for stored in manifests}
    unreadable = {p.rsplit("/", 1)[0] for p in sizes if p.endswith("/" + MANIFEST)} - parsed
    for path in sorted(p for p in sizes if p.startswith(snapshots_root(table) + "/")):
        # Parts of a snapshot whose manifest is unreadable are covered by that manifest's problem.
        if path not in listed and not path.endswith("/" + MANIFEST) and path.rsplit("/", 1)[0] not in unreadable:
            found.append(Finding(table, path, "is an orphan: no manifest lists it (a crashed or losing writer)",
                                 "no restore point (expire removes it)", is_problem=False))
    return manifests, found, parts


def _check_changes(store: Store, table: str, sizes: dict[str, int], manifests: list[StoredManifest],
                   reads: Callable[[str], bool]) -> tuple[list[Finding], int]:
    found = []
    files = sorted(p for p in sizes if p.startswith(changes_root(table) + "/"))
    readers = "every reader of the table refuses it (sql, history, status, replays of its hour)"
    for path in files:
        if not path.endswith(".parquet"):
            found.append(Finding(table, path, "is a foreign file: ddb-rewind wrote no such file here",
                                 "no reader (it is not a change file, and readers skip it): remove it"))
            continue
        if parse_change_file_name(path) is None:
            found.append(Finding(table, path, "is a foreign file: its name carries no checksum ddb-rewind wrote",
                                 readers))
            continue
        try:
            (expected,) = expectations(store, [path]).values()
        except DamagedStore as exc:
            found.append(Finding(table, path, _short(exc, path), readers))
            continue
        problem = inspect_file(store, expected, sizes.get(path), reads(path))
        if problem:
            found.append(Finding(table, path, problem, _change_window(path, manifests)))
    return found, len(files)


def _check_gaps(store: Store, table: str, sizes: dict[str, int], unsound: set[str],
                ) -> tuple[list[Finding], int, set[str]]:
    """Every gap record parses, and every gap a checkpoint lists still has its record; every change file and gap
record the ledger names is there unless merge or expire recorded removing it, and no ledger record
is missing before its chain's newest (``changelog.ledger``, read from the listing alone).

    A deleted gap record would otherwise go unnoticed (readers also take the checkpoint's copy:
    ``changelog.gaps.all_gaps``). Checkpoints in ``unsound`` were already reported unreadable.
    Also returns the gap record paths the checkpoints list.
    """
    found: list[Finding] = []
    listed_paths: set[str] = set()
    records = sorted(p for p in sizes if p.startswith(gaps_root(table)) and p.endswith(".json"))
    for path in records:
        try:
            read_gap(store, path)
        except DamagedStore as exc:
            found.append(Finding(table, path, _short(exc, path), "every reader refuses the table"))
    checkpoints = sorted(p for p in sizes if p.startswith(checkpoints_root(table)) and p.endswith(".json"))
    for checkpoint in checkpoints:
        if checkpoint in unsound:
            continue
        try:
            listed = checkpoint_gaps(store, checkpoint)
        except DamagedStore as exc:
            found.append(Finding(table, checkpoint, _short(exc, checkpoint), "every reader refuses the table"))
            continue
        for gap in listed:
            record = gap_path(table, gap)
            listed_paths.add(record)
            if record not in sizes:
                found.append(Finding(
                    table, record, f"is missing: the checkpoint {checkpoint} lists this gap ({gap.describe()})",
                    "status no longer lists the gap; readers still refuse the moments it affects (the "
                    "checkpoint lists it): restore the record"))
    return found, len(records), listed_paths


def _check_ledger(store: Store, table: str, sizes: dict[str, int], listed_gaps: set[str],
                  manifests: list[StoredManifest]) -> tuple[list[Finding], int]:
    """What the ledger records and the store no longer holds (``changelog.ledger``), and a recorded
    change file whose size differs from its record."""
    ledger = read_ledger(store, table, sorted(sizes))
    records = ledger.records
    found = [Finding(table, path, "is not a ledger record ddb-rewind writes (a foreign or renamed object)",
                     "no restore point, but the ledger cannot vouch for what it replaced")
             for path in ledger.foreign]
    for missing in find_missing(store, table, sorted(sizes), records, listed_gaps, ledger.folded):
        if missing.kind == CHANGE_FILE:
            affects = _change_window(missing.path, manifests)
        else:
            loss = missing.loss
            start = "every moment" if loss.start_us is None else f"moments from {_at(loss.start_us)}"
            affects = f"{start} refused until a bootstrap after {_at(loss.end_us)} (and history, sql, status)"
        found.append(Finding(table, missing.path, missing.problem, affects))
    for record in records:
        size = sizes.get(record.target)
        if record.kind == "put" and size is not None and record.size != size:
            found.append(Finding(table, record.target,
                                 f"is {size} bytes, its ledger record {record.path} says {record.size}",
                                 _change_window(record.target, manifests)))
    return found, len(records)


def _check_erasures(store: Store, table: str, sizes: dict[str, int], read: list[str],
                    quarantine: list[str]) -> tuple[list[Finding], int]:
    """The forget ledger (``changelog.forgotten``): each erasure's replaced files are gone, each replacement
    is present or was removed on the ledger's record (a later merge or forget); and, among the files
    read whole (``read``) and the quarantined records read (``quarantine``), none holds a version an
    erasure covers: proven with the ledger's keyed hashes, never with a key."""
    found = [Finding(table, path, "is not a forget record ddb-rewind writes (a foreign or renamed object)",
                     "no restore point, but the forget ledger cannot vouch for it")
             for path in foreign_objects(sizes, table)]
    erasures: list[Erasure] = []
    for path in erasure_records(sizes, table):
        try:
            erasures.append(read_erasure(store, path))
        except DamagedStore as exc:
            found.append(Finding(table, path, _short(exc, path), "capture cannot tell which records to drop: "
                                 "every capture of the table fails until it is restored"))
    if not erasures:
        return found, 0
    try:
        ledger = erased_keys(store, table)
    except DamagedStore as exc:
        return [*found, Finding(table, forgotten_root(table), str(exc), "capture of the table fails")], len(erasures)
    records = read_ledger(store, table, sorted(sizes)).records
    removed = {r.target for r in records if r.kind == "del"}
    published = {r.target for r in records if r.kind == "put"}
    for erasure in erasures:
        for swap in erasure.replaced:
            if swap.old in sizes:
                found.append(Finding(table, swap.old, f"still holds versions the erasure {erasure.path} removed: "
                                     "that forget did not finish", "the erased item can still be restored: run "
                                     "forget again for the same key"))
            new = swap.new
            if new is None or parse_change_file_name(new) is None:
                continue  # a snapshot part: its manifest lists it, and the manifest checks cover it
            if new not in sizes and new not in removed:
                found.append(Finding(table, new, f"is missing: the erasure {erasure.path} wrote it in place of "
                                     f"{swap.old}", _change_window(new, [])))
            elif new not in published:
                found.append(Finding(table, new, f"is not in the ledger: the erasure {erasure.path} says it "
                                     "wrote it", "the ledger cannot vouch for this replacement"))
        found.append(Finding(table, erasure.path,
                             f"records an erasure at {erasure.at} ({erasure.reason}): {erasure.versions_removed:,} "
                             f"versions and {erasure.snapshot_rows_removed:,} snapshot rows removed, "
                             f"{len(erasure.replaced):,} files replaced, erased up to "
                             f"{_at(erasure.erased_up_to_us)}", "no restore point yields the erased item",
                             is_problem=False))
    if ledger is not None:
        reported = {f.path for f in found}
        for path in (p for p in read if p not in reported):
            try:
                rows = pq.read_table(pa.BufferReader(store.read(path)), columns=["item_key", "event_time"])
            except (pa.ArrowException, OSError, KeyError, ObjectMissing):
                continue  # reported by the file's own check
            count = erased_versions_in(rows, ledger)
            if count:
                found.append(Finding(table, path, f"holds {count:,} versions an erasure removed (the ledger's "
                                     "keyed hash matches)", "the erased item can still be restored: run forget "
                                     "again for the same key"))
        for path in (p for p in quarantine if p not in reported):
            kept = read_quarantined(store, path)
            if kept is not None and ledger.holds_erased(kept):
                found.append(Finding(table, path, "is a quarantined copy of a version an erasure removed (the "
                                     "ledger's keyed hash matches)", "requeue would bring the erased item back: "
                                     "run forget again for the same key"))
    return found, len(erasures)


def check_table(store: Store, table: str, read_data: bool, sample: Callable[[str], bool] | None = None,
                ) -> tuple[int, int, int, int, int, int, int, list[Finding]]:
    """(manifests, parts, change files, gap records, ledger records, files read whole, erasures, findings)
    of one table.

    With ``read_data``, the files ``sample`` selects (default: all) are read whole.
    """
    read: list[str] = []

    def reads(path: str) -> bool:
        if read_data and (sample is None or sample(path)):
            read.append(path)
            return True
        return False

    sizes = store.sizes(table_root(table) + "/")
    if not sizes:
        raise TableNotFound(f"the store {store.uri} holds no table {table!r}: run 'ddb-rewind status' to list tables")
    findings = _check_json(store, table, sizes)
    gap_findings, gap_count, listed_gaps = _check_gaps(store, table, sizes, {f.path for f in findings})
    findings += gap_findings
    manifests, manifest_findings, parts = _check_manifests(store, table, sizes, reads)
    findings += manifest_findings
    change_findings, change_count = _check_changes(store, table, sizes, manifests, reads)
    findings += change_findings
    ledger_findings, ledger_count = _check_ledger(store, table, sizes, listed_gaps, manifests)
    findings += ledger_findings
    quarantine = [path for path in sorted(sizes) if is_quarantine_path(table, path)
                  and read_data and (sample is None or sample(path))]
    erasure_findings, erasures = _check_erasures(store, table, sizes, read, quarantine)
    findings += erasure_findings
    findings += [Finding(table, path, "is a leftover of an interrupted write", "no restore point (safe to delete)",
                         is_problem=False) for path in _tmp_leftovers(store, table)]
    if meta_path(table) not in sizes:
        findings.append(Finding(table, meta_path(table), "is missing",
                                "restores into a new table (--create-table) cannot read the key schema",
                                is_problem=False))
    return len(manifests), parts, change_count, gap_count, ledger_count, len(read), erasures, findings


def check_store(store: Store, table: str | None = None, *, read_data: bool = False,
                sample: Callable[[str], bool] | None = None) -> CheckReport:
    """Check every table of the store (or one); with ``read_data``, read whole the files ``sample`` selects."""
    listing = [] if table else store.list(TABLES + "/")
    tables = [table] if table else table_names(listing)
    manifests = parts = changes = gaps = ledger = read = erasures = 0
    findings = [Finding(name, f"{TABLES}/{name}/", "is no table of this store: no table can have that name",
                        "nothing reads it; move it out of the store") for name in foreign_table_folders(listing)]
    for name in tables:
        m, p, c, g, lg, r, e, f = check_table(store, name, read_data, sample)
        manifests, parts, changes, gaps = manifests + m, parts + p, changes + c, gaps + g
        ledger, read, erasures = ledger + lg, read + r, erasures + e
        findings += f
    return CheckReport(tuple(tables), manifests, parts, changes, read_data, tuple(findings), gaps, read,
                       sampled=read_data and sample is not None, ledger=ledger, erasures=erasures)

