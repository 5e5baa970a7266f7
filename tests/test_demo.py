"""The demo runs end to end on the embedded local AWS and its restore matches the table exactly."""

from __future__ import annotations

from pathlib import Path

from ddb_rewind.demo import run_demo


def test_the_demo_restores_the_table_as_it_was_before_the_bad_deploy(tmp_path: Path) -> None:
    lines: list[str] = []
    assert run_demo(tmp_path / "store", say=lines.append, orders=60)
    assert any(line.strip().startswith("MATCH") for line in lines)
