"""paho-mqtt clients for the bridge: MQTT 5, auth/TLS from settings, PUBACK tracking.

paho runs callbacks on its network thread. :class:`PubackTracker` records PUBACKs there and lets
another thread wait for them. It never holds its lock while calling into paho: paho calls
``on_publish`` with its own out-message lock held, so the reverse order would deadlock.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from pipeline.settings import MqttSettings

OUTGOING_INFLIGHT = 200  # our QoS 1 publishes awaiting PUBACK (paho's window)
OUTGOING_QUEUE = 20_000  # publishes paho keeps while disconnected; beyond, publish() fails


def make_client(settings: MqttSettings, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.tls_ca_file:
        client.tls_set(ca_certs=str(settings.tls_ca_file))
        client.tls_insecure_set(settings.tls_insecure)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.max_inflight_messages_set(OUTGOING_INFLIGHT)
    client.max_queued_messages_set(OUTGOING_QUEUE)
    return client


def connect_properties(*, session_expiry_s: int | None = None, receive_maximum: int | None = None) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if session_expiry_s is not None:
        props.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        props.ReceiveMaximum = max(1, min(receive_maximum, 65535))
    return props


def failed(reason_code: Any) -> bool:
    return isinstance(reason_code, ReasonCode) and reason_code.is_failure


class PubackTracker:
    """Which of our QoS 1 publishes the broker has acknowledged (hook :meth:`on_publish`)."""

    def __init__(self, keep_s: float = 120.0) -> None:
        self._cond = threading.Condition()
        self._done: dict[int, float] = {}  # mid -> when PUBACK arrived
        # mids whose waiter gave up: their late PUBACK must not mark a later reuse of the mid.
        self._abandoned: set[int] = set()
        self._keep_s = keep_s

    def on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        # A failure reason (e.g. 135 not authorized) is not a delivery: leave it pending.
        if failed(reason_code):
            return
        with self._cond:
            if mid in self._abandoned:
                self._abandoned.discard(mid)
                return
            now = time.monotonic()
            self._done[mid] = now
            if len(self._done) > 70_000:  # mids wrap at 65535; drop stale entries
                self._done = {m: t for m, t in self._done.items() if now - t < self._keep_s}
            self._cond.notify_all()

    def wait(self, mids: set[int], timeout_s: float) -> set[int]:
        """Block until every mid is acknowledged or the timeout; returns those still pending."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                pending = {m for m in mids if m not in self._done}
                remaining = deadline - time.monotonic()
                if not pending or remaining <= 0:
                    for m in mids - pending:
                        del self._done[m]
                    self._abandoned |= pending
                    return pending
                self._cond.wait(min(remaining, 0.5))
