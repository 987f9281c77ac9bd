"""The bridge benchmark's baseline: the obvious MQTT -> Kafka loop.

For each MQTT message (QoS 1, manual ack): one synchronous ``producer.send(...).get()`` with
acks=all, then the MQTT ack. Same delivery guarantee as ``pipeline bridge`` (the message is
acknowledged only once Kafka has it), no validation, no pipelining. Run as a child process:

    python -m benchmarks.naive_bridge --config SETTINGS.yaml

It logs ``naive bridge ready`` and writes its ready file (``pipeline.readiness``) once subscribed,
and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

import paho.mqtt.client as mqtt
from kafka import KafkaProducer

from pipeline.mqtt_client import connect, make_client
from pipeline.readiness import mark_ready
from pipeline.settings import load_settings
from pipeline.topics import Kind, Topics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.naive_bridge", description=__doc__)
    p.add_argument("--config", required=True)
    args = p.parse_args(argv)
    settings = load_settings(args.config)
    producer = KafkaProducer(
        **settings.kafka.client_kwargs(), acks="all", linger_ms=0, max_in_flight_requests_per_connection=1
    )
    topic = settings.kafka.events_topic
    stop = threading.Event()
    subscribed = threading.Event()
    client = make_client(settings.mqtt, f"{settings.mqtt.topic_prefix}-naive", manual_ack=True)
    events = Topics(settings.mqtt.topic_prefix).all_cameras(Kind.EVENTS)
    forwarded = 0

    def on_connect(c: mqtt.Client, *a: Any) -> None:
        c.subscribe(events, qos=1)

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal forwarded
        cam = msg.topic.split("/")[-2]
        producer.send(topic, key=cam.encode(), value=bytes(msg.payload)).get(timeout=30)
        c.ack(msg.mid, msg.qos)
        forwarded += 1

    client.on_connect = on_connect
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *a: stop.set())
    connect(client, settings.mqtt)
    if not subscribed.wait(30):
        print("naive bridge: no SUBACK", flush=True)
        return 1
    print(f"naive bridge ready: {events} -> {topic}", flush=True)
    mark_ready(f"naive bridge {events} -> {topic}")
    stop.wait()
    client.disconnect()
    client.loop_stop()
    producer.flush(timeout=10)
    producer.close(timeout=5)
    print(f"naive bridge stopped: forwarded={forwarded}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
