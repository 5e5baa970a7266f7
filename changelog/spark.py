"""The Spark engine: the specification's SQL (``changelog.spec``) run by Apache Spark over the store's files.

Shared by every stage that computes a state on Spark (the replayer's ``--engine spark`` and its
``spark_job.py``, the compactor's ``spark_snapshot.py``). pyspark is imported only inside functions, so
importing this module costs a Lambda nothing.

Spark reads exactly the Parquet files a plan lists (``state.plan_state``), after the same checksum
and format check as DuckDB's, run by the executors that read the files (``verify_on_executors``),
as the spec's logical relations, and runs the spec's SQL transpiled to Spark SQL. It returns Arrow
tables; what is done with them afterwards (filtering, writing files, comparing images) is the same
code as for DuckDB, so both engines give the same bytes. Coverage is refused in Python before Spark starts.

The session is local (``local[*]``) unless ``SPARK_MASTER`` or spark-defaults.conf name a master;
it runs without the web UI, logs errors only, and is started once per process. Any failure of
Spark becomes one typed line (``changelog.errors``), never a Java traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from changelog.docs import DOC_FUNCTION, doc_text
from changelog.errors import StoreError, UsageError
from changelog.integrity import FINGERPRINT_STRUCT, Fingerprint, check_fingerprints, expectations, fingerprint
from changelog.record import SCHEMA
from changelog.snapshot import SNAPSHOT_SCHEMA
from changelog.spec import render, state_sql, window_keys_sql
from changelog.state import StatePlan, snapshot_parts
from changelog.store import Store

# A relation for the spec: the store, its files (store-relative paths) and their Arrow schema.
Relation = tuple[Store, list[str], pa.Schema]

_SPARK_TYPES = {pa.string(): "STRING", pa.bool_(): "BOOLEAN", pa.int64(): "BIGINT",
                pa.timestamp("us", tz="UTC"): "TIMESTAMP"}
# Errors only: Spark's INFO/WARN start-up chatter is no use to a ddb-rewind user.
_LOG4J2 = """rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = spark: %p %c{1}: %m%n
logger.repl.name = org.apache.spark.repl.Main
logger.repl.level = error
"""
_session: Any = None
# Where the JVM's stderr goes (its start-up notices, and its stack traces when it cannot start).
SPARK_LOG = Path(tempfile.gettempdir()) / "ddb-rewind-spark.log"


def spark_schema(schema: pa.Schema) -> str:
    """Spark's DDL for an Arrow schema of the store (strings, booleans, int64 and UTC timestamps)."""
    return ", ".join(f"`{field.name}` {_SPARK_TYPES[field.type]}" for field in schema)


# The Spark setting naming the Hadoop file system for s3:// stores: s3a (Apache Hadoop, the default)
# or s3 (EMRFS on Amazon EMR and Glue).
S3_SCHEME_CONF = "spark.ddbrewind.s3Scheme"


def spark_path(store: Store, path: str, s3_scheme: str = "s3a") -> str:
    """What Spark opens for a store-relative path: a local file, or ``s3a://`` (or ``s3://``) for an S3 store."""
    root = store.local_root()
    if root is not None:
        # Hadoop paths are not URL-encoded: "dt=..." stays as it is.
        return "file://" + str((root / path).resolve())
    return f"{s3_scheme}://{store.uri.removeprefix('s3://').rstrip('/')}/{path}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    java = getattr(exc, "java_exception", None)
    if java is not None:
        # Py4J's own first line ("An error occurred while calling o66.getResult") says nothing: the
        # Java exception's message does.
        with contextlib.suppress(Exception):
            text = str(java).strip()
    lines = text.splitlines()
    return lines[0][:500] if lines else type(exc).__name__


@contextlib.contextmanager
def spark_errors(what: str) -> Iterator[None]:
    """Map Spark's and Py4J's failures to one typed line: StoreError (a read failed, retried by readers)."""
    try:
        from py4j.protocol import Py4JError
        from pyspark.errors import PySparkException
    except ImportError:
        raise UsageError("--engine spark needs pyspark: pip install 'ddb-rewind[spark]'") from None
    try:
        yield
    except (PySparkException, Py4JError) as exc:
        if "JAVA_GATEWAY_EXITED" in str(exc) or "JAVA_HOME" in str(exc):
            raise UsageError(f"Spark could not start ({_java_failure()}): check Java 17 (JAVA_HOME) and "
                             f"SPARK_MASTER; Spark's log is {SPARK_LOG}") from None
        if "S3AFileSystem" in _one_line(exc) and "not found" in _one_line(exc):
            # pyspark's wheel has no S3 file system, and nothing may be downloaded at run time.
            raise UsageError(
                "--engine spark cannot read s3:// stores here: Spark's classpath lacks Hadoop's s3a file "
                "system (hadoop-aws and its AWS SDK bundle, matching Spark's Hadoop version): add them with "
                "spark.jars, or run on EMR or Glue with --conf spark.ddbrewind.s3Scheme=s3") from None
        raise StoreError(f"Spark failed while {what}: {_one_line(exc)}") from None


def _java_failure() -> str:
    """The JVM's own reason, from the last exception line it logged (its stack trace stays in the log)."""
    try:
        lines = SPARK_LOG.read_text(errors="replace").splitlines()[-200:]
    except OSError:
        return "no log"
    reasons = [line.strip() for line in lines if "Exception" in line and not line.startswith("\t")]
    return reasons[-1].removeprefix('Exception in thread "main" ') if reasons else "the Java gateway exited"


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)


def session() -> Any:
    """The process's SparkSession, started on first use (quiet, no UI, UTC)."""
    global _session
    if _session is not None:
        return _session
    with spark_errors("starting"):
        from pyspark.sql import SparkSession

        config = Path(tempfile.gettempdir()) / "ddb-rewind-spark-log4j2.properties"
        config.write_text(_LOG4J2)
        builder = (SparkSession.builder.appName("ddb-rewind")
                   .config("spark.ui.enabled", "false")
                   .config("spark.ui.showConsoleProgress", "false")
                   .config("spark.sql.session.timeZone", "UTC")
                   # The answer comes to this process by design (replay, diff and history print or
                   # write it here): no 1 GB cap on it; memory is SPARK_DRIVER_MEMORY's to give.
                   .config("spark.driver.maxResultSize", "0")
                   .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
                   .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={config.as_uri()}")
                   .config("spark.log.level", "ERROR"))
        if os.environ.get("SPARK_MASTER"):
            builder = builder.master(os.environ["SPARK_MASTER"])
        else:
            # Local Python workers run the UDFs (docs, file fingerprints), which need this environment's
            # packages; Spark 3.5 would start whatever "python3" the PATH finds first.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        # The JVM inherits stderr when it starts; its own notices (incubator modules, native
        # libraries) go to a log file instead of the user's terminal.
        with _stderr_to(SPARK_LOG):
            spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        if str(spark.sparkContext.master).startswith("local"):
            # One machine: a few shuffle partitions, not Spark's cluster default of 200.
            spark.conf.set("spark.sql.shuffle.partitions", str(max(2, 2 * (os.cpu_count() or 1))))
        _session = spark
    return _session


def register_doc_udf(spark: Any) -> None:
    """Spark SQL function ``rewind_doc(image)``: the plain JSON of an image, by ``changelog.docs`` itself.

    The same Python function as DuckDB's, run by Spark's Python workers: both engines' docs are the
    same bytes by construction.
    """
    from pyspark.sql.functions import udf

    spark.udf.register(DOC_FUNCTION, udf(lambda image: doc_text(image), "string", useArrow=False))


def _local_form(uri: str) -> str:
    # Hadoop writes a local path back as file:/x, whatever number of slashes it was given.
    return "file:/" + uri.removeprefix("file:").lstrip("/") if uri.startswith("file:") else uri


def verify_on_executors(spark: Any, store: Store, paths: list[str], scheme: str) -> None:
    """Refuse (DamagedStore) unless every file matches its recorded checksum and a store format read here.

    The same check as ``changelog.integrity.verify_for_read``, spread over the cluster: this process
    reads only names and manifests (what each file must be); each executor reads its files' bytes and
    sends back their fingerprints (sha256, size, format, the bounds of a change file's rows), so checking
    ten billion changes costs the cluster one parallel pass instead of this process a download of every byte.
    """
    from pyspark.sql.functions import col, udf

    wanted = expectations(store, paths)
    by_uri = {_local_form(spark_path(store, path, scheme)): path for path in paths}
    # A plain (pickled) Python UDF: Arrow-optimised ones need pandas, which the spark extra does not install.
    fingerprints = udf(lambda content: fingerprint(bytes(content)), FINGERPRINT_STRUCT, useArrow=False)
    rows = (spark.read.format("binaryFile").load(list(by_uri))
            .select("path", fingerprints(col("content")).alias("f")).collect())
    found = {by_uri[_local_form(row["path"])]: Fingerprint(**row["f"].asDict())
             for row in rows if _local_form(row["path"]) in by_uri}
    check_fingerprints(store, wanted, found)


def _register(spark: Any, name: str, relation: Relation) -> None:
    store, paths, schema = relation
    if not paths:
        spark.createDataFrame([], spark_schema(schema)).createOrReplaceTempView(name)
        return
    scheme = spark.conf.get(S3_SCHEME_CONF, "s3a")
    if scheme not in ("s3a", "s3"):
        raise UsageError(f"{S3_SCHEME_CONF}={scheme!r}: give s3a or s3")
    verify_on_executors(spark, store, paths, scheme)
    frame = spark.read.schema(spark_schema(schema)).parquet(*[spark_path(store, p, scheme) for p in paths])
    frame.createOrReplaceTempView(name)


def frame(sql: str, relations: Mapping[str, Relation]) -> Any:
    """Spec SQL (DuckDB's dialect) as a Spark DataFrame over ``relations`` (lazy: run it in spark_errors)."""
    spark = session()
    with spark_errors("reading the store"):
        for name, relation in relations.items():
            _register(spark, name, relation)
        return spark.sql(render(sql, "spark"))


def to_arrow(result: Any) -> pa.Table:
    """A DataFrame collected as Arrow: ``toArrow`` on Spark 4, its Arrow batches on Spark 3.5 (Glue 5, EMR 7)."""
    if hasattr(result, "toArrow"):
        table: pa.Table = result.toArrow()
        return table
    from pyspark.sql.pandas.types import to_arrow_schema

    return pa.Table.from_batches(result._collect_as_arrow(), schema=to_arrow_schema(result.schema))


def run_sql(sql: str, relations: Mapping[str, Relation]) -> pa.Table:
    """Run spec SQL on Spark over ``relations``; the result as an Arrow table."""
    result = frame(sql, relations)
    with spark_errors("reading the store"):
        table = to_arrow(result)
    return table


def _plan_relations(store: Store, plan: StatePlan, prefix: str) -> dict[str, Relation]:
    return {f"{prefix}__changes": (store, list(plan.change_files), SCHEMA),
            f"{prefix}__snapshot": (store, snapshot_parts(plan), SNAPSHOT_SCHEMA)}


def state_frame(store: Store, plan: StatePlan, *, tombstones: bool = False) -> Any:
    """The state the plan describes (``spec.STATE_COLUMNS``) as a lazy Spark DataFrame.

    ``tombstones`` keeps removed items as rows without an image (what a snapshot holds).
    """
    sql = state_sql(plan.table, plan.at_us, changes="state__changes", snapshot="state__snapshot",
                    changes_from_us=plan.changes_from_us, tombstones=tombstones)
    return frame(sql, _plan_relations(store, plan, "state"))


def fetch_table(result: Any) -> pa.Table:
    """A result as big as the table (a state, a diff's sides) as Arrow in this process, in no order.

    When Spark runs on this machine its tasks write Parquet files that are read back here: the
    answer then needs no room in Spark's heap (a collect of a few GB fails with the default 1 GB
    driver). A remote cluster's results come back by collect (SPARK_DRIVER_MEMORY must hold them).
    """
    spark = session()
    with spark_errors("reading the store"):
        if not str(spark.sparkContext.master).startswith("local"):
            table = to_arrow(result)
            return table
        with tempfile.TemporaryDirectory(prefix="ddb-rewind-spark-") as folder:
            result.write.parquet(str(Path(folder) / "result"))
            return pq.read_table(Path(folder) / "result", schema=_arrow_schema(result))


def _arrow_schema(result: Any) -> pa.Schema:
    """The Arrow schema of a spec result: every column text but the time (µs, UTC)."""
    return pa.schema([pa.field(name, pa.timestamp("us", tz="UTC") if name == "event_time" else pa.string())
                      for name in result.columns])


def state_table(store: Store, plan: StatePlan) -> pa.Table:
    """The state the plan describes, computed by Spark, as an Arrow table (in no order)."""
    return fetch_table(state_frame(store, plan))


def window_states(store: Store, window_files: list[str], plans: Mapping[str, StatePlan], from_us: int,
                  to_us: int) -> dict[str, pa.Table]:
    """For a diff: each side's state of the keys changed in (from, to], by Spark."""
    spark = session()
    with spark_errors("reading the store"):
        _register(spark, "diff__window", (store, window_files, SCHEMA))
        spark.sql(render(window_keys_sql(from_us, to_us, "diff__window"), "spark")) \
            .createOrReplaceTempView("diff__keys")
    states = {}
    for side, plan in plans.items():
        sql = state_sql(plan.table, plan.at_us, changes=f"{side}__changes", snapshot=f"{side}__snapshot",
                        changes_from_us=plan.changes_from_us, only_keys="diff__keys")
        states[side] = fetch_table(frame(sql, _plan_relations(store, plan, side)))
    return states
