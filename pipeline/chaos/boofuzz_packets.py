"""The MQTT packets the boofuzz campaign (:mod:`pipeline.chaos.boofuzz_mqtt`) mutates: CONNECT,
PUBLISH (QoS 0/1, to a camera's events topic) and SUBSCRIBE, MQTT 3.1.1 and 5, as boofuzz requests.

Requests use the primitives behind ``s_byte``/``s_word``/``s_size``/``s_string``/``s_bytes``/``s_block``
through boofuzz's object API (``s_initialize`` keeps a process-wide table: a second campaign in one
process would clash). Remaining Length and v5 property lengths are a varint sizer of our own: the
true length unless it is the field being fuzzed, so a mutated string or payload still arrives well
framed and reaches the broker's parsers (and the bridge's); its own mutations are wild, overlong,
unterminated and off-by-one varints. boofuzz walks one field's mutations after another, so a short
campaign would never leave the first fields: our requests interleave an evenly spread sample of
every field's mutations instead (from the string library to the 64 KiB strings).

Separate from the campaign (sessions, watchdog, report) because this is the part that must be
right on the wire, and the unit tests check it without a broker; boofuzz is an optional extra, so
it is imported only when a request is built (:func:`import_boofuzz`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.chaos.mqtt_fuzz import _varint
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


def import_boofuzz() -> Any:
    """The boofuzz module, or a :class:`ConfigError` saying how to install it."""
    try:
        import boofuzz
    except ImportError as exc:
        raise ConfigError(
            "the boofuzz MQTT campaign needs boofuzz: pip install -e '.[dev]' (or run `pipeline chaos --fuzzer own`)"
        ) from exc
    return boofuzz


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
    bf = import_boofuzz()
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
