"""The store: a local directory or ``s3://bucket/prefix``, with atomic and conditional writes.

Every object is written whole (a temporary file renamed into place locally; one PutObject on S3),
so readers never see half a file. ``write(..., if_absent=True)`` is the race guard that manifests
and checkpoints rely on: S3's ``If-None-Match: *`` and, locally, a hard link that fails if the name
exists. A conditional write that finds the object already there reads it back: the same bytes are
our own earlier attempt (an answer lost on the way back and retried), not a lost race, because
every conditionally written object carries its writer's id and time.

Every failure of the store itself (an S3 error answer, a dropped connection, a timeout, a local
I/O error) is a StoreError with one line; a missing object is ObjectMissing.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from changelog.errors import ConflictError, DamagedStore, StoreError, StoreNotFound, UsageError
from changelog.layout import TABLES

if TYPE_CHECKING:
    import pyarrow.fs as pafs

# boto3, botocore and pyarrow are imported where a store first needs them: a command that never
# touches S3 or Arrow (``--help``, a local ``status``) should not pay half a second to load them.


class ObjectMissing(StoreError):
    """The object asked for is not in the store."""


class Store:
    """Common interface of the two store kinds; paths are relative, '/'-separated."""

    uri: str

    def read(self, path: str) -> bytes:
        """The object's bytes; raises ObjectMissing."""
        raise NotImplementedError

    def write(self, path: str, data: bytes, *, if_absent: bool = False) -> None:
        """Write the whole object atomically; with ``if_absent`` raise ConflictError if it exists."""
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        """Relative paths of all objects under ``prefix`` (recursive), sorted."""
        raise NotImplementedError

    def sizes(self, prefix: str) -> dict[str, int]:
        """Sizes in bytes of all objects under ``prefix``."""
        raise NotImplementedError

    def delete(self, path: str) -> None:
        """Remove one object; a missing object is not an error."""
        raise NotImplementedError

    def delete_many(self, paths: Sequence[str]) -> None:
        """Remove these objects (a missing one is not an error) in as few calls as the store allows.

        Their order is not kept within one call: a caller that needs some gone before others calls twice.
        """
        for path in paths:
            self.delete(path)

    def purge(self, path: str) -> None:
        """Remove one object and every earlier version of it a versioned bucket keeps (for erasure)."""
        self.delete(path)

    def erase_refusal(self, paths: Sequence[str], *, probe: bool = False) -> str | None:
        """Why these objects cannot be erased for good (S3 Object Lock in compliance mode), or None.

        With ``probe`` (a real erasure, never a dry run) a store may also try what the erasure needs
        (S3 Object Lock in governance mode: deleting a locked version with the bypass) on an object of
        its own, so a missing permission is refused before anything is written.
        """
        return None

    def exists(self, path: str) -> bool:
        """Whether the object exists."""
        try:
            self.read(path)
        except ObjectMissing:
            return False
        return True

    def modified_times(self, prefix: str) -> dict[str, float]:
        """Last-modified epoch seconds of all objects under ``prefix``."""
        raise NotImplementedError

    def _settle_conflict(self, path: str, data: bytes) -> None:
        """A conditional write found ``path`` taken: fine if it holds our bytes, else ConflictError.

        Our own earlier attempt may have been applied with its answer lost (a dropped connection,
        then a retry that meets the precondition): equal bytes mean it was ours, since every
        conditionally written object names its writer and time.
        """
        try:
            if self.read(path) == data:
                return
        except ObjectMissing:
            pass
        raise ConflictError(f"{path} was written by another writer first")

    def arrow(self) -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem and the root path inside it, for Parquet readers and writers."""
        raise NotImplementedError

    def local_root(self) -> Path | None:
        """The directory of a local store (DuckDB reads it directly), None for S3."""
        return None

    def relative(self, destination: str) -> str | None:
        """Where ``destination`` (a local path or s3:// URI) lies inside the store ("" for its root), or None."""
        raise NotImplementedError


class ReadOnce(Store):
    """A read-only view of ``store`` that fetches each object at most once.

    For one reader that reads some records twice through different rules (coverage reads each
    checkpoint for its shard's progress and for the gaps it lists): on S3 each read is a GET.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.uri = store.uri
        self._read: dict[str, bytes] = {}

    def read(self, path: str) -> bytes:
        if path not in self._read:
            self._read[path] = self.store.read(path)
        return self._read[path]

    def list(self, prefix: str) -> list[str]:
        return self.store.list(prefix)

    def sizes(self, prefix: str) -> dict[str, int]:
        return self.store.sizes(prefix)

    def modified_times(self, prefix: str) -> dict[str, float]:
        return self.store.modified_times(prefix)

    def arrow(self) -> tuple[pafs.FileSystem, str]:
        return self.store.arrow()

    def local_root(self) -> Path | None:
        return self.store.local_root()

    def relative(self, destination: str) -> str | None:
        return self.store.relative(destination)


class LocalStore(Store):
    """A directory on this machine."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.uri = str(self.root)

    def _path(self, path: str) -> Path:
        return self.root / path

    @contextmanager
    def _io(self, action: str, path: str) -> Iterator[None]:
        """Local I/O failures (permissions, a full disk) as one StoreError line."""
        try:
            yield
        except (ObjectMissing, ConflictError):
            raise
        except OSError as exc:
            raise StoreError(f"cannot {action} {path} in the store {self.uri}: {exc.strerror or exc}") from None

    def read(self, path: str) -> bytes:
        with self._io("read", path):
            try:
                return self._path(path).read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise ObjectMissing(f"{path} is not in the store {self.uri}") from None

    def write(self, path: str, data: bytes, *, if_absent: bool = False) -> None:
        target = self._path(path)
        if target.is_dir():
            # Not an I/O failure a rerun can cure: something not the store's stands where it keeps a file.
            raise DamagedStore(f"damaged store: {path} in the store {self.uri} is a directory where the store "
                               "keeps a file; move it out of the store")
        with self._io("write", path):
            _make_dirs(target.parent)
            temp = target.parent / f".tmp-{uuid.uuid4().hex}"
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                if if_absent:
                    try:
                        os.link(temp, target)
                    except FileExistsError:
                        self._settle_conflict(path, data)
                else:
                    os.replace(temp, target)
            finally:
                temp.unlink(missing_ok=True)
            # The new name lives in the directory: without this a power loss can keep a later
            # object (a checkpoint) while losing this one (the change file it covers).
            _fsync_dir(target.parent)

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        found = []
        # os.walk's directories all start with the root's own text: slicing it off is relative_to
        # without a Path per file (a store lists thousands of ledger records).
        cut = len(os.path.join(str(self.root), ""))
        for directory, _subdirs, files in os.walk(str(base)):
            within = directory[cut:].replace(os.sep, "/")
            for name in files:
                if not name.startswith(".tmp-"):
                    found.append(f"{within}/{name}" if within else name)
        return sorted(found)

    def sizes(self, prefix: str) -> dict[str, int]:
        return {path: stat.st_size for path, stat in self._stats(prefix).items()}

    def modified_times(self, prefix: str) -> dict[str, float]:
        return {path: stat.st_mtime for path, stat in self._stats(prefix).items()}

    def _stats(self, prefix: str) -> dict[str, os.stat_result]:
        found = {}
        with self._io("list", prefix):
            for path in self.list(prefix):
                try:
                    found[path] = self._path(path).stat()
                except FileNotFoundError:  # deleted since it was listed: not there any more
                    continue
        return found

    def delete(self, path: str) -> None:
        with self._io("delete", path):
            self._path(path).unlink(missing_ok=True)

    def exists(self, path: str) -> bool:
        return self._path(path).is_file()

    def arrow(self) -> tuple[pafs.FileSystem, str]:
        import pyarrow.fs as pafs

        return pafs.LocalFileSystem(), str(self.root)

    def local_root(self) -> Path | None:
        return self.root

    def relative(self, destination: str) -> str | None:
        if destination.startswith("s3://"):
            return None
        # resolve() follows every symlink of the part that exists: another name for the store is the store.
        resolved = Path(destination).expanduser().resolve()
        if not resolved.is_relative_to(self.root):
            return None
        return resolved.relative_to(self.root).as_posix().removeprefix(".")


class S3Store(Store):
    """``s3://bucket/prefix`` through boto3 (endpoints from the usual AWS_* settings)."""

    def __init__(self, bucket: str, prefix: str, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client: Any = client
        self._probed: dict[str, str | None] = {}  # what erase_refusal learnt by trying (once per store)

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    @contextmanager
    def _calls(self, action: str, path: str) -> Iterator[None]:
        """Every S3 failure (an error answer, a dropped connection, a timeout) as one StoreError line."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (ObjectMissing, ConflictError):
            raise
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise ObjectMissing(f"{path} is not in the store {self.uri}") from None
            raise StoreError(f"cannot {action} {path} in {self.uri}: {_one_line(exc)}; "
                             "re-running is safe once S3 answers") from None
        except BotoCoreError as exc:
            raise StoreError(f"cannot {action} {path} in {self.uri}: {_one_line(exc)}; "
                             "check the network or endpoint, then re-run") from None

    def read(self, path: str) -> bytes:
        with self._calls("read", path):
            return bytes(self.client.get_object(Bucket=self.bucket, Key=self._key(path))["Body"].read())

    def write(self, path: str, data: bytes, *, if_absent: bool = False) -> None:
        from botocore.exceptions import ClientError

        extra = {"IfNoneMatch": "*"} if if_absent else {}
        with self._calls("write", path):
            try:
                self.client.put_object(Bucket=self.bucket, Key=self._key(path), Body=data, **extra)
            except ClientError as exc:
                if not if_absent or exc.response.get("Error", {}).get("Code") not in _TAKEN:
                    raise
                self._settle_conflict(path, data)

    def list(self, prefix: str) -> list[str]:
        return sorted(self.sizes(prefix))

    def _entries(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        cut = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        with self._calls("list", prefix or "/"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for entry in page.get("Contents", []):
                    yield entry["Key"][cut:], entry

    def sizes(self, prefix: str) -> dict[str, int]:
        return {path: int(entry["Size"]) for path, entry in self._entries(prefix)}

    def holds(self, prefix: str) -> bool:
        """Whether any object's path starts with ``prefix`` (one short listing, whatever the store's size)."""
        with self._calls("list", prefix or "/"):
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(prefix), MaxKeys=1)
        return bool(page.get("Contents"))

    def modified_times(self, prefix: str) -> dict[str, float]:
        return {path: entry["LastModified"].timestamp() for path, entry in self._entries(prefix)}

    def delete(self, path: str) -> None:
        with self._calls("delete", path):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(path))

    def delete_many(self, paths: Sequence[str]) -> None:
        # DeleteObjects: up to 1,000 keys a call, where DeleteObject takes one (a fold of 20,000 ledger
        # records is 20 calls, not 20,000). Each key it could not delete is listed in the answer.
        for start in range(0, len(paths), _DELETE_BATCH):
            batch = paths[start:start + _DELETE_BATCH]
            named = batch[0] if len(batch) == 1 else f"{batch[0]} and {len(batch) - 1:,} more objects"
            with self._calls("delete", named):
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": self._key(path)} for path in batch], "Quiet": True})
            failed = answer.get("Errors") or []
            if failed:
                cut = len(self.prefix) + 1 if self.prefix else 0
                first = failed[0]
                raise StoreError(f"cannot delete {str(first.get('Key', ''))[cut:]} in {self.uri}: "
                                 f"{first.get('Code', 'an error')}: {first.get('Message', '')} "
                                 f"({len(failed):,} of {len(batch):,} objects not deleted); "
                                 "re-running is safe once S3 answers")

    def purge(self, path: str) -> None:
        from botocore.exceptions import ClientError

        key = self._key(path)
        with self._calls("erase", path):
            versions = []
            for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=key):
                versions += [entry["VersionId"] for entry in page.get("Versions", []) + page.get("DeleteMarkers", [])
                             if entry["Key"] == key and entry.get("VersionId") not in (None, "null")]
            self.client.delete_object(Bucket=self.bucket, Key=key)
            for version in versions:
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") != "AccessDenied":
                        raise
                    # Governance mode: removable by a caller holding s3:BypassGovernanceRetention.
                    self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version,
                                              BypassGovernanceRetention=True)
            # A versioned bucket answers the plain delete with a delete marker: removed as well.
            for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=key):
                for marker in page.get("DeleteMarkers", []):
                    if marker["Key"] == key and marker.get("VersionId") not in (None, "null"):
                        self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=marker["VersionId"])

    def erase_refusal(self, paths: Sequence[str], *, probe: bool = False) -> str | None:
        from datetime import UTC, datetime

        from botocore.exceptions import ClientError

        with self._calls("read the Object Lock configuration of", "the bucket"):
            try:
                config = self.client.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ObjectLockConfigurationNotFoundError":
                    return None
                raise
        if config.get("ObjectLockEnabled") != "Enabled":
            return None
        default = config.get("Rule", {}).get("DefaultRetention", {})
        if default.get("Mode") == "COMPLIANCE":
            return (f"the bucket {self.bucket} has S3 Object Lock in compliance mode by default: no one can delete "
                    "an object version before its retention ends, so the erased versions would stay in it")
        now = datetime.now(UTC)
        governed = default.get("Mode") == "GOVERNANCE"
        for path in paths:
            with self._calls("look up", path):
                head = self.client.head_object(Bucket=self.bucket, Key=self._key(path))
            until = head.get("ObjectLockRetainUntilDate")
            if head.get("ObjectLockMode") == "COMPLIANCE" and until is not None and until > now:
                return (f"{path} is under S3 Object Lock in compliance mode until {until.isoformat()}: no one can "
                        "delete it before then, so the erased versions would stay in it")
            if head.get("ObjectLockLegalHoldStatus") == "ON":
                return f"{path} is under an S3 Object Lock legal hold: lift the hold to erase it"
            governed = governed or (head.get("ObjectLockMode") == "GOVERNANCE" and until is not None and until > now)
        return self._bypass_refusal(default.get("Mode") == "GOVERNANCE") if governed and probe else None

    def _bypass_refusal(self, by_default: bool) -> str | None:
        """Whether this caller may delete a version under governance-mode retention (asked once per store).

        IAM grants s3:BypassGovernanceRetention per principal, and nothing but trying tells whether a
        role holds it. The try is on an empty object of its own, under a governance retention (the
        bucket's default when it has one, else one day set on the object, which needs
        s3:PutObjectRetention) and deleted at once with the bypass; a caller without the permission leaves it behind
        (empty, outside ``tables/``, named as such), never a half-done erasure of the store's files.
        """
        if "bypass" in self._probed:
            return self._probed["bypass"]
        import uuid
        from datetime import UTC, datetime, timedelta

        from botocore.exceptions import ClientError

        key = self._key(f"forget-probe-{uuid.uuid4().hex}.empty")
        refusal: str | None = None
        lock = {} if by_default else {"ObjectLockMode": "GOVERNANCE",
                                      "ObjectLockRetainUntilDate": datetime.now(UTC) + timedelta(days=1)}
        with self._calls("write", key):
            put = self.client.put_object(Bucket=self.bucket, Key=key, Body=b"", **lock)
        with self._calls("erase", key):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=put["VersionId"],
                                          BypassGovernanceRetention=True)
                denied = False
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "AccessDenied":
                    raise
                denied = True
        if denied:  # deleting one version leaves no delete marker: nothing else to clear when it was allowed
            refusal = (f"the bucket {self.bucket} keeps objects under S3 Object Lock in governance mode, and this "
                       "caller may not delete a locked version: grant s3:BypassGovernanceRetention (with "
                       f"s3:DeleteObjectVersion) to the role that runs forget (the empty probe s3://{self.bucket}/"
                       f"{key} stays until its retention ends)")
        self._probed["bypass"] = refusal
        return refusal

    def exists(self, path: str) -> bool:
        try:
            with self._calls("look up", path):
                self.client.head_object(Bucket=self.bucket, Key=self._key(path))
        except ObjectMissing:
            return False
        return True

    def relative(self, destination: str) -> str | None:
        if not destination.startswith("s3://"):
            return None
        bucket, _, key = destination[5:].partition("/")
        key = "/".join(part for part in key.split("/") if part)  # S3 keys name no "." or "" folders for us
        if bucket != self.bucket:
            return None
        if not self.prefix:
            return key
        if key == self.prefix:
            return ""
        return key.removeprefix(self.prefix + "/") if key.startswith(self.prefix + "/") else None

    def arrow(self) -> tuple[pafs.FileSystem, str]:
        import boto3
        import pyarrow.fs as pafs

        session = boto3.Session()
        creds = session.get_credentials()
        frozen = creds.get_frozen_credentials() if creds else None
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        options: dict[str, Any] = {"region": session.region_name or "us-east-1"}
        if frozen:
            options.update(access_key=frozen.access_key, secret_key=frozen.secret_key,
                           session_token=frozen.token)
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            options.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        root = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return pafs.S3FileSystem(**options), root


# S3's limit of keys per DeleteObjects call.
_DELETE_BATCH = 1000
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_NO_BUCKET = frozenset({"NoSuchBucket", "404", "NotFound"})
# Where replay --via-import writes the export ImportTable reads, by default: no reader lists it.
EXPORTS_DIR = "imports"
# 412: the object exists; 409: another conditional write of it is in flight.
_TAKEN = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


# How pyarrow's S3 filesystem words a failed call (an error answer, a dropped or refused connection).
_ARROW_S3_FAILURE = re.compile(r"AWS Error [A-Z_]+ during \w+ operation")


def remote_read_failure(exc: BaseException) -> StoreError | None:
    """The StoreError for a read of an ``s3://`` store that failed on the way, not on the bytes; else None.

    Readers verify every file they name (changelog.integrity) and then let DuckDB read it through
    pyarrow's S3 filesystem: when that second read fails, S3 failed the call (a 503, throttling, a
    dropped connection), and the file is not damaged. The error arrives as pyarrow's or DuckDB's
    text, so it is recognised by the words pyarrow's S3 client uses.
    """
    text = " ".join(str(exc).split())
    found = _ARROW_S3_FAILURE.search(text)
    if found is None:
        return None
    return StoreError(f"reading the store from S3 failed ({text[found.start():][:300]}); the files were "
                      "verified, so this is S3 or the network: re-running is safe once S3 answers")


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _make_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each made durable in its parent."""
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for created in reversed(missing):
        try:
            created.mkdir()
        except FileExistsError:
            continue
        _fsync_dir(created.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the directory's entries (a rename, a link, a new subdirectory) survive a power loss."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def open_store(uri: str, *, create: bool = False, allow_empty: bool = False) -> Store:
    """Open a store by URI; raises StoreNotFound (one clear line) unless ``create`` for a local path.

    A local store is a directory holding ``tables/``, or an empty directory (a new store, no tables
    yet). A directory that holds other things and no ``tables/`` is no store: reading it would answer
    "no tables", writing into it would mix a store into someone's files. S3 buckets are never
    created here: the deployable stack owns the bucket and its policies.

    An S3 prefix has no directory that exists on its own: one holding no ``tables/`` is as likely a
    mistyped prefix as a new store, so it is no store, unless ``allow_empty`` (or ``create``) says
    the caller may start one there (a writer, or the stack's functions before the first change).
    """
    location = open_location(uri, create=create, what="store")
    root = location.local_root()
    if root is not None and not (root / TABLES).is_dir() and any(root.iterdir()):
        raise StoreNotFound(f"{uri!r} holds no ddb-rewind store (no {TABLES}/ folder, and it is not empty): "
                            "give the store's own directory, or an empty or new one to start a store")
    if isinstance(location, S3Store) and not (create or allow_empty) and not location.holds(TABLES + "/"):
        raise StoreNotFound(f"{uri!r} holds no ddb-rewind store (nothing under {TABLES}/): give the store's own "
                            "s3://bucket/prefix")
    return location


def open_location(uri: str, *, create: bool = False, what: str = "location", option: str = "--store") -> Store:
    """A directory or ``s3://bucket/prefix`` to read or write files in, store or not (an export's).

    Raises StoreNotFound when it does not exist (a local one is made with ``create``), and a
    StoreError (exit 7, not "not found") when S3 cannot be reached or refuses the call.
    """
    if not uri.strip():
        # Path("") is the current directory: an empty --store must not read or write there.
        raise StoreNotFound(f"no {what} given ({option} is empty): give a directory or s3://bucket/prefix")
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[5:].partition("/")
        if not bucket:
            raise StoreNotFound(f"{what} {uri!r} names no bucket: use s3://bucket/prefix")
        from botocore.exceptions import BotoCoreError, ClientError

        store = S3Store(bucket, prefix)
        try:
            store.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            # Only a 404 says the bucket is not there; a 403, a 503 or throttling is S3 refusing or
            # failing the call (exit 7), which re-running may cure.
            if str(exc.response.get("Error", {}).get("Code")) in _NO_BUCKET:
                raise StoreNotFound(f"{what} {uri}: bucket {bucket!r} does not exist") from None
            raise StoreError(f"{what} {uri}: S3 refused or failed the call on bucket {bucket!r} "
                             f"({_one_line(exc)}); check the credentials and permissions, or re-run once S3 "
                             "answers") from None
        except BotoCoreError as exc:
            raise StoreError(f"{what} {uri}: cannot reach S3 ({_one_line(exc)})") from None
        return store
    root = Path(uri).expanduser()
    if not root.is_dir():
        if create and not root.exists():
            root.mkdir(parents=True)
        elif root.exists():
            raise StoreNotFound(f"{what} {uri!r} is not a directory: give the store's directory or s3://bucket/prefix")
        else:
            raise StoreNotFound(f"{what} {uri!r} does not exist: give an existing directory or s3://bucket/prefix")
    return LocalStore(root)


def check_outside(store: Store, destination: str, option: str) -> None:
    """Refuse (UsageError) an output ``destination`` (a local path or s3:// URI) inside ``store``.

    Only the store's own writers write there: a file dropped into it (an export in ``changes/``) is
    foreign to it, and every reader then refuses the store. Symlinks are resolved, so no other name
    for the store's directory gets through. ``imports/`` is kept for the exports ``replay
    --via-import`` makes for ImportTable, which readers never list.
    """
    inside = store.relative(destination)
    if inside is None or inside == EXPORTS_DIR or inside.startswith(EXPORTS_DIR + "/"):
        return
    raise UsageError(f"{option} {destination!r} is inside the store {store.uri}: only ddb-rewind's own writers "
                     "write there (readers refuse a store holding other files); choose a place outside it")


def environment_store(cache: dict[str, Store]) -> Store:
    """The store a Lambda function names in ``REWIND_STORE``, opened once per warm container (``cache``)."""
    uri = os.environ.get("REWIND_STORE")
    if not uri:
        raise StoreError("REWIND_STORE is not set: point it at s3://bucket/prefix")
    if uri not in cache:
        cache[uri] = open_store(uri, allow_empty=True)  # the stack's functions run before the first change
    return cache[uri]
