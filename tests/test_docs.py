"""docs/operations.md cannot drift from the CLI or the stack: its commands parse, its alarms are the template's.

Every ``ddb-rewind`` line in a code block is parsed whole by the CLI's own parser, placeholders
substituted; every ``ddb-rewind <command> --flag`` written inline in the prose names a command and
options that command has. Every alarm the template defines has exactly one row in the alarm table.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from ddb_rewind.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
OPERATIONS = REPO / "docs" / "operations.md"
TEMPLATE = REPO / "infra" / "template.yaml"

# The placeholders docs/operations.md declares, each with a value its argument accepts.
PLACEHOLDERS = {
    "T": "orders",
    "S": "s3://ddb-rewind-orders-storebucket-1a2b3c/rewind",
    "TIME": "2025-06-29T14:00:00Z",
    "FROM": "2025-06-29T13:00:00Z",
    "TO": "2025-06-29T15:00:00Z",
    "NEW": "orders-restored",
    "URL": "https://sqs.us-east-1.amazonaws.com/123456789012/ddb-rewind-orders-FailureQueue-abc",
    "URI": "s3://exports/orders/AWSDynamoDB/01234567890123-abcdefgh/",
    "POLICY": "daily=35d,monthly=24m,changes=400d",
}


def _text() -> str:
    return OPERATIONS.read_text(encoding="utf-8")


def _code_block_commands(text: str) -> list[str]:
    """Every ``ddb-rewind ...`` command in a fenced code block, continuation lines joined."""
    commands = []
    for block in re.findall(r"^\s*```[a-z]*\n(.*?)^\s*```", text, re.MULTILINE | re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line.strip() for line in joined.splitlines() if line.strip().startswith("ddb-rewind ")]
    return commands


def _inline_commands(text: str) -> list[str]:
    """Every inline code span that starts with ``ddb-rewind `` (prose, tables)."""
    prose = re.sub(r"^\s*```[a-z]*\n.*?^\s*```", "", text, flags=re.MULTILINE | re.DOTALL)
    return [span for span in re.findall(r"`(ddb-rewind [^`]+)`", prose)]


def _argv(command: str) -> list[str]:
    """The arguments after ``ddb-rewind``, placeholders replaced (also in ``--option=VALUE``)."""
    words = shlex.split(command, comments=True)[1:]
    out = []
    for word in words:
        option, equals, value = word.partition("=")
        if equals and option.startswith("--"):
            out.append(f"{option}={PLACEHOLDERS.get(value, value)}")
        else:
            out.append(PLACEHOLDERS.get(word, word))
    return out


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_runbook_shows_commands() -> None:
    # Guards the extraction itself: a change to the fences must not silently leave nothing to check.
    assert len(_code_block_commands(_text())) >= 20
    assert len(_inline_commands(_text())) >= 5


@pytest.mark.parametrize("command", _code_block_commands(OPERATIONS.read_text(encoding="utf-8")))
def test_every_command_in_a_code_block_parses(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # --store must be written out: the runbook cannot rely on REWIND_STORE being set.
    monkeypatch.delenv("REWIND_STORE", raising=False)
    try:
        build_parser().parse_args(_argv(command))
    except SystemExit as exc:
        pytest.fail(f"{command!r} does not parse (exit {exc.code})")


@pytest.mark.parametrize("span", _inline_commands(OPERATIONS.read_text(encoding="utf-8")))
def test_every_inline_command_names_real_options(span: str) -> None:
    words = _argv(span)
    if words and words[0].startswith("-"):  # an option of ddb-rewind itself, such as --version
        parser, given = build_parser(), words
    else:
        parsers = _subcommands()
        assert words and words[0] in parsers, f"{span!r}: no command {words[:1]}"
        parser, given = parsers[words[0]], words[1:]
    known = {option for action in parser._actions for option in action.option_strings}
    unknown = [w.split("=", 1)[0] for w in given if w.startswith("-") and w.split("=", 1)[0] not in known]
    assert unknown == [], f"{span!r}: no option {unknown}"


def test_every_alarm_of_the_template_has_one_row() -> None:
    # Resources sit two spaces in, their Type four (the template's own layout; a resource written
    # otherwise would show as a missing row, never as a pass).
    template = TEMPLATE.read_text(encoding="utf-8")
    alarms = sorted(re.findall(r"^  ([A-Za-z0-9]+):\n    Type: AWS::CloudWatch::Alarm$", template, re.MULTILINE))
    assert len(alarms) == template.count("Type: AWS::CloudWatch::Alarm")
    rows = re.findall(r"^\| `([A-Za-z]+Alarm)` \|", _text(), re.MULTILINE)
    assert sorted(rows) == alarms


def _slug(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_of_the_runbook_reaches_a_file_and_heading_of_the_repository() -> None:
    links = re.findall(r"\]\(([^)]+)\)", _text())
    assert links
    for link in links:
        assert "://" not in link, f"{link}: the docs point only inside the repository"
        name, _, anchor = link.partition("#")
        target = OPERATIONS.parent / name if name else OPERATIONS
        assert target.is_file(), f"{link}: no such file"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(encoding="utf-8"), re.MULTILINE)
            assert anchor in {_slug(h) for h in headings}, f"{link}: no such heading"
