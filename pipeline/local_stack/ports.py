"""Free loopback ports for brokers started by the local stack and the tests."""

from __future__ import annotations

import socket
import time

from pipeline.errors import LocalStackError

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on right now.

    The kernel picks it (bind to port 0), so two callers never race over a guessed range; the
    small window between closing this socket and the broker binding it is accepted.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_port_closed(host: str, port: int, timeout_s: float) -> None:
    """Wait until nothing listens on ``host:port`` (after a stop, before a restart on it)."""
    deadline = time.monotonic() + timeout_s
    while port_open(host, port):
        if time.monotonic() > deadline:
            raise LocalStackError(f"port {host}:{port} still accepts connections after {timeout_s:.0f} s")
        time.sleep(0.05)
