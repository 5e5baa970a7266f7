"""Spark through real processes: ``ddb-rewind --engine spark`` and ``spark-submit`` of the job file.

Each test starts its own JVM in a child process (no shared SparkSession), so these live apart from
tests/test_engines.py: under ``--dist loadfile`` the two files run on different workers at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyspark
import pytest

from tests.test_engines import ROOT, TABLE, _cli_store


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ddb_rewind", *argv], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=300)


@pytest.mark.spark
@pytest.mark.slow
def test_replay_engine_spark_on_the_command_line_writes_the_bytes_duckdb_writes(tmp_path: Path) -> None:
    store = _cli_store(tmp_path)
    common = ["replay", "--table", TABLE, "--store", str(store.root), "--at", "2025-06-15T15:06:45Z"]
    # Local Spark workers run the interpreter ddb-rewind runs in: the first python3 on this PATH has none
    # of the packages, and a worker started from it could not fingerprint a file (one JVM proves both).
    env = {name: value for name, value in os.environ.items() if name != "PYSPARK_PYTHON"}
    env.update(PATH="/usr/bin:/bin", PYTHONPATH=str(ROOT))
    spark_run = subprocess.run([sys.executable, "-m", "ddb_rewind", *common, "--to-file", str(tmp_path / "spark.jsonl"),
                                "--engine", "spark"], capture_output=True, text=True, env=env, timeout=300)
    duck_run = _cli(*common, "--to-file", str(tmp_path / "duckdb.jsonl"))

    assert (spark_run.returncode, spark_run.stderr) == (0, "")
    assert spark_run.stdout.replace("spark.jsonl", "X") == duck_run.stdout.replace("duckdb.jsonl", "X")
    assert (tmp_path / "spark.jsonl").read_bytes() == (tmp_path / "duckdb.jsonl").read_bytes()


@pytest.mark.spark
@pytest.mark.slow
def test_a_spark_that_cannot_start_is_one_line_not_a_java_traceback(tmp_path: Path) -> None:
    store = _cli_store(tmp_path)

    run = _cli("history", "--table", TABLE, "--store", str(store.root), "--key", '{"pk":{"S":"a"}}',
               "--engine", "spark", env={"SPARK_MASTER": "nonsense://nowhere"})

    assert run.returncode != 0 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("ddb-rewind: error: Spark")
    assert "Master must" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.spark
@pytest.mark.slow
def test_spark_submit_runs_the_job_file_unchanged(tmp_path: Path) -> None:
    store = _cli_store(tmp_path)
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"

    run = subprocess.run(
        [str(submit), "--master", "local[1]", "--conf", "spark.ui.enabled=false",
         str(ROOT / "replayer" / "engines" / "spark_job.py"),
         "--store", str(store.root), "--table", TABLE, "--at", "2025-06-15T15:06:45Z",
         "--output", str(tmp_path / "out"), "--format", "jsonl"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYSPARK_PYTHON": sys.executable,
             "PYSPARK_DRIVER_PYTHON": sys.executable})

    assert run.returncode == 0, run.stderr[-2000:]
    assert "wrote 1 items of orders as of 2025-06-15T15:06:45Z" in run.stdout
    lines = b"".join(p.read_bytes() for p in sorted((tmp_path / "out").glob("part-*"))).splitlines()
    assert [json.loads(line)["Item"]["pk"] for line in lines] == [{"S": "b"}]
