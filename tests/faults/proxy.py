"""A fault-injecting HTTP proxy in front of moto's server, for S3, DynamoDB and DynamoDB Streams.

Clients (boto3 in this process, pyarrow's S3 filesystem, real ``ddb-rewind`` processes) reach AWS
through the proxy by ``AWS_ENDPOINT_URL``. Every request is forwarded to moto unchanged unless a
rule matches it; each rule fires a bounded number of times (``count``), after ``skip`` matches:

- ``error``: answer with an error status and code (S3 XML or DynamoDB JSON) without reaching moto;
- ``drop``: close the connection before the request reaches moto (nothing applied);
- ``drop_after``: forward to moto, then close the connection: applied, answer lost;
- ``unprocessed``: BatchWriteItem only: forward the first ``keep`` requests of each table and
  answer the rest as ``UnprocessedItems``, as DynamoDB does under load;
- ``block``: hold the request (``applied``: after moto applied it) until released, so a test can
  SIGKILL the process that sent it at that exact store operation, or run something else in
  between; once released the request is dropped (``then="forward"``: answered as usual).

Every request is logged (method, service, path, operation) so tests can assert what was sent.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"})
_SERVICE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([a-z0-9-]+)/aws4_request")


@dataclass(frozen=True)
class Request:
    """What the proxy saw of one request."""

    method: str
    service: str
    path: str
    operation: str  # DynamoDB's X-Amz-Target operation ("BatchWriteItem"), "" for S3


@dataclass
class Rule:
    """Which requests to hit (all given fields must match) and what to do to them."""

    action: str
    method: str | None = None
    service: str | None = None  # "s3", "dynamodb", "dynamodb-streams" ... from the signature
    path: str | None = None  # regex searched in the URL-decoded path (with query string)
    operation: str | None = None  # X-Amz-Target operation, e.g. "BatchWriteItem"
    count: int = 1
    skip: int = 0
    status: int = 500
    code: str = "InternalError"
    keep: int = 1  # for "unprocessed": requests per table that are applied
    applied: bool = False  # for "block": hold after moto applied the request
    then: str = "drop"  # for "block": what happens on release, "drop" or "forward"
    hits: int = 0
    seen: int = 0
    blocked: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def matches(self, request: Request) -> bool:
        """Whether the rule applies to this request (before counting)."""
        return ((self.method is None or self.method == request.method)
                and (self.service is None or self.service == request.service)
                and (self.path is None or re.search(self.path, request.path) is not None)
                and (self.operation is None or self.operation == request.operation))

    @property
    def exhausted(self) -> bool:
        """Whether the rule has fired ``count`` times."""
        return self.hits >= self.count


# The path of S3's DeleteObjects (a POST to the bucket): the keys are in its body, not its path.
DELETE_OBJECTS = r"\?delete"


class FaultProxy:
    """The proxy: ``url`` to point clients at, ``rules`` to add faults, ``log`` of requests seen."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.rules: list[Rule] = []
        self.log: list[Request] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A stop waits for the loop's next poll: socketserver's default of half a second, in every fault test.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def start(self) -> FaultProxy:
        """Serve in a background thread."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Release every blocked request and stop serving."""
        for rule in self.rules:
            rule.release.set()
        self.server.shutdown()
        self.server.server_close()

    def add(self, action: str, **match: Any) -> Rule:
        """Add a rule (see ``Rule``) and return it, to watch its hits or release it."""
        rule = Rule(action, **match)
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule (blocked requests are released)."""
        with self.lock:
            for rule in self.rules:
                rule.release.set()
            self.rules.clear()

    def requests(self, **match: Any) -> list[Request]:
        """Requests seen that match the given fields (as a rule would)."""
        probe = Rule("probe", **match)
        with self.lock:
            return [request for request in self.log if probe.matches(request)]

    def _choose(self, request: Request) -> Rule | None:
        with self.lock:
            self.log.append(request)
            for rule in self.rules:
                if rule.exhausted or not rule.matches(request):
                    continue
                rule.seen += 1
                if rule.seen <= rule.skip:
                    continue
                rule.hits += 1
                return rule
        return None


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two sends: with Nagle on, the second waits for the client's delayed
    # ACK (40 ms a request on Linux loopback), which made every request through the proxy slow.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._body()
        target = self.headers.get("X-Amz-Target", "")
        found = _SERVICE.search(self.headers.get("Authorization", ""))
        service = found.group(1) if found else ("dynamodb" if target.startswith("DynamoDB_") else "s3")
        # Matched decoded: pyarrow's client sends "dt%3D2025-06-15", boto3 "dt=2025-06-15".
        request = Request(self.command, service, urllib.parse.unquote(self.path), target.rpartition(".")[2])
        rule = self.owner._choose(request)
        action = rule.action if rule else "forward"
        if action == "drop":
            self._drop()
            return
        if action == "error":
            assert rule is not None
            self._error(rule, service)
            return
        if action == "block":
            assert rule is not None
            answer = self._forward(body) if rule.applied else None
            rule.blocked.set()
            rule.release.wait(timeout=60)
            if rule.then == "forward":
                self._reply(*(answer or self._forward(body)))
            else:
                self._drop()
            return
        if action == "unprocessed":
            assert rule is not None
            status, headers, answer = self._unprocessed(body, rule.keep)
        else:
            status, headers, answer = self._forward(body)
        if action == "drop_after":
            self._drop()
            return
        self._reply(status, headers, answer)

    def _serve(self) -> None:
        try:
            self._handle()
        except (BrokenPipeError, ConnectionResetError):  # the client went away (killed, or timed out)
            self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
        headers = {name: value for name, value in self.headers.items() if name.lower() not in _HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            return response.status, response.getheaders(), answer
        finally:
            connection.close()

    def _unprocessed(self, body: bytes, keep: int) -> tuple[int, list[tuple[str, str]], bytes]:
        request = json.loads(body)
        applied = {table: items[:keep] for table, items in request["RequestItems"].items()}
        left = {table: items[keep:] for table, items in request["RequestItems"].items() if items[keep:]}
        status, headers, answer = self._forward(json.dumps({**request, "RequestItems": applied}).encode())
        if status != 200:
            return status, headers, answer
        document = json.loads(answer)
        document["UnprocessedItems"] = left
        return status, headers, json.dumps(document).encode()

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP:
                self.send_header(name, value)
        if self.command == "HEAD":
            length = next((v for n, v in headers if n.lower() == "content-length"), "0")
            self.send_header("Content-Length", length)
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, rule: Rule, service: str) -> None:
        if service == "s3":
            body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{rule.code}</Code>"
                    f"<Message>injected fault</Message></Error>").encode()
            kind = "application/xml"
        else:
            body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{rule.code}",
                               "message": "injected fault"}).encode()
            kind = "application/x-amz-json-1.0"
        self._reply(rule.status, [("Content-Type", kind), ("x-amzn-ErrorType", rule.code)],
                    b"" if self.command == "HEAD" else body)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
