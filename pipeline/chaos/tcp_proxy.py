"""A small TCP proxy for link faults between the edge and its MQTT broker.

``TcpProxy(upstream_host, upstream_port)`` listens on a free loopback port and forwards each
accepted connection to the upstream with two pump threads. Faults, switchable at any time:

- ``delay_s``: every chunk waits this long before it is forwarded (a slow link);
- :meth:`hold` / :meth:`release`: pumps stop reading, so bytes pile up in kernel buffers and
  neither side hears from the other while both sockets stay open (a half-open / black-holed
  link: only keep-alives can tell); new connections are accepted and held too;
- :meth:`cut`: reset every open connection (RST), as when a NAT or a modem drops its state;
- ``refuse``: close new connections at once (the far side is gone).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from types import TracebackType

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay_s = 0.0
        self.refuse = False
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self.connections_total = 0
        self.bytes_forwarded = 0
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.2)
        self.host, self.port = self._listener.getsockname()[:2]
        self._acceptor = threading.Thread(target=self._accept_loop, name="tcp-proxy-accept", daemon=True)

    # ------------------------------------------------------------------ control

    def start(self) -> TcpProxy:
        self._acceptor.start()
        return self

    def hold(self) -> None:
        """Stop moving bytes in both directions; connections stay open."""
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    @property
    def held(self) -> bool:
        return not self._flowing.is_set()

    def cut(self) -> int:
        """Reset every open connection; returns how many."""
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for s in conns:
            _reset(s)
        return len(conns) // 2

    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns) // 2

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        self.cut()
        self._acceptor.join(2)
        self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ threads

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.refuse:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError as exc:
                log.info("proxy: upstream %s:%d unreachable (%s)", *self.upstream, exc)
                _reset(client)
                continue
            for s in (client, upstream):
                s.settimeout(0.2)
            with self._lock:
                self._conns |= {client, upstream}
                self.connections_total += 1
            for src, dst, name in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(target=self._pump, args=(src, dst), name=f"tcp-proxy-{name}", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                if not self._flowing.wait(0.2):
                    if not self._alive(src):
                        return
                    continue
                try:
                    data = src.recv(CHUNK)
                except TimeoutError:
                    continue
                if not data:
                    return
                if self.delay_s > 0:
                    time.sleep(self.delay_s)
                self._flowing.wait()  # a hold that began while this chunk was in hand
                dst.sendall(data)
                with self._lock:
                    self.bytes_forwarded += len(data)
        except OSError:
            return
        finally:
            self._drop(src, dst)

    def _alive(self, s: socket.socket) -> bool:
        with self._lock:
            return s in self._conns

    def _drop(self, *socks: socket.socket) -> None:
        with self._lock:
            present = [s for s in socks if s in self._conns]
            self._conns -= set(socks)
        for s in present:
            _reset(s)


def _reset(s: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), like a middlebox that forgot the connection."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        s.close()
