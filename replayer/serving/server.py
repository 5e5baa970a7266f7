"""The loopback HTTP server: binds first (a busy port refuses at once), answers once the moment is loaded."""

from __future__ import annotations

import importlib
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

from changelog.errors import UsageError
from changelog.store import Store
from changelog.timefmt import format_time
from replayer.serving.load import Loaded, load_tables
from replayer.serving.shapes import Response, error

if TYPE_CHECKING:
    from replayer.serving.protocol import Protocol

# DynamoDB's own request limit (BatchGetItem, TransactGetItems are far below it).
MAX_BODY = 16 * 1024 * 1024
POLL_SECONDS = 0.05


class MomentServer(ThreadingHTTPServer):
    """A threading HTTP server whose answers come from ``protocol`` once it is set."""

    daemon_threads = True
    protocol: Protocol | None = None
    loading = "loading the moment"


class _Requests(BaseHTTPRequestHandler):
    server: MomentServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm the body waits for the client's
    # delayed ACK of the headers (40 ms a request on Linux), twenty times a GetItem's own time.
    disable_nagle_algorithm = True

    def _answer(self) -> None:
        length_text = self.headers.get("Content-Length") or "0"
        length = int(length_text) if length_text.isdigit() else -1
        if not 0 <= length <= MAX_BODY:
            self._send(error("ValidationException", "the request body is missing its length or is over 16 MB"),
                       close=True)
            return
        body = self.rfile.read(length) if length else b""
        protocol = self.server.protocol
        if protocol is None:
            self._send(error("ResourceNotFoundException",
                             f"{self.server.loading}: ask again once 'ddb-rewind serve' says it is serving"))
            return
        url = f"http://{self.headers.get('Host') or 'localhost'}{self.path}"
        self._send(protocol.answer(self.command, url, dict(self.headers.items()), body))

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

    def _send(self, response: Response, close: bool = False) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            if name.lower() not in ("content-length", "connection", "date", "server"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: object) -> None:
        return None


def bind(host: str, port: int) -> MomentServer:
    """Listen on ``host:port`` (port 0: any free port); UsageError when that cannot be done."""
    try:
        return MomentServer((host, port), _Requests)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(f"cannot listen on {host}:{port}: {reason}; choose another --port or --host") from None


def start(server: MomentServer) -> threading.Thread:
    """Answer requests on a background thread until ``server.shutdown()``."""
    # A stop waits for the loop's next poll: socketserver's default of half a second is felt on every Ctrl-C.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": POLL_SECONDS},
                              name="ddb-rewind-serve", daemon=True)
    thread.start()
    return thread


def moto_missing(reason: str = "") -> UsageError:
    """The refusal when moto's DynamoDB, serve's one extra dependency, cannot be imported."""
    detail = f" ({reason})" if reason else ""
    return UsageError(f"serve needs moto's DynamoDB{detail}: pip install 'ddb-rewind[serve]'")


class _Importing(threading.Thread):
    """Imports moto's DynamoDB handler (about half a second of CPU) while the state is computed."""

    def __init__(self) -> None:
        super().__init__(name="ddb-rewind-import", daemon=True)
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            importlib.import_module("replayer.serving.protocol")
            importlib.import_module("replayer.serving.moment")
        except BaseException as exc:  # raised again where the modules are used
            self.failure = exc


@contextmanager
def serving(store: Store, tables: list[str], at: datetime, *, host: str = "127.0.0.1", port: int = 0,
            say: Callable[[str], None] = lambda line: None) -> Iterator[MomentServer]:
    """Serve ``tables`` as of ``at`` on ``host:port`` while inside; the indexes are deleted on leaving.

    The port is taken first, so a busy one refuses before any loading; until the moment is loaded,
    requests get an error saying so (never a wait).
    """
    server = bind(host, port)
    start(server)
    importing = _Importing()
    importing.start()
    loaded: list[Loaded] = []
    try:
        with tempfile.TemporaryDirectory(prefix="ddb-rewind-serve-") as work:
            try:
                server.loading = f"loading {', '.join(tables)} as of {format_time(at)}"
                loaded = load_tables(store, tables, at, Path(work), say)
                importing.join()
                if isinstance(importing.failure, ImportError):
                    raise moto_missing(str(importing.failure)) from None
                if importing.failure is not None:
                    raise importing.failure
                from replayer.serving.moment import backend_of
                from replayer.serving.protocol import Protocol

                server.protocol = Protocol(backend_of(loaded), f"{', '.join(tables)} as of {format_time(at)}")
                yield server
            finally:
                server.shutdown()
                server.server_close()
                for one in loaded:
                    one.index.close()
    finally:
        server.server_close()
