"""Create the project's Kafka topics (idempotent).

Tansu auto-creates a topic on the first produce to it, with its own default partition count, so
create ours explicitly, with ``settings.kafka.partitions``, before anything produces.
"""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.errors import BrokerUnavailable, ConfigError
from pipeline.settings import KafkaSettings

log = logging.getLogger(__name__)


def project_topics(kafka: KafkaSettings) -> list[str]:
    return [kafka.events_topic, kafka.alerts_topic, kafka.config_topic, kafka.dead_letter_topic]


def ensure_topics(kafka: KafkaSettings, timeout_s: float = 10.0) -> list[str]:
    """Create the events, alerts, config and dead-letter topics that are missing.

    Returns the names created now. A topic that exists with a different partition count is an
    error: keys would map to other partitions than the ones our consumers expect.
    """
    timeout_ms = int(timeout_s * 1000)
    wanted = project_topics(kafka)
    try:
        admin = KafkaAdminClient(**kafka.client_kwargs(), request_timeout_ms=timeout_ms)
    except (KafkaError, OSError) as exc:
        raise BrokerUnavailable(f"Kafka at {kafka.bootstrap_servers} unreachable: {exc}") from exc
    try:
        existing = set(admin.list_topics())
        created: list[str] = []
        for name in wanted:
            if name in existing:
                continue
            try:
                # One request per topic: a batch fails whole if another creator won one race.
                admin.create_topics([NewTopic(name, kafka.partitions, kafka.replication_factor)], timeout_ms=timeout_ms)
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        _check_partitions(admin, [t for t in wanted if t not in created], kafka.partitions)
    except KafkaError as exc:
        raise BrokerUnavailable(f"creating topics on {kafka.bootstrap_servers} failed: {exc}") from exc
    finally:
        admin.close()
    if created:
        log.info("created Kafka topics %s with %d partitions", created, kafka.partitions)
    return created


def _check_partitions(admin: KafkaAdminClient, names: list[str], partitions: int) -> None:
    if not names:
        return
    described = admin.describe_topics(names)
    for topic in described:
        count = len(topic["partitions"])
        if count != partitions:
            raise ConfigError(
                f"Kafka topic {topic['name']} exists with {count} partitions, settings want {partitions};"
                " delete it or change kafka.partitions"
            )


def main() -> int:
    """``python -m pipeline.local_stack.kafka_topics``: create the topics from PIPELINE_KAFKA__*.

    The kafka-init job of deploy/compose/local-images.yml (Tansu has no kafka-topics.sh); retries
    for ``timeout_s`` because the broker may accept connections before it answers metadata.
    """
    import sys
    import time

    from pipeline.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    kafka = load_settings(None).kafka
    deadline = time.monotonic() + 60.0
    while True:
        try:
            created = ensure_topics(kafka)
        except BrokerUnavailable as exc:
            if time.monotonic() > deadline:
                print(f"kafka_topics: {exc}", file=sys.stderr)
                return 1
            time.sleep(1.0)
            continue
        except ConfigError as exc:
            print(f"kafka_topics: {exc}", file=sys.stderr)
            return 2
        print(f"kafka_topics: {', '.join(project_topics(kafka))} ok ({kafka.partitions} partitions; created {created})")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
