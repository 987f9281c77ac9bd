"""boofuzz against the MQTT side (issue 8): mutated CONNECT, PUBLISH (QoS 0/1, to a camera's events
topic) and SUBSCRIBE packets, MQTT 3.1.1 and 5, at Mosquitto while the bridge consumes the topic.

Requests use the primitives behind ``s_byte``/``s_word``/``s_size``/``s_string``/``s_bytes``/``s_block``
through boofuzz's object API (``s_initialize`` keeps a process-wide table: a second campaign in one
process would clash). Remaining Length and v5 property lengths are a varint sizer of our own: the
true length unless it is the field being fuzzed, so a mutated string or payload still arrives well
framed and reaches the broker's parsers (and the bridge's); its own mutations are wild, overlong,
unterminated and off-by-one varints. boofuzz walks one field's mutations after another, so a short
campaign would never leave the first fields: our requests interleave an evenly spread sample of
every field's mutations instead (from the string library to the 64 KiB strings).

A CONNECT case sends the mutated CONNECT; a PUBLISH/SUBSCRIBE case a valid authenticated CONNECT,
then the mutated packet. After each case the watchdog checks that Mosquitto and the bridge still
run (else: crash); every ``probe_every`` cases and at the end, that Mosquitto answers CONNECT +
PINGREQ and the bridge's /healthz is ok within ``hang_after_s`` (else: hang). Either becomes a
boofuzz failure; boofuzz calls our restart callback, which restarts what died or hung, and goes on.
"""

from __future__ import annotations

import functools
import http.client
import itertools
import json
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.chaos.mqtt_fuzz import PINGREQ, _varint, connect
from pipeline.errors import ConfigError
from pipeline.topics import Kind, Topics

# Raw values for the varint sizer, plus ("delta", k): the true length + k, ("overlong", 0): the
# true length in a non-minimal 4-byte form (3.1.1 and 5 both require the minimal form).
VARINT_MUTATIONS: tuple[Any, ...] = (
    b"", b"\x00", b"\x01", b"\x7f", b"\x80\x01", b"\xff\x7f", b"\x80\x80\x01", b"\xff\xff\x7f",
    b"\x80\x80\x80\x01", b"\xff\xff\xff\x7f", b"\xff\xff\xff\xff\x7f", b"\x80", b"\xff\xff\xff\xff",
    b"\x80\x80\x80\x80\x00", ("delta", -1), ("delta", 1), ("delta", -2), ("delta", 100), ("delta", 70_000),
    ("overlong", 0),
)  # fmt: skip
MAX_STRING = 65_535  # an MQTT string's u16 length; boofuzz's 100 kB+ strings would only wrap it
PACKET_TYPES = {2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP", 9: "SUBACK",
                11: "UNSUBACK", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH"}  # fmt: skip


def _boofuzz() -> Any:
    try:
        import boofuzz
    except ImportError as exc:
        raise ConfigError(
            "the boofuzz MQTT campaign needs boofuzz: pip install -e '.[dev]' (or run `pipeline chaos --fuzzer own`)"
        ) from exc
    return boofuzz


def boofuzz_available() -> bool:
    try:
        _boofuzz()
    except ConfigError:
        return False
    return True


# ---------------------------------------------------------------------- packet definitions


@dataclass(frozen=True)
class MqttEndpoint:
    """Where to fuzz and what a valid packet carries (credentials, the events topic, an event)."""

    host: str
    port: int
    username: str
    password: str
    topic_prefix: str
    site: str
    cam: str
    event_payload: bytes  # a valid event of ``cam``: the PUBLISH payload when it is not mutated
    client_id: str = "boofuzz"


def _spread(total: int, counts: list[int]) -> list[int]:
    """Split ``total`` over fields as evenly as their sizes allow (water filling)."""
    out, left = [0] * len(counts), total
    open_ = [i for i, c in enumerate(counts) if c > 0]
    while left > 0 and open_:
        share = max(1, left // len(open_))
        for i in list(open_):
            take = min(share, counts[i] - out[i], left)
            out[i] += take
            left -= take
            if out[i] == counts[i]:
                open_.remove(i)
            if not left:
                break
    return out


def _evenly(mutations: Iterator[Any], n: int, k: int) -> Iterator[Any]:
    """``k`` of a field's ``n`` mutations, evenly spaced (so long strings are reached too)."""
    picks = {j * n // k for j in range(k)}
    last = max(picks, default=-1)
    for i, m in enumerate(mutations):
        if i in picks:
            yield m
        if i >= last:
            return


@functools.cache
def _types(bf: Any) -> tuple[Any, Any]:
    """Our two boofuzz subclasses, defined once boofuzz is imported (it is an optional extra)."""

    class VarintSize(bf.Size):  # type: ignore[misc]
        """MQTT Variable Byte Integer holding the rendered length of ``block_name``."""

        def mutations(self, default_value: Any) -> Iterator[Any]:
            yield from VARINT_MUTATIONS

        def num_mutations(self, default_value: Any) -> int:
            return len(VARINT_MUTATIONS)

        def encode(self, value: Any, mutation_context: Any) -> bytes:
            if isinstance(value, bytes):
                return value
            n = int(self._calculated_length(mutation_context=mutation_context))
            if value is None:
                return _varint(n)
            kind, k = value
            if kind == "delta":
                return _varint(max(0, n + k))
            minimal = _varint(n)
            return bytes(b | 0x80 for b in minimal) + b"\x80" * (3 - len(minimal)) + b"\x00"

    class SampledRequest(bf.Request):  # type: ignore[misc]
        """A request whose mutations interleave every field, ``quota`` of them in all."""

        quota: int | None = None  # None: every mutation of every field

        def mutations(self, default_value: Any, skip_elements: Any = None) -> Iterator[Any]:
            skip = set(skip_elements or ())
            fields = [f for f in self.walk() if f.fuzzable and f.qualified_name not in skip]
            counts = [int(f.get_num_mutations()) for f in fields]
            quotas = _spread(sum(counts) if self.quota is None else self.quota, counts)
            streams = [[f, _evenly(f.get_mutations(), n, q)]
                       for f, n, q in zip(fields, counts, quotas, strict=True) if q]  # fmt: skip
            while streams:
                for stream in list(streams):
                    m = next(stream[1], None)
                    if m is None:
                        streams.remove(stream)
                        continue
                    self.mutant = stream[0]  # boofuzz's per-element crash threshold reads it
                    yield m

    return VarintSize, SampledRequest


def _string(bf: Any, name: str, value: str | bytes) -> list[Any]:
    """An MQTT UTF-8 string (or binary data): u16 big-endian length, then the bytes."""
    if isinstance(value, bytes):
        data = bf.Bytes(name, value, max_len=MAX_STRING)
    else:
        data = bf.String(name, value, max_len=MAX_STRING)
    return [bf.Size(f"{name}_len", block_name=name, length=2, endian=">"), data]


def _payload(bf: Any, event: bytes) -> Any:
    """The event JSON with each top-level value a fuzzable field (strings inside their quotes),
    so most mutations stay JSON and reach the bridge's field validation, plus trailing bytes."""
    pieces: list[Any] = []
    for i, (key, value) in enumerate(json.loads(event).items()):
        pieces.append(bf.Static(f"k_{key}", ("{" if i == 0 else ",") + json.dumps(key) + ":"))
        if isinstance(value, str):
            pieces += [bf.Static(f"q_{key}", '"'), bf.String(f"ev_{key}", value, max_len=MAX_STRING),
                       bf.Static(f"qq_{key}", '"')]  # fmt: skip
        else:
            pieces.append(bf.String(f"ev_{key}", json.dumps(value, separators=(",", ":")), max_len=MAX_STRING))
    block = bf.Block("payload", children=[*pieces, bf.Static("close", "}"), bf.Bytes("trailing", b"")])
    if block.render() != event:  # a payload we cannot split exactly: fuzz it as one blob
        return bf.Bytes("payload", event, max_len=MAX_STRING)
    return block


def _properties(bf: Any, *items: Any) -> list[Any]:
    varint_size, _ = _types(bf)
    return [varint_size("props_len", block_name="props", length=1), bf.Block("props", children=list(items))]


def _packet(bf: Any, name: str, first_byte: int, body: list[Any]) -> Any:
    varint_size, request = _types(bf)
    return request(name, children=[
        bf.Byte("type_flags", first_byte),
        varint_size("remaining_length", block_name="body", length=1),
        bf.Block("body", children=body),
    ])  # fmt: skip


def build_requests(ep: MqttEndpoint, *, v5: bool) -> dict[str, Any]:
    """CONNECT, PUBLISH QoS 0 and 1 and SUBSCRIBE of one protocol version, by request name."""
    bf = _boofuzz()
    v = "v5" if v5 else "v311"
    topics = Topics(ep.topic_prefix)
    prefix, suffix = topics.camera(ep.site, ep.cam, Kind.EVENTS).split(ep.cam, 1)

    def user_property() -> list[Any]:
        return [bf.Byte("p_user_id", 0x26), *_string(bf, "user_key", "fuzz"), *_string(bf, "user_value", "boofuzz")]

    connect_props = _properties(bf,
        bf.Byte("p_session_expiry_id", 0x11), bf.DWord("session_expiry", 0, endian=">"),
        bf.Byte("p_receive_max_id", 0x21), bf.Word("receive_max", 20, endian=">"),
        bf.Byte("p_max_packet_id", 0x27), bf.DWord("max_packet", 1 << 20, endian=">"),
        *user_property(),
    ) if v5 else []  # fmt: skip
    out = {f"connect-{v}": _packet(bf, f"connect-{v}", 0x10, [
        *_string(bf, "protocol_name", "MQTT"), bf.Byte("level", 5 if v5 else 4),
        bf.Byte("connect_flags", 0xC2),  # username, password, clean session
        bf.Word("keepalive", 30, endian=">"), *connect_props,
        *_string(bf, "client_id", ep.client_id), *_string(bf, "username", ep.username),
        *_string(bf, "password", ep.password.encode()),
    ])}  # fmt: skip
    for qos in (0, 1):
        publish_props = _properties(bf,
            bf.Byte("p_format_id", 0x01), bf.Byte("payload_format", 1),
            bf.Byte("p_expiry_id", 0x02), bf.DWord("message_expiry", 60, endian=">"),
            bf.Byte("p_content_type_id", 0x03), *_string(bf, "content_type", "application/json"),
            *user_property(),
        ) if v5 else []  # fmt: skip
        name = f"publish-q{qos}-{v}"
        out[name] = _packet(bf, name, 0x30 | qos << 1, [
            bf.Size("topic_len", block_name="topic", length=2, endian=">"),
            bf.Block("topic", children=[bf.Static("topic_head", prefix), bf.String("cam", ep.cam, max_len=MAX_STRING),
                                        bf.Static("topic_tail", suffix)]),
            *([bf.Word("packet_id", 1, endian=">")] if qos else []), *publish_props,
            _payload(bf, ep.event_payload),
        ])  # fmt: skip
    subscribe_props = _properties(bf, bf.Byte("p_sub_id", 0x0B), bf.Bytes("subscription_id", b"\x01"),
                                  *user_property()) if v5 else []  # fmt: skip
    out[f"subscribe-{v}"] = _packet(bf, f"subscribe-{v}", 0x82, [
        bf.Word("packet_id", 1, endian=">"), *subscribe_props,
        *_string(bf, "topic_filter", topics.all_cameras(Kind.EVENTS, ep.site)), bf.Byte("options", 0x01),
    ])  # fmt: skip
    return out


def fuzz_paths() -> list[tuple[str, ...]]:
    """Message paths, CONNECT first: the last request of each is the one mutated."""
    paths: list[tuple[str, ...]] = []
    for v in ("v311", "v5"):
        paths.append((f"connect-{v}",))
        paths += [(f"connect-{v}", f"{kind}-{v}") for kind in ("publish-q0", "publish-q1", "subscribe")]
    return paths


# ---------------------------------------------------------------------- watchdog


class Watched(Protocol):
    """One of our processes (a :class:`~pipeline.local_stack.child_process.ChildProcess`)."""

    @property
    def running(self) -> bool: ...

    def restart(self) -> object: ...


def broker_answers(ep: MqttEndpoint, timeout_s: float) -> bool:
    """An authenticated CONNECT + PINGREQ gets CONNACK (accepted) and PINGRESP."""
    try:
        with socket.create_connection((ep.host, ep.port), timeout=timeout_s) as s:
            s.sendall(connect(f"{ep.client_id}-probe", ep.username, ep.password, v5=False) + PINGREQ)
            got, deadline = b"", time.monotonic() + timeout_s
            while len(got) < 6 and time.monotonic() < deadline:
                chunk = s.recv(64)
                if not chunk:
                    break
                got += chunk
            return got[:2] == b"\x20\x02" and got[3:4] == b"\x00" and got[4:6] == b"\xd0\x00"
    except OSError:
        return False


def healthz_ok(host: str, port: int, timeout_s: float) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@dataclass
class BoofuzzReport:
    cases: int = 0  # sum of the boofuzz sessions' num_cases_actually_fuzzed
    cases_by_request: dict[str, int] = field(default_factory=dict)
    mutations_defined: int = 0  # single-field mutations the requests define (a full walk)
    crashes: list[str] = field(default_factory=list)  # one line per process found exited
    hangs: list[str] = field(default_factory=list)  # alive, but no answer within hang_after_s
    probes: int = 0
    answers: dict[str, int] = field(default_factory=dict)  # broker replies to the mutated packet, by type
    errors: list[str] = field(default_factory=list)  # boofuzz swallows callback exceptions: they land here
    bytes_sent: int = 0
    aborted: str | None = None  # boofuzz stopped early (a restart failed)
    wall_s: float = 0.0


class _Watchdog:
    """boofuzz callbacks: liveness after each case, health every ``probe_every``, restarts."""

    def __init__(self, ep: MqttEndpoint, broker: Watched, bridge: Watched, bridge_health: tuple[str, int],
                 report: BoofuzzReport, *, probe_every: int, hang_after_s: float, restart_wait_s: float,
                 after_case: Callable[[int], None] | None) -> None:  # fmt: skip
        self.ep, self.report = ep, report
        self.procs = {"mosquitto": broker, "bridge": bridge}
        self.health = bridge_health
        self.probe_every, self.hang_after_s, self.after_case_hook = probe_every, hang_after_s, after_case
        self.restart_wait_s = restart_wait_s
        self.n = 0
        self.broken: set[str] = set()

    def _until(self, check: Callable[[], bool], within_s: float | None = None) -> bool:
        deadline = time.monotonic() + (self.hang_after_s if within_s is None else within_s)
        while not check():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def check(self, *, full: bool) -> str | None:
        dead = [name for name, p in self.procs.items() if not p.running]
        if not dead and full:
            self.report.probes += 1
            hung = [] if self._until(lambda: broker_answers(self.ep, 2.0)) else ["mosquitto"]
            if not self._until(lambda: healthz_ok(*self.health, 2.0)):
                hung.append("bridge")
            dead = [name for name in hung if not self.procs[name].running]  # died while probed
            for name in set(hung) - set(dead):
                what = "/healthz not ok" if name == "bridge" else "no CONNACK + PINGRESP"
                self.report.hangs.append(f"after case {self.n}: {name}: {what} for {self.hang_after_s:.0f} s")
                self.broken.add(name)
        for name in dead:
            self.report.crashes.append(f"after case {self.n}: {name} exited")
            self.broken.add(name)
        return f"not answering or exited: {sorted(self.broken)}" if self.broken else None

    # The signatures are boofuzz's (CallbackMonitor passes these keywords).
    def after_case(self, target: Any, fuzz_data_logger: Any, session: Any, *args: Any, **kwargs: Any) -> None:
        self.n += 1
        if self.after_case_hook is not None:
            self.after_case_hook(self.n)
        problem = self.check(full=self.n % self.probe_every == 0)
        if problem:
            fuzz_data_logger.log_fail(problem)

    def restart(self, target: Any, fuzz_data_logger: Any, session: Any, *args: Any, **kwargs: Any) -> None:
        if not self.broken:  # boofuzz could not connect: find out why
            self.check(full=True)
        try:
            for name in ("mosquitto", "bridge"):  # the bridge needs the broker
                if name in self.broken:
                    self.procs[name].restart()
            self.broken.clear()
            # paho's reconnect backoff, not a hang: after a broker restart the bridge may take a while.
            if not self._until(lambda: healthz_ok(*self.health, 2.0), self.restart_wait_s):
                raise RuntimeError("bridge not healthy after the restart")  # noqa: TRY301
        except Exception as exc:
            raise _boofuzz().exception.BoofuzzRestartFailedError(repr(exc)) from exc


class _Tally:
    """A quiet boofuzz fuzz logger: counts cases, bytes and the broker's answers, prints progress."""

    def __init__(self, report: BoofuzzReport, total: int, progress: Callable[[str], None] | None, every: int) -> None:
        self.report, self.total, self.progress, self.every = report, total, progress, every
        self.began = time.monotonic()
        self.seen = 0
        self.fuzzing = False
        self.answers: Counter[str] = Counter()

    def open_test_case(self, test_case_id: Any, name: Any, index: Any, *args: Any, **kwargs: Any) -> None:
        self.seen += 1
        if self.progress and self.seen % self.every == 0:
            r = self.report
            self.progress(f"   boofuzz: {self.seen:,}/{self.total:,} cases, {len(r.crashes)} crashes,"
                          f" {len(r.hangs)} hangs, {time.monotonic() - self.began:.0f} s")  # fmt: skip

    def open_test_step(self, description: str) -> None:
        self.fuzzing = description.startswith("Fuzzing Node")

    def log_send(self, data: bytes) -> None:
        self.report.bytes_sent += len(data)

    def log_recv(self, data: bytes) -> None:
        if self.fuzzing and data:
            self.answers[PACKET_TYPES.get(data[0] >> 4, "other")] += 1

    def log_error(self, description: str) -> None:
        self.report.errors.append(description[-2000:])

    def _ignore(self, *args: Any, **kwargs: Any) -> None:
        return

    log_check = log_pass = log_fail = log_info = close_test_case = close_test = _ignore


def run_campaign(
    ep: MqttEndpoint,
    broker: Watched,
    bridge: Watched,
    bridge_health: tuple[str, int],
    cases: int,
    *,
    work_dir: Path,
    probe_every: int = 100,
    hang_after_s: float = 10.0,
    restart_wait_s: float = 60.0,
    recv_timeout_s: float = 0.02,
    progress: Callable[[str], None] | None = None,
    progress_every: int = 1000,
    after_case: Callable[[int], None] | None = None,
) -> BoofuzzReport:
    """``cases`` boofuzz test cases split evenly over :func:`fuzz_paths`, one boofuzz Session each
    (its ``index_end`` is the share), with the watchdog's callbacks; then a final health check."""
    bf = _boofuzz()
    report = BoofuzzReport()
    work_dir.mkdir(parents=True, exist_ok=True)
    watch = _Watchdog(ep, broker, bridge, bridge_health, report, probe_every=probe_every, hang_after_s=hang_after_s,
                      restart_wait_s=restart_wait_s, after_case=after_case)  # fmt: skip
    tally = _Tally(report, cases, progress, progress_every)
    paths = fuzz_paths()
    began = time.monotonic()
    for i, path in enumerate(paths):
        share = cases // len(paths) + (1 if i < cases % len(paths) else 0)
        requests = {**build_requests(ep, v5=False), **build_requests(ep, v5=True)}
        fuzzed = requests[path[-1]]
        report.mutations_defined += int(fuzzed.get_num_mutations())
        if not share:
            continue
        fuzzed.quota = share
        session = bf.Session(
            target=bf.Target(connection=bf.TCPSocketConnection(ep.host, ep.port, send_timeout=2.0,
                                                               recv_timeout=recv_timeout_s)),
            web_port=None,
            keep_web_open=False,
            fuzz_loggers=[tally],
            db_filename=str(work_dir / f"boofuzz-{'-'.join(path)}.db"),
            fuzz_db_keep_only_n_pass_cases=1,  # the DB keeps cases around a failure, not all 10,000
            index_end=share,
            receive_data_after_fuzz=True,  # for the tally of answers
            post_test_case_callbacks=[watch.after_case],
            restart_callbacks=[watch.restart],
            restart_threshold=3,
            restart_sleep_time=0,
            # A crash or hang shows up cases after the packet that caused it (the bridge reports
            # unhealthy after 30 s), so boofuzz must not blame and skip the element fuzzed then.
            crash_threshold_request=cases + 1,
            crash_threshold_element=cases + 1,
        )  # fmt: skip
        session.connect(requests[path[0]])
        for src, dst in itertools.pairwise(path):
            session.connect(requests[src], requests[dst])
        try:
            session.fuzz(name="->".join(path))
        except bf.exception.BoofuzzRestartFailedError as exc:
            report.aborted = f"{'->'.join(path)}: restart failed: {exc}"
        report.cases_by_request[path[-1]] = int(session.num_cases_actually_fuzzed)
        report.cases += int(session.num_cases_actually_fuzzed)
        if report.aborted:
            break
    watch.check(full=True)  # the last cases must not have left a hang behind
    report.answers = dict(tally.answers)
    report.wall_s = round(time.monotonic() - began, 1)
    return report
