"""paho-mqtt client construction shared by every part (edge, bridge, alert subscribers).

Callback API v2 and MQTT 5 always; TLS and credentials from :class:`MqttSettings`. A persistent
session (``clean_start=False`` plus a session expiry) is what lets the broker keep QoS 1
messages for us while we are away; paho itself keeps its session in memory only.
"""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pipeline.settings import MqttSettings


def make_client(
    cfg: MqttSettings,
    client_id: str,
    *,
    persistent: bool = False,
    receive_maximum: int | None = None,
    manual_ack: bool = False,
    max_queued: int = 10_000,
) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
    if cfg.tls_ca_file:
        client.tls_set(ca_certs=str(cfg.tls_ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.tls_insecure_set(cfg.tls_insecure)
    # Bounded: beyond this paho refuses new publishes instead of growing without limit.
    client.max_queued_messages_set(max_queued)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client._pipeline_persistent = persistent  # type: ignore[attr-defined]
    client._pipeline_receive_maximum = receive_maximum  # type: ignore[attr-defined]
    return client


def connect_properties(cfg: MqttSettings, *, persistent: bool, receive_maximum: int | None) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    if persistent:
        props.SessionExpiryInterval = cfg.session_expiry_s
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return props


def connect(client: mqtt.Client, cfg: MqttSettings, *, blocking: bool = False) -> None:
    """Connect with the session settings given to :func:`make_client` and start the network loop."""
    persistent = bool(getattr(client, "_pipeline_persistent", False))
    props = connect_properties(
        cfg, persistent=persistent, receive_maximum=getattr(client, "_pipeline_receive_maximum", None)
    )
    kwargs = {
        "host": cfg.host,
        "port": cfg.port,
        "keepalive": cfg.keepalive_s,
        "clean_start": not persistent,
        "properties": props,
    }
    if blocking:
        client.connect(**kwargs)
    else:
        client.connect_async(**kwargs)
    client.loop_start()
