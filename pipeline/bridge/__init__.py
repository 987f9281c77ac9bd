"""MQTT <-> Kafka bridge.

Uplink (``uplink.py``): camera events from MQTT (paho with a lean receive path,
:mod:`pipeline.compat.paho_uplink`), validated (``validation.py``), produced to Kafka (partition per camera
cached, ``key_partitions.py``), acked to MQTT only after Kafka acked; rejects to the dead-letter
topic (``dead_letter.py``); acknowledged seqs back to the edge (``ack_ranges.py``). Downlink
(``downlink.py``): alerts and camera config from Kafka to MQTT. ``service.py`` runs both:
:func:`run_bridge` (with kafka-python on a compiled CRC-32C, :mod:`pipeline.compat.kafka_python`);
``profiling.py`` is ``pipeline bridge --profile``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.bridge.service import Bridge, run_bridge

__all__ = ["Bridge", "run_bridge"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (e.g. for the CLI table) must not need paho or kafka.
    if name in __all__:
        from pipeline.bridge import service

        return getattr(service, name)
    raise AttributeError(name)
