"""One module per subcommand; each has ``register(subparsers)`` that sets ``run`` as the default."""

from __future__ import annotations

from types import ModuleType

from ddb_rewind.commands import (
    bootstrap,
    check,
    compact,
    consume,
    demo,
    diff,
    expire,
    history,
    recover,
    repair,
    replay,
    sql,
    status,
    timeline,
    verify,
)

COMMANDS: list[ModuleType] = [
    demo, consume, sql, history, timeline, diff, verify, repair, compact, bootstrap, expire, replay, status, recover,
    check,
]
