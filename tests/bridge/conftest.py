"""Fixtures of the bridge tests; helpers live in ``bridge_helpers``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from kafka import KafkaProducer

from pipeline.settings import Settings


@pytest.fixture
def kafka_producer(make_settings: Callable[..., Settings]) -> Iterator[KafkaProducer]:
    settings = make_settings()
    producer = KafkaProducer(**settings.kafka.client_kwargs(), acks="all")
    yield producer
    producer.close()
