"""The Lambda artifacts' mechanisms, checked on this machine's own binaries and modules (no network).

infra/build.sh strips symbol tables with infra/elf.py, refuses an artifact whose binaries link
against a library it lacks, and ships the capture functions without the SQL engine: each of those
is proven here on what the test environment has installed.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pyarrow

INFRA = Path(__file__).resolve().parent.parent / "infra"
SQL_ONLY = ("duckdb", "sqlglot", "numpy", "pytz", "fastavro")


def _elf() -> ModuleType:
    spec = importlib.util.spec_from_file_location("infra_elf", INFRA / "elf.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pyarrow_copy(tmp_path: Path) -> Path:
    target = tmp_path / "pyarrow"
    shutil.copytree(Path(pyarrow.__file__).parent, target)
    return target


def test_stripped_libraries_are_smaller_and_still_load_and_write_parquet(tmp_path: Path) -> None:
    elf = _elf()
    saved = 0
    for binary in _pyarrow_copy(tmp_path).glob("*.so*"):
        before = binary.read_bytes()
        after = elf.stripped(before)
        if after is not None:
            binary.write_bytes(after)
            saved += len(before) - len(after)
    assert saved > 0
    # The process leaves by os._exit once it has answered: on a loaded machine, pyarrow's thread pool
    # can abort the interpreter's own teardown ("terminate called without an active exception"), which
    # says nothing of whether stripped libraries load and write (a Lambda never tears its process down).
    roundtrip = ("import io, os, sys, pyarrow as pa, pyarrow.parquet as pq; buffer = io.BytesIO(); "
                 "pq.write_table(pa.table({'a': [1, 2]}), buffer, compression='zstd'); "
                 "print(pa.__file__, pq.read_table(io.BytesIO(buffer.getvalue()))['a'].to_pylist()); "
                 "sys.stdout.flush(); os._exit(0)")
    run = subprocess.run([sys.executable, "-S", "-c", roundtrip], cwd=tmp_path, capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(tmp_path / "pyarrow" / "__init__.py"), "[1,", "2]"]


def test_the_check_refuses_an_artifact_missing_a_library_a_shipped_binary_needs(tmp_path: Path) -> None:
    elf = _elf()
    (core,) = Path(pyarrow.__file__).parent.glob("lib.cpython-*.so")
    shutil.copy(core, tmp_path / core.name)
    libraries = [lib for lib in elf.needed(core.read_bytes()) if lib not in elf.SYSTEM]
    assert any(lib.startswith("libarrow.so") for lib in libraries)
    for lib in libraries:
        (tmp_path / lib).write_bytes(b"")
    assert elf.check(str(tmp_path)) == 0
    (tmp_path / libraries[-1]).unlink()
    assert elf.check(str(tmp_path)) == 1


def test_the_capture_handlers_import_without_what_only_the_sql_needs() -> None:
    # What the capture artifact lacks, made unimportable in a fresh interpreter.
    script = textwrap.dedent(f"""
        import sys

        class Absent:
            @staticmethod
            def find_spec(name, path=None, target=None):
                if name.split(".")[0] in {SQL_ONLY!r}:
                    raise ModuleNotFoundError(name)
                return None

        sys.meta_path.insert(0, Absent)
        import stream_consumer.handler, stream_consumer.recover
        print(sorted(m for m in {SQL_ONLY!r} if m in sys.modules))
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=INFRA.parent, capture_output=True, text=True,
                         check=False, env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
