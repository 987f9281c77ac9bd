"""paho-mqtt client construction shared by every part (edge, bridge, alert subscribers, tools).

Callback API v2 and MQTT 5 always; credentials and TLS from :class:`MqttSettings`. A persistent
session (``clean_start=False`` plus a session expiry) is what lets the broker keep QoS 1
messages for us while we are away; paho itself keeps its session in memory only.
"""

from __future__ import annotations

import ssl
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from pipeline.settings import MqttSettings

OUTGOING_INFLIGHT = 200  # our QoS 1 publishes awaiting PUBACK (paho's window)
OUTGOING_QUEUE = 20_000  # publishes paho keeps while disconnected; beyond, publish() fails


def make_client(
    settings: MqttSettings,
    client_id: str,
    *,
    manual_ack: bool = False,
    max_inflight: int = OUTGOING_INFLIGHT,
    max_queued: int = OUTGOING_QUEUE,
    reconnect_max_s: int = 30,
    client_class: type[mqtt.Client] = mqtt.Client,
) -> mqtt.Client:
    """A configured, unconnected client. Bounded: beyond ``max_queued`` paho refuses publishes
    instead of growing without limit."""
    client = client_class(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.tls_ca_file:
        client.tls_set(ca_certs=str(settings.tls_ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.tls_insecure_set(settings.tls_insecure)
    client.reconnect_delay_set(min_delay=1, max_delay=reconnect_max_s)
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(max_queued)
    return client


def connect_properties(
    *, session_expiry_s: int | None = None, receive_maximum: int | None = None, maximum_packet_size: int | None = None
) -> Properties:
    """CONNECT properties. ``maximum_packet_size``: the broker drops (never sends) bigger messages,
    so a client's read buffer is bounded whatever someone publishes to its subscriptions."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if session_expiry_s is not None:
        props.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        props.ReceiveMaximum = max(1, min(receive_maximum, 65535))
    if maximum_packet_size is not None:
        props.MaximumPacketSize = maximum_packet_size
    return props


def paho_keepalive(keepalive_s: int) -> int:
    """The keep-alive to give paho so that a dead link is noticed within ~1.5x ``keepalive_s``.

    paho 2.2 sends PINGREQ after one keep-alive without traffic from the broker and gives up one
    keep-alive after that (checked once a second): ~2x. Three quarters of the setting brings
    that to ~1.5x on the client, and the broker, which allows 1.5x the negotiated value, drops a
    dead client after ~1.1x. Measured through a blackholed veth (docs/faults.md, packet loss)."""
    return max(1, keepalive_s * 3 // 4)


def connect(client: mqtt.Client, settings: MqttSettings, *, persistent: bool = False) -> None:
    """Connect in the background (paho reconnects on its own) and start the network loop.
    ``persistent`` keeps the broker-side session across disconnects."""
    client.connect_async(
        settings.host,
        settings.port,
        keepalive=paho_keepalive(settings.keepalive_s),
        clean_start=not persistent,
        properties=connect_properties(session_expiry_s=settings.session_expiry_s if persistent else None),
    )
    client.loop_start()


def failed(reason_code: Any) -> bool:
    return isinstance(reason_code, ReasonCode) and reason_code.is_failure
