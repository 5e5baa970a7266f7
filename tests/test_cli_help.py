"""The command line's own contract: it starts fast, every option explains itself, README lists what --help lists."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ddb_rewind.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
# What a command imports when it does its work, never to print help (each costs 50-150 ms to load).
HEAVY = ("boto3", "botocore", "duckdb", "pyarrow", "numpy", "sqlglot", "orjson", "moto", "fastavro",
         "replayer", "compactor.retention", "stream_consumer", "pyspark", "matplotlib")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _imported(*argv: str) -> set[str]:
    """Top-level names of every module a real ``ddb-rewind`` process imported (python -X importtime)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "ddb_rewind", *argv], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return names


def _heavy(names: set[str]) -> list[str]:
    return sorted(name for name in names if any(name == h or name.startswith(h + ".") for h in HEAVY))


def test_top_level_help_loads_no_heavy_library() -> None:
    assert _heavy(_imported("--help")) == []


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_command_help_loads_no_heavy_library(command: str) -> None:
    assert _heavy(_imported(command, "--help")) == []


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_option_has_help_text(command: str) -> None:
    parser = _subcommands()[command]
    silent = [a.option_strings[0] for a in parser._actions
              if a.option_strings and not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert silent == []


def test_help_states_each_default() -> None:
    text = _subcommands()["replay"].format_help()
    assert re.search(r"--workers.*\(default:\s+8\)", " ".join(text.split()))


def test_readme_lists_the_commands_in_help_order() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Commands", 1)[1].split("```", 2)[1]
    listed = [m.group(1) for m in re.finditer(r"^ddb-rewind ([a-z][a-z-]*)", block, re.MULTILINE)]
    assert listed == list(_subcommands())


def test_version_prints_on_stdout() -> None:
    done = subprocess.run([sys.executable, "-m", "ddb_rewind", "--version"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert done.returncode == 0 and done.stdout.startswith("ddb-rewind ")
