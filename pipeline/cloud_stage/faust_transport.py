"""A Faust app whose Kafka consumer can wait at most ``cloud.consumer_fetch_max_wait_ms`` in a fetch.

faust-streaming 0.15.3 builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` hard-coded
(``faust/transport/drivers/aiokafka.py``) and offers no setting for it. A broker answers a
fetch early when data arrives, so on Apache Kafka the value mostly does not matter; Tansu 0.6
does not when the fetch covers several partitions (measured here: 483 ms median delivery for 4
partitions vs 2 ms for one, 13 ms with a 100 ms wait), and the worker subscribes to all of the
events topic's partitions plus its changelogs: that was ~500 ms of the capture -> alert latency.

The consumer class is Faust's own; only the wait is replaced, before the consumer starts, and only
when the setting is given (opt-in: see its description in ``pipeline/settings.py``). The consumer
also reports where Faust's post-assignment seek put each partition, for the offset guard.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            # aiokafka reads this attribute when start() builds its Fetcher.
            consumer._fetch_max_wait_ms = int(wait_ms)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def seek_to_committed(self) -> Mapping[Any, int]:
        """Faust's seek after an assignment; tells the app where each partition now resumes."""
        offsets = await super().seek_to_committed()
        for listener in getattr(self.app, "seek_listeners", ()):
            listener(dict(offsets))
        return offsets


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class PipelineFaustApp(faust.App):
    """``faust.App`` with the consumer's fetch wait set from our settings, and seek listeners."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int | None = None, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        # Called with {tp: committed offset} each time Faust seeks its partitions after an
        # assignment (see pipeline/cloud_stage/offset_guard.py).
        self.seek_listeners: list[Callable[[dict[Any, int]], None]] = []
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
