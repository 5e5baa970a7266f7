"""Helpers of the fault suite: real ``ddb-rewind`` processes, killing them at chosen operations, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from changelog.store import Store
from tests.faults.proxy import FaultProxy, Rule

REPO = Path(__file__).resolve().parents[2]


def s3_only(store: Store) -> None:
    """Skip a scenario that needs the proxy between the product and its store."""
    if store.local_root() is not None:
        pytest.skip("the fault is injected on the way to S3")


def rewind_env(proxy: FaultProxy | None = None) -> dict[str, str]:
    """The environment of a real ``ddb-rewind`` process: this checkout, and AWS through the proxy."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    if proxy is not None:
        env["AWS_ENDPOINT_URL"] = proxy.url
    return env


def start_rewind(*args: str, proxy: FaultProxy | None = None) -> subprocess.Popen[str]:
    """Start ``ddb-rewind ARGS`` as a real process of this checkout."""
    return subprocess.Popen([sys.executable, "-m", "ddb_rewind", *args], env=rewind_env(proxy),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_rewind(*args: str, proxy: FaultProxy | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``ddb-rewind ARGS`` to completion as a real process."""
    return subprocess.run([sys.executable, "-m", "ddb_rewind", *args], env=rewind_env(proxy),
                          capture_output=True, text=True, timeout=timeout, check=False)


def wait_blocked(rule: Rule, timeout: float = 60) -> None:
    """Wait until the proxy holds a request of ``rule``.

    A RuntimeError, not an assertion: a scenario that never reaches its interleaving is a broken
    test, and must not pass for an expected failure (``xfail(raises=AssertionError)``).
    """
    if not rule.blocked.wait(timeout):
        raise RuntimeError(f"no request matched {rule.method} {rule.path} {rule.operation}: the scenario never "
                           "reached its store operation")


def kill_when_blocked(process: subprocess.Popen[str], rule: Rule, timeout: float = 60) -> None:
    """SIGKILL ``process`` while the proxy holds the request ``rule`` blocks, then let the proxy go on."""
    wait_blocked(rule, timeout)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout)
    rule.release.set()
    assert process.returncode == -signal.SIGKILL


def kill_when_present(process: subprocess.Popen[str], root: Path, pattern: str, timeout: float = 60) -> bool:
    """SIGKILL ``process`` as soon as a file matching ``pattern`` appears under ``root``.

    Returns whether the kill came before the process ended by itself.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if any(root.glob(pattern)):
            process.send_signal(signal.SIGKILL)
            process.wait(timeout)
            return process.returncode == -signal.SIGKILL
        time.sleep(0.002)
    process.wait(timeout)
    return False


def one_error_line(stderr: str) -> str:
    """The single ``ddb-rewind: error:`` line of a refusal (asserts there is nothing else, no traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ddb-rewind: error: "), stderr
    return lines[0]



def replayed(store: Store, table: str, second: int) -> dict[str, Any]:
    """item key text -> item of the table at ``second``, as replay computes it (in this process)."""
    from datetime import UTC, datetime

    from replayer.restoring.replay import open_items

    con = open_items(store, table, datetime.fromtimestamp(second, tz=UTC))
    return {key: json.loads(image) for key, image in con.execute("SELECT item_key, image FROM items").fetchall()}


def file_state(path: Path) -> dict[str, Any]:
    """item key text -> item of a replay written with ``--to-file x.jsonl`` by a real process."""
    from changelog.codec import item_key

    state = {}
    for line in path.read_text().splitlines():
        item = json.loads(line)["Item"]
        state[item_key({"pk": item["pk"]})] = item
    return state


def moments(work: Any) -> list[int]:
    """Every second with a change of the workload, plus one."""
    seconds = sorted({step.seconds for step in work.steps})
    return [*seconds, seconds[-1] + 1]


def spread(seconds: list[int], count: int = 3) -> list[int]:
    """``count`` seconds spread over the list, first and last included (replays over S3 are not free)."""
    if len(seconds) <= count:
        return seconds
    return sorted({seconds[round(i * (len(seconds) - 1) / (count - 1))] for i in range(count)})


def assert_every_replay_equals_the_model(store: Store, work: Any, seconds: list[int] | None = None) -> None:
    """Replay at each chosen second (default: three spread over the changes) equals the workload's model."""
    for second in seconds or spread(moments(work)[:-1]):
        assert replayed(store, work.table, second) == work.state_at(second), f"at {second}"


def hours_workload(seed: int, writes: int = 48, keys: int = 8, step_s: int = 450) -> Any:
    """A random workload spread over several hours (so merges have closed hours to work on)."""
    import random

    from tests.workloads import BASE, Workload, random_item

    rng = random.Random(seed)
    work = Workload()
    for n in range(writes):
        key = {"pk": {"S": f"k{rng.randrange(keys)}"}}
        seconds = BASE + n * step_s + rng.choice([0, 0, 1])
        if rng.random() < 0.2:
            work.delete(key, seconds)
        else:
            work.put(random_item(rng, key), seconds)
    return work


def cli(*argv: str) -> int:
    """Exit code of ``ddb-rewind argv`` run in this process."""
    from tests.workloads import run_cli

    return run_cli(list(argv))
