"""Each stage depends only on ``changelog/``: never on another stage, never on the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("stream_consumer", "compactor", "replayer")


def _imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_neither_another_stage_nor_the_cli(stage: str) -> None:
    forbidden = {"ddb_rewind", *STAGES} - {stage}
    offenders = {str(path.relative_to(ROOT)): sorted(_imported_packages(path) & forbidden)
                 for path in sorted((ROOT / stage).rglob("*.py"))}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_changelog_imports_no_stage() -> None:
    forbidden = {"ddb_rewind", *STAGES}
    offenders = {str(path.relative_to(ROOT)): sorted(_imported_packages(path) & forbidden)
                 for path in sorted((ROOT / "changelog").rglob("*.py"))}
    assert {path: names for path, names in offenders.items() if names} == {}
