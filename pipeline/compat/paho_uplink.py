"""paho-mqtt internals we depend on: the uplink's MQTT client with a lean receive path, and the
length of a client's outgoing queue (chaos measurements).

Verified on paho-mqtt 2.2.0 (:data:`PAHO`); on any other version the uplink uses paho's plain
client (:func:`uplink_client_class`) and :func:`queued_publishes` answers None. The private
names used are listed in :data:`PRIVATE_SYMBOLS` (checked by ``tests/compat``). Removable when
paho reads more than one packet per ``select``, decodes PUBLISH without building a Properties
object per message, and batches PUBACKs; none of that is planned upstream (2.2.0), so the fence
stays as long as the bridge's throughput matters (benchmarks/RESULTS.md, bridge).

Profiled under the bridge benchmark, paho's network thread was the uplink's supply limit: per
event message it ran ``select`` once and ``recv`` four times (command byte, two length bytes,
body; each a system call that gives up the GIL, to three other busy threads), then built an MQTT
5 ``Properties`` object (27 name rewrites and ``hasattr`` calls even when the packet carries no
property), an ``MQTTMessage`` with its own ``threading.Condition``, and matched the topic against
per-topic callbacks we do not use: ~40 us of Python per message before our callback ran.

:class:`UplinkMqttClient` changes three things, all on paho's own network thread:

- reads: the first ``recv`` of a ``loop_read`` takes up to :data:`READ_CHUNK` bytes, and the
  packets already in that buffer are handled before ``loop_read`` returns (paho handles one
  packet per ``select``). A packet that straddles the end of the buffer is completed with paho's
  exact-size reads, so the buffer is always empty when ``loop_read`` returns and ``select`` stays
  truthful about what is left to read.
- PUBLISH: QoS 0/1 packets without properties (what Mosquitto sends the bridge: no topic alias,
  the edge sets no properties) are decoded by slicing and handed to :attr:`on_event` as
  ``(mid, qos, dup, topic, payload)``. Anything else (QoS 2, properties, a topic that is not
  UTF-8, no ``on_event``) takes paho's own path and ends in ``on_message``.
- backpressure: while :attr:`read_paused` says so, ``loop_read`` reads nothing and sleeps
  :data:`PAUSE_S`, so TCP holds the broker back. Mosquitto 2.0.11 was measured with more
  unacknowledged QoS 1 messages out to one client than the Receive Maximum it announced (1.5x
  to plain paho, 3.8x to this client, acks every 20 ms; none lost, none repeated), so the
  uplink pauses reading above its window instead of trusting the broker to.

- PUBACKs: ``ack`` queues the 4-byte packet and wakes paho's loop only when the out-queue was
  empty (paho writes a wake-up byte to its socket pair for every packet queued: one system call
  per message from kafka-python's I/O thread), and the loop writes a run of queued PUBACKs with
  one ``send`` instead of one each.

These override private paho methods: used only as a subclass made by ``make_client`` (no class
swapping), and only on the paho version they were written against.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from pipeline.compat.versions import Fence

if TYPE_CHECKING:
    from paho.mqtt.client import _OutPacket

log = logging.getLogger(__name__)

PAHO = Fence(
    "paho-mqtt", frozenset({"2.2.0"}), "fallback", "UplinkMqttClient overrides _sock_recv, _sock_close, "
    "_packet_write, _handle_publish and loop_read; reads _out_packet, _out_messages, _in_packet",
    "paho reads several packets per select and batches PUBACKs",
)  # fmt: skip
PAHO_VERSION = "2.2.0"  # kept for readers of the old name: the version the fence was verified on
READ_CHUNK = 64 * 1024  # one recv; ~250 event messages
PAUSE_S = 0.005  # while paused: a select on a readable socket returns at once, so sleep
PUBACK_RUN_MAX = 4096  # PUBACKs joined into one send (16 KiB)
_PUBACK = struct.Struct("!BBH")  # fixed header 0x40, remaining length 2, packet id

# (mid, qos, dup, topic, payload)
EventHandler = Callable[[int, int, bool, str, bytes], None]


class UplinkMqttClient(mqtt.Client):
    """paho's client with the lean receive path above (made by ``make_client(client_class=...)``;
    set :attr:`on_event` and :attr:`read_paused` before connecting)."""

    on_event: EventHandler | None = None
    read_paused: Callable[[], bool] | None = None
    _rbuf: bytes = b""
    _rpos: int = 0
    _chunk_read_allowed: bool = False

    # ---------------------------------------------------------------- reads

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        paused = self.read_paused
        if paused is not None and paused():
            time.sleep(PAUSE_S)
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        self._chunk_read_allowed = True
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and self._rpos < len(self._rbuf):
            rc = super().loop_read(max_packets)
        self._chunk_read_allowed = False
        return rc

    def _sock_recv(self, bufsize: int) -> bytes:
        have = len(self._rbuf) - self._rpos
        if have > 0:
            n = min(have, bufsize)
            out = self._rbuf[self._rpos : self._rpos + n]
            self._rpos += n
            return out
        if not self._chunk_read_allowed:
            return super()._sock_recv(bufsize)  # finish a straddling packet with exact reads
        self._chunk_read_allowed = False
        data = super()._sock_recv(max(bufsize, READ_CHUNK))
        if len(data) <= bufsize:
            self._rbuf, self._rpos = b"", 0
            return data
        self._rbuf, self._rpos = data, bufsize
        return data[:bufsize]

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0  # bytes of a closed connection never reach the next one
        super()._sock_close()

    # ---------------------------------------------------------------- PUBACK

    def ack(self, mid: int, qos: int) -> MQTTErrorCode:
        pair = self._sockpairW
        if qos != 1 or not self._manual_ack or self._thread is None or pair is None:
            return super().ack(mid, qos)
        out = self._out_packet
        out.append({"command": mqtt.PUBACK, "mid": mid, "qos": 1, "pos": 0, "to_process": 4,
                    "packet": _PUBACK.pack(mqtt.PUBACK, 2, mid), "info": None})  # fmt: skip
        # paho's loop puts its socket in select's write list whenever the queue is not empty,
        # and _packet_write drains the queue to empty: only a queue that was empty (this packet
        # is its only one) may find the loop asleep without it.
        if len(out) == 1:
            with contextlib.suppress(BlockingIOError):  # the pair is full of wake-ups already
                pair.send(mqtt.sockpair_data)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _packet_write(self) -> MQTTErrorCode:
        out = self._out_packet
        if len(out) > 1 and out[0]["command"] == mqtt.PUBACK and out[0]["pos"] == 0:
            # Only this (the loop) thread takes from the left; others only append on the right.
            run: list[_OutPacket] = []
            while out and len(run) < PUBACK_RUN_MAX and out[0]["command"] == mqtt.PUBACK and out[0]["pos"] == 0:
                run.append(out.popleft())
            if len(run) == 1:
                out.appendleft(run[0])
            else:
                joined = b"".join(p["packet"] for p in run)
                out.appendleft({"command": mqtt.PUBACK, "mid": run[-1]["mid"], "qos": 1, "pos": 0,
                                "to_process": len(joined), "packet": joined, "info": None})  # fmt: skip
        return super()._packet_write()

    # ---------------------------------------------------------------- PUBLISH

    def _handle_publish(self) -> MQTTErrorCode:
        handler = self.on_event
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if handler is None or qos > 1 or (qos == 1 and not self._manual_ack) or self._protocol != mqtt.MQTTv5:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        # Variable header: topic (2-byte length + UTF-8), packet id (QoS > 0), property length
        # (variable byte integer) and properties; the rest is the payload.
        n = len(packet)
        if n < 3:
            return super()._handle_publish()  # malformed: paho reports it
        end = 2 + ((packet[0] << 8) | packet[1])
        mid = 0
        if qos:
            if end + 3 > n:
                return super()._handle_publish()
            mid = (packet[end] << 8) | packet[end + 1]
            pos = end + 2
        else:
            pos = end
        if pos >= n or packet[pos] != 0 or end == 2:
            return super()._handle_publish()  # properties (e.g. a topic alias) or no topic
        try:
            topic = packet[2:end].decode("utf-8")
        except UnicodeDecodeError:
            return super()._handle_publish()
        payload = bytes(packet[pos + 1 :])
        try:
            handler(mid, qos, bool(header & 0x08), topic, payload)
        except Exception as err:  # as paho's _handle_on_message does for on_message
            self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_event: %s", err)
            if not self.suppress_exceptions:
                raise
        return MQTTErrorCode.MQTT_ERR_SUCCESS


# Private names used here, checked by tests/compat: methods on the class, attributes on an instance.
PRIVATE_SYMBOLS: tuple[tuple[Any, str], ...] = tuple(
    (mqtt.Client, name) for name in ("_sock_recv", "_sock_close", "_packet_write", "_handle_publish", "_easy_log")
)
PRIVATE_INSTANCE_ATTRIBUTES: tuple[str, ...] = (
    "_out_packet", "_out_messages", "_in_packet", "_sockpairW", "_manual_ack", "_thread", "_protocol", "_sock",
)  # fmt: skip


def uplink_client_class() -> type[mqtt.Client]:
    """:class:`UplinkMqttClient` on the verified paho, else paho's own client (logged once per call)."""
    return UplinkMqttClient if PAHO.ok() else mqtt.Client


def configure_uplink(client: mqtt.Client, on_event: EventHandler, read_paused: Callable[[], bool]) -> None:
    """Hook the lean path up; a plain client (another paho) gives every message to ``on_message``."""
    if isinstance(client, UplinkMqttClient):
        client.on_event = on_event
        client.read_paused = read_paused


def queued_publishes(client: mqtt.Client) -> int | None:
    """How many publishes paho holds for ``client`` (in flight or queued); None on an unverified paho."""
    if PAHO.installed() not in PAHO.verified:
        return None
    return len(client._out_messages)
