"""Real ``ddb-rewind`` processes, each forked from a warm interpreter instead of started from nothing.

A fresh ``python -m ddb_rewind`` spends most of a quick refusal importing (DuckDB, pyarrow, boto3):
about half a second of CPU, which a corpus of two hundred cases pays two hundred times. A
``ForkServer`` is one interpreter that has imported all of that once; for each run it forks a child
that is then exactly a ``ddb-rewind`` process: its own pid, environment, working directory,
stdin from /dev/null, stdout and stderr to files, and its exit code the command's (a traceback is
printed as the interpreter would print it, with exit 1). A child that runs longer than
``timeout_s`` is killed by its own alarm, and reported as killed by SIGALRM.

The server forks from a single thread it owns (no lock of another thread can be held in a child).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

_SERVER = r"""
import atexit, json, os, signal, sys, traceback
# What the commands import lazily, imported once here so that no child pays for it.
import boto3, botocore.session, duckdb, orjson, pyarrow, pyarrow.compute, pyarrow.dataset, pyarrow.parquet
import ddb_rewind.cli
from ddb_rewind.cli import main
boto3.session.Session()  # botocore's data loaders and endpoint rules, warmed (no client, no call)

def child(request):
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_TRUNC),
                            (2, request["stderr"], os.O_WRONLY | os.O_TRUNC)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(request["timeout_s"])
    sys.argv = ["ddb-rewind", *request["argv"]]
    try:
        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)

replies = sys.stdout
for line in sys.stdin:
    request = json.loads(line)
    replies.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        child(request)
    _, status = os.waitpid(pid, 0)
    replies.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n")
    replies.flush()
"""


@dataclass(frozen=True)
class Outcome:
    """What a forked ``ddb-rewind`` process left: its exit code (negative: the signal), stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str


class ForkServer:
    """One warm interpreter that forks a ``ddb-rewind`` process per ``run``; runs are taken one at a time."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        base = dict(os.environ if env is None else env)
        base["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), base.get("PYTHONPATH", "")) if p)
        self._process = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True, env=base, cwd=REPO)
        self._lock = threading.Lock()
        self._scratch = tempfile.TemporaryDirectory(prefix="forkserver-")

    def run(self, argv: list[str], env: dict[str, str], cwd: Path | None = None, timeout_s: int = 120) -> Outcome:
        """Run ``ddb-rewind argv`` under exactly ``env`` (not added to this process's) to its end."""
        assert self._process.stdin is not None and self._process.stdout is not None
        with self._lock:
            out, err = Path(self._scratch.name) / "stdout", Path(self._scratch.name) / "stderr"
            out.write_bytes(b"")
            err.write_bytes(b"")
            request: dict[str, Any] = {"argv": argv, "env": env, "cwd": str(cwd or REPO), "stdout": str(out),
                                       "stderr": str(err), "timeout_s": timeout_s}
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
            reply = self._process.stdout.readline()
            if not reply:
                raise RuntimeError(f"the fork server ended (exit {self._process.wait()})")
            code = int(json.loads(reply)["code"])
            return Outcome(code, out.read_text(errors="replace"), err.read_text(errors="replace"))

    def close(self) -> None:
        """End the server (children have all ended: runs wait for theirs)."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._scratch.cleanup()

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
