"""A seeded mutational fuzzer of MQTT packets over raw sockets (our own, not boofuzz).

Seeds are well-formed MQTT 3.1.1 and 5 packets (CONNECT with the fuzzer's credentials,
PUBLISH QoS 0/1 of a valid event to a camera's events topic, SUBSCRIBE, PINGREQ, DISCONNECT).
Each case opens a connection, sends a CONNECT (mutated one time in four) and one to three
further packets, each mutated with probability 0.7: bit flips, interesting bytes (00 7f 80 ff),
truncation, insertion, chunk duplication, a corrupted Remaining Length, or a JSON-level change
of the event payload (so well-framed garbage reaches the bridge and its dead-letter path).
Every ``probe_every`` cases a clean CONNECT + PINGREQ must get CONNACK + PINGRESP within
``probe_timeout_s``; otherwise the broker counts as hung. Same seed, same cases.
"""

from __future__ import annotations

import dataclasses
import json
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.chaos.stream import ScriptedStream
from pipeline.operators.schema import encode_event

INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect(client_id: str, user: str | None, password: str | None, *, v5: bool, keepalive: int = 30) -> bytes:
    flags = 0x02 | (0x80 if user else 0) | (0x40 if password else 0)
    body = _str("MQTT") + bytes([5 if v5 else 4, flags]) + struct.pack("!H", keepalive)
    if v5:
        body += _varint(0)
    body += _str(client_id)
    if user:
        body += _str(user)
    if password:
        body += _str(password)
    return packet(0x10, body)


def publish(topic: str, payload: bytes, *, qos: int, mid: int, v5: bool) -> bytes:
    body = _str(topic) + (struct.pack("!H", mid) if qos else b"") + (_varint(0) if v5 else b"") + payload
    return packet(0x30 | (qos << 1), body)


def subscribe(topic: str, mid: int, *, v5: bool) -> bytes:
    return packet(0x82, struct.pack("!H", mid) + (_varint(0) if v5 else b"") + _str(topic) + b"\x01")


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


@dataclass
class FuzzTarget:
    host: str
    port: int
    user: str | None
    password: str | None
    events_topic: Callable[[str], str]  # cam -> topic
    site: str
    cams: tuple[str, ...] = ("cam-1", "cam-2")


@dataclass
class FuzzReport:
    cases: int = 0
    seed: int = 0
    sent_bytes: int = 0
    refused_connections: int = 0  # the broker closed the connection on us (malformed input)
    probes: int = 0
    probe_failures: int = 0  # the broker did not answer a clean CONNECT + PINGREQ in time
    wall_s: float = 0.0
    kinds: dict[str, int] = field(default_factory=dict)


class MqttFuzzer:
    def __init__(self, target: FuzzTarget, seed: int = 1, *, base_ts: int | None = None) -> None:
        """``base_ts``: event time of the first seed event (default: now, so events pass the bridge's
        age check); give one to get byte-identical cases from two fuzzers with the same seed."""
        self.t = target
        self.rng = random.Random(seed)  # noqa: S311 (reproducible fuzzing, not crypto)
        self.seed = seed
        stream = ScriptedStream(10_000, site=target.site, cams=target.cams, tag=f"fuzz{seed}")
        self.stream = stream if base_ts is None else dataclasses.replace(stream, base_ts=base_ts)

    # ------------------------------------------------------------------ mutations

    def _mutate_bytes(self, data: bytes) -> tuple[bytes, str]:
        r, b = self.rng, bytearray(data)
        kind = r.choice(("bitflip", "interesting", "truncate", "insert", "duplicate", "length"))
        if kind == "bitflip":
            for _ in range(r.randint(1, 4)):
                i = r.randrange(len(b))
                b[i] ^= 1 << r.randrange(8)
        elif kind == "interesting":
            for _ in range(r.randint(1, 3)):
                b[r.randrange(len(b))] = r.choice(INTERESTING)
        elif kind == "truncate":
            b = b[: r.randrange(1, max(2, len(b)))]
        elif kind == "insert":
            i = r.randrange(len(b) + 1)
            b[i:i] = r.randbytes(r.randint(1, 16))
        elif kind == "duplicate":
            i = r.randrange(len(b))
            j = min(len(b), i + r.randint(1, 32))
            b[j:j] = b[i:j] * r.randint(1, 4)
        else:  # corrupt Remaining Length: a wild varint, possibly claiming far more than we send
            wild = r.choice((0, 1, 127, 128, 16383, 2_097_151, 268_435_455, r.randrange(1 << 28)))
            b = bytearray(b[:1] + _varint(wild) + b[1 + _len_of_varint(b, 1) :])
        return bytes(b), kind

    def _payload(self) -> tuple[bytes, str]:
        r = self.rng
        ev = self.stream.event(r.randrange(self.stream.n))
        raw = encode_event(ev)
        if r.random() < 0.4:
            return raw, "valid-event"
        obj = json.loads(raw)
        kind = r.choice(("drop-key", "extra-key", "wrong-type", "nan", "huge", "bytes", "nested"))
        if kind == "drop-key":
            obj.pop(r.choice(sorted(obj)))
        elif kind == "extra-key":
            obj["x" * r.randint(1, 40)] = r.random()
        elif kind == "wrong-type":
            obj[r.choice(sorted(obj))] = r.choice([None, [], {}, "", -1, 1e308, True])
        elif kind == "nan":
            return raw.replace(b'"score":0.9', b'"score":NaN').replace(b'"score":0.3', b'"score":1e999'), kind
        elif kind == "huge":
            return raw + b" " * r.randint(70_000, 200_000), kind
        elif kind == "bytes":
            return r.randbytes(r.randint(0, 300)), kind
        else:
            return b"[" * 5000 + b"]" * 5000, kind
        return json.dumps(obj).encode(), kind

    def _case(self) -> tuple[list[bytes], list[str]]:
        r, v5 = self.rng, self.rng.random() < 0.5
        kinds = ["v5" if v5 else "v311"]
        first = connect(f"fuzz-{r.randrange(1 << 30):x}", self.t.user, self.t.password, v5=v5)
        if r.random() < 0.25:
            first, k = self._mutate_bytes(first)
            kinds.append(f"connect-{k}")
        pkts = [first]
        for _ in range(r.randint(1, 3)):
            choice = r.random()
            if choice < 0.6:
                payload, k = self._payload()
                kinds.append(f"payload-{k}")
                cam = r.choice(self.t.cams)
                p = publish(self.t.events_topic(cam), payload, qos=r.choice((0, 1)), mid=r.randint(1, 65535), v5=v5)
            elif choice < 0.8:
                p = subscribe(r.choice(("#", "+/+/+/events", "$SYS/#", self.t.events_topic("cam-1"))),
                              r.randint(1, 65535), v5=v5)  # fmt: skip
            else:
                p = r.choice((PINGREQ, DISCONNECT, bytes([r.randrange(256)]) + b"\x00"))
            if r.random() < 0.7:
                p, k = self._mutate_bytes(p)
                kinds.append(f"packet-{k}")
            pkts.append(p)
        return pkts, kinds

    # ------------------------------------------------------------------ driving

    def probe(self, timeout_s: float = 10.0) -> bool:
        """A clean CONNECT + PINGREQ gets CONNACK (accepted) and PINGRESP."""
        try:
            with socket.create_connection((self.t.host, self.t.port), timeout=timeout_s) as s:
                s.sendall(connect(f"probe-{self.rng.randrange(1 << 30):x}", self.t.user, self.t.password, v5=False))
                s.sendall(PINGREQ)
                got = b""
                deadline = time.monotonic() + timeout_s
                while len(got) < 6 and time.monotonic() < deadline:
                    chunk = s.recv(64)
                    if not chunk:
                        break
                    got += chunk
                return got[:2] == b"\x20\x02" and got[3] == 0 and got[4:6] == b"\xd0\x00"
        except OSError:
            return False

    def run(self, cases: int, *, probe_every: int = 500, read_s: float = 0.005) -> FuzzReport:
        rep = FuzzReport(seed=self.seed)
        began = time.monotonic()
        for i in range(cases):
            pkts, kinds = self._case()
            for k in kinds:
                rep.kinds[k] = rep.kinds.get(k, 0) + 1
            try:
                with socket.create_connection((self.t.host, self.t.port), timeout=2) as s:
                    s.settimeout(read_s)
                    for p in pkts:
                        s.sendall(p)
                        rep.sent_bytes += len(p)
                    try:
                        while s.recv(4096):
                            pass
                        rep.refused_connections += 1  # closed by the broker
                    except TimeoutError:
                        pass
            except OSError:
                rep.refused_connections += 1
            rep.cases += 1
            if (i + 1) % probe_every == 0:
                rep.probes += 1
                rep.probe_failures += 0 if self.probe() else 1
        rep.probes += 1
        rep.probe_failures += 0 if self.probe() else 1
        rep.wall_s = round(time.monotonic() - began, 1)
        return rep


def _len_of_varint(b: bytes | bytearray, start: int) -> int:
    n = 0
    for i in range(start, min(len(b), start + 4)):
        n += 1
        if not b[i] & 0x80:
            break
    return n
