"""One module per subcommand; each has ``register(subparsers)`` that sets ``run`` as the default."""

from __future__ import annotations

from types import ModuleType

from ddb_rewind.commands import diff, history, sql, timeline

COMMANDS: list[ModuleType] = [sql, history, timeline, diff]
