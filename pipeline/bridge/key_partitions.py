"""Camera key -> partition, as kafka-python's default partitioner computes it, cached.

kafka-python's ``DefaultPartitioner`` runs its pure-Python murmur2 over the key of every record:
profiled under the bridge benchmark, 9% of the bridge's CPU went there, for a handful of
distinct keys (camera ids). :class:`KeyPartitions` computes the same partition once per key
(``murmur2(key) & 0x7fffffff`` modulo the topic's partition count, over the sorted partition
ids, i.e. what the Java client and kafka-python do) and passes it to ``send(partition=...)``,
which then skips the partitioner; nothing else in ``send`` changes.

The cache follows the producer's own metadata: when the topic's partition count changes it is
rebuilt, and while kafka-python has no metadata for the topic yet, :meth:`KeyPartitions.get`
answers None so that ``send`` waits for it and partitions the record itself. Bounded by
:data:`MAX_KEYS` (emptied when full).
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaProducer
from kafka.partitioner.default import murmur2

from pipeline.compat.kafka_python import producer_cluster

MAX_KEYS = 100_000  # distinct cameras per bridge, with room to spare


class KeyPartitions:
    """One topic's key -> partition map (one thread: the uplink worker)."""

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        # The producer's cluster metadata: what send() itself reads (non-blocking lookups).
        self._metadata: Any = producer_cluster(producer)  # None: an unverified kafka-python
        self._topic = topic
        self._count = 0
        self._ids: list[int] = []
        self._by_key: dict[bytes, int] = {}

    def get(self, key: bytes) -> int | None:
        if self._metadata is None:
            return None  # send() partitions the record itself
        partitions = self._metadata.partitions_for_topic(self._topic)
        if not partitions:
            return None  # metadata not there yet: send() waits for it and partitions itself
        if len(partitions) != self._count:  # partitions are only ever added
            self._count, self._ids = len(partitions), sorted(partitions)
            self._by_key.clear()
        partition = self._by_key.get(key)
        if partition is None:
            if len(self._by_key) >= MAX_KEYS:
                self._by_key.clear()
            partition = self._by_key[key] = self._ids[(murmur2(key) & 0x7FFFFFFF) % self._count]
        return partition
