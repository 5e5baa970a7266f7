"""What `pip install ddb-rewind` brings: the product, not the demo's embedded AWS or the developers' tools."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
NOT_IN_PRODUCTION = ("moto", "flask", "docker", "cfn-lint", "pytest", "hypothesis", "ruff", "mypy")


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_base_install_pulls_no_test_or_demo_tooling() -> None:
    assert _names(PROJECT["dependencies"]) & set(NOT_IN_PRODUCTION) == set()


def test_demo_extra_brings_the_embedded_aws_without_moto_server() -> None:
    demo = PROJECT["optional-dependencies"]["demo"]
    assert "moto" in _names(demo)
    assert not any("moto[" in requirement for requirement in demo)


def test_dev_extra_includes_the_demo() -> None:
    own = [r for r in PROJECT["optional-dependencies"]["dev"] if r.startswith("ddb-rewind[")]
    assert any("demo" in r.split("[", 1)[1].rstrip("]").split(",") for r in own)
