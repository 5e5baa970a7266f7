"""moto's server on 127.0.0.1 for the tests that must reach AWS over HTTP (pyarrow, DuckDB, subprocesses).

moto's ``ThreadedMotoServer`` runs werkzeug's ``serve_forever`` with its default poll of half a
second, and ``stop`` waits for that poll: about 0.4 s per test that starts a server. The server
here polls every 20 ms; nothing else differs.
"""

from __future__ import annotations

import socket

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

POLL_SECONDS = 0.02


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MotoHttpServer(ThreadedMotoServer):
    """moto's threaded server on 127.0.0.1 (a free port unless given), stopped within 20 ms."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(ip_address="127.0.0.1", port=port or free_port(), verbose=False)

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def _server_entry(self) -> None:
        # moto's own entry (moto/moto_server/threaded_moto_server.py), with a shorter poll.
        self._server = make_server(self._ip_address, self._port, DomainDispatcherApplication(create_backend_app),
                                   True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever(poll_interval=POLL_SECONDS)
