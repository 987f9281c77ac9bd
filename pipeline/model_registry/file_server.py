"""``pipeline models serve``: the registry over HTTP (stdlib ``http.server``), for the edges.

``GET /models/<name>/<version>/<file>`` serves a registered file with ``Accept-Ranges: bytes``;
a ``Range: bytes=START-[END]`` request is answered ``206 Partial Content`` (the edge resumes an
interrupted download that way), an unsatisfiable one ``416``. ``GET /models.json`` lists the
registry. Nothing outside the registry directory is reachable (names are checked, no paths).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeline.errors import ConfigError
from pipeline.model_registry.registry import ModelRegistry

log = logging.getLogger(__name__)

_PATH = re.compile(r"^/models/([A-Za-z0-9_.-]{1,64})/([A-Za-z0-9_.-]{1,64})/([A-Za-z0-9_.-]{1,128})$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 64 * 1024


class _Handler(BaseHTTPRequestHandler):
    server: RegistryServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _plain(self, status: HTTPStatus, text: str, headers: dict[str, str] | None = None) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        reg = self.server.registry
        if self.path == "/models.json":
            self._plain(HTTPStatus.OK, json.dumps([asdict(e) for e in reg.entries()], indent=2))
            return
        m = _PATH.match(self.path)
        if m is None:
            self._plain(HTTPStatus.NOT_FOUND, "not found\n")
            return
        try:
            entry = reg.get(m.group(1), m.group(2))
        except ConfigError:
            self._plain(HTTPStatus.NOT_FOUND, "no such model\n")
            return
        path = reg.path_of(entry)
        if m.group(3) != entry.file or not path.is_file():
            self._plain(HTTPStatus.NOT_FOUND, "no such file\n")
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        status = HTTPStatus.OK
        header = self.headers.get("Range")
        if header:
            r = _RANGE.match(header.strip())
            if r is None or (not r.group(1) and not r.group(2)):
                self._plain(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "bad range\n", {"Content-Range": f"bytes */{size}"}
                )
                return
            if r.group(1):
                start = int(r.group(1))
                end = min(int(r.group(2)), size - 1) if r.group(2) else size - 1
            else:  # suffix: the last N bytes
                start = max(0, size - int(r.group(2)))
            if start >= size or end < start:
                self._plain(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "range not satisfiable\n",
                            {"Content-Range": f"bytes */{size}"})  # fmt: skip
                return
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("ETag", f'"{entry.sha256}"')
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        self.server.count(self.path, status)
        if self.command == "HEAD":
            return
        with path.open("rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                block = f.read(min(CHUNK, left))
                if not block:
                    break
                try:
                    self.wfile.write(block)
                except (BrokenPipeError, ConnectionResetError):
                    return
                left -= len(block)


class RegistryServer(ThreadingHTTPServer):
    """Serves ``registry`` on ``(host, port)`` (port 0: any free one, see ``server_port``)."""

    daemon_threads = True

    def __init__(self, registry: ModelRegistry, host: str = "127.0.0.1", port: int = 0) -> None:
        self.registry = registry
        self.requests: list[tuple[str, int]] = []  # (path, status) of file requests
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _Handler)

    def count(self, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((path, int(status)))

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> RegistryServer:
        self._thread = threading.Thread(target=self.serve_forever, name="registry-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
