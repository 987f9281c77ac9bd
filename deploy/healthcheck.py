#!/usr/bin/env python3
"""Container health probe for the project image (standard library only).

    healthcheck.py http://127.0.0.1:9108/healthz   exit 0 if the URL answers 2xx within 3 s
    healthcheck.py tcp://127.0.0.1:6066            exit 0 if the port accepts a connection

Used by docker-compose.yml's health checks (bridge: /healthz of bridge.health_port; cloud: the
Faust web port) and by tests/deploy, which run the same probe against the same commands
outside Docker.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

TIMEOUT_S = 3.0


def probe(target: str, timeout_s: float = TIMEOUT_S) -> tuple[bool, str]:
    parts = urlsplit(target)
    if parts.scheme == "tcp":
        if not parts.hostname or parts.port is None:
            return False, f"bad target {target!r}: tcp://HOST:PORT"
        try:
            with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s):
                return True, f"{target} accepts connections"
        except OSError as exc:
            return False, f"{target}: {exc}"
    if parts.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(target, timeout=timeout_s) as resp:  # noqa: S310 (scheme checked)
                return 200 <= resp.status < 300, f"{target}: HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            return False, f"{target}: {exc}"
    return False, f"bad target {target!r}: use http://, https:// or tcp://"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    ok, message = probe(argv[0])
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
