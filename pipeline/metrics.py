"""Counters, gauges and latency summaries with Prometheus text output, no dependencies.

The edge installs no prometheus_client, so every part uses this one small registry. Thread-safe:
the MQTT network thread, capture threads and the main loop all count into it.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

Labels = tuple[tuple[str, str], ...]
_V = TypeVar("_V")


def _labels(kw: dict[str, str]) -> Labels:
    return tuple(sorted((k, str(v)) for k, v in kw.items()))


def _fmt(name: str, labels: Labels) -> str:
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return f"{name}{{{inner}}}"


class Registry:
    def __init__(self, namespace: str = "pipeline") -> None:
        self.namespace = namespace
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = {}
        self._gauges: dict[str, dict[Labels, float]] = {}
        self._samples: dict[str, dict[Labels, list[float]]] = {}
        self._help: dict[str, str] = {}
        self._sample_cap = 10_000  # bounded: thinned to every other sample when full

    # ---- writing
    def inc(self, name: str, value: float = 1.0, help: str = "", **labels: str) -> None:
        key = _labels(labels)
        with self._lock:
            series = self._counters.setdefault(name, {})
            series[key] = series.get(key, 0.0) + value
            if help:
                self._help.setdefault(name, help)

    def set(self, name: str, value: float, help: str = "", **labels: str) -> None:
        with self._lock:
            self._gauges.setdefault(name, {})[_labels(labels)] = value
            if help:
                self._help.setdefault(name, help)

    def observe(self, name: str, value: float, help: str = "", **labels: str) -> None:
        """Record one latency/size sample (seconds or bytes); exported as a summary."""
        with self._lock:
            samples = self._samples.setdefault(name, {}).setdefault(_labels(labels), [])
            if len(samples) >= self._sample_cap:
                # The list is sorted: dropping every other sample keeps the shape of the
                # distribution (quantiles stay put); dropping a half would drop its low end.
                del samples[::2]
            bisect.insort(samples, value)
            if help:
                self._help.setdefault(name, help)

    # ---- reading
    def counter(self, name: str, **labels: str) -> float:
        """The sum of every series of ``name`` whose labels include ``labels``.

        ``counter("frames_corrupt_total", cam="c1")`` adds up every ``why`` of camera c1, and
        ``counter("events_total")`` every camera and type: readers ask for the slice they need
        instead of parsing ``name{labels}`` keys of :meth:`snapshot`."""
        with self._lock:
            return sum(self._matching(self._counters.get(name, {}), labels))

    def gauge(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._gauges.get(name, {}).get(_labels(labels), 0.0)

    def quantile(self, name: str, q: float, **labels: str) -> float | None:
        """Quantile ``q`` of the samples of every series of ``name`` whose labels include ``labels``."""
        with self._lock:
            values = sorted(v for s in self._matching(self._samples.get(name, {}), labels) for v in s)
        return percentile(values, q)

    @staticmethod
    def _matching(series: dict[Labels, _V], labels: dict[str, str]) -> list[_V]:
        want = set(_labels(labels))
        return [v for key, v in series.items() if want.issubset(key)]

    def snapshot(self) -> dict[str, float]:
        """Flat ``name{labels}: value`` view (for status messages and summaries)."""
        out: dict[str, float] = {}
        with self._lock:
            for kind in (self._counters, self._gauges):
                for name, series in kind.items():
                    for labels, v in series.items():
                        out[_fmt(name, labels)] = v
        return out

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        ns = self.namespace
        lines: list[str] = []
        with self._lock:
            for kind, store in (("counter", self._counters), ("gauge", self._gauges)):
                for name, series in sorted(store.items()):
                    full = f"{ns}_{name}"
                    if name in self._help:
                        lines.append(f"# HELP {full} {self._help[name]}")
                    lines.append(f"# TYPE {full} {kind}")
                    lines.extend(f"{_fmt(full, k)} {v:g}" for k, v in sorted(series.items()))
            for name, by_labels in sorted(self._samples.items()):
                full = f"{ns}_{name}"
                lines.append(f"# TYPE {full} summary")
                for k, values in sorted(by_labels.items()):
                    for q in (0.5, 0.95, 0.99):
                        v = values[min(len(values) - 1, int(q * len(values)))]
                        lines.append(f"{_fmt(full, (*k, ('quantile', str(q))))} {v:g}")
                    lines.append(f"{_fmt(full + '_count', k)} {len(values)}")
        return "\n".join(lines) + "\n"


def serve_http(
    registry: Registry, port: int, host: str = "127.0.0.1", health: Callable[[], bool] | None = None
) -> ThreadingHTTPServer:
    """Serve ``/metrics`` and ``/healthz`` from a daemon thread; returns the server (call shutdown())."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, code = registry.render().encode(), 200
            elif self.path == "/healthz":
                ok = health() if health else True
                body, code = (b"ok\n", 200) if ok else (b"unhealthy\n", 503)
            else:
                body, code = b"not found\n", 404
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name=f"metrics-http-{port}", daemon=True).start()
    return server


def percentile(values: Iterable[float], q: float) -> float | None:
    data = sorted(values)
    if not data:
        return None
    return data[min(len(data) - 1, int(q * len(data)))]
