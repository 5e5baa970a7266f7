"""One module per subcommand; each has ``register(subparsers)`` that sets ``run`` as the default."""

from __future__ import annotations

from types import ModuleType

from ddb_rewind.commands import (
    athena_sql,
    bootstrap,
    check,
    compact,
    consume,
    demo,
    diff,
    expire,
    forget,
    history,
    recover,
    repair,
    replay,
    report,
    requeue,
    serve,
    sql,
    status,
    timeline,
    verify,
)

# The order of `ddb-rewind --help` and of README's command list (tests/test_cli_help.py keeps them equal):
# try it, capture, look after the store, restore, then ask questions.
COMMANDS: list[ModuleType] = [
    demo, status, consume, bootstrap, recover, requeue, compact, expire, forget, check, replay, verify, repair, sql,
    history, timeline, diff, athena_sql, report, serve,
]
