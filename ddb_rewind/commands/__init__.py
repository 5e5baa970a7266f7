"""One module per subcommand; each has ``register(subparsers)`` that sets ``run`` as the default."""

from __future__ import annotations

from types import ModuleType

from ddb_rewind.commands import compact, consume, diff, history, repair, replay, sql, status, timeline, verify

COMMANDS: list[ModuleType] = [consume, sql, history, timeline, diff, compact, replay, status, verify, repair]
