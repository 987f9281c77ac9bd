"""kafka-python internals we depend on: a compiled CRC-32C for its record batches, and the
producer's cluster metadata (for the bridge's partition cache).

Verified on kafka-python 3.0.12 with aiokafka 0.14.0 (:data:`KAFKA_PYTHON`); on any other
version both fall back to the public path: kafka-python's own CRC (pure Python when the
``crc32c`` package is absent) and ``send()`` partitioning each record itself
(:func:`producer_cluster` answers None). Removable when kafka-python ships a compiled CRC-32C
and caches key -> partition itself (or the bridge moves to a client that does).

CRC-32C:

Every v2 record batch the producer builds carries a CRC-32C over the whole batch. kafka-python
computes it with the optional ``crc32c`` package when that is installed and otherwise in pure
Python, one table lookup per byte: profiled under the bridge benchmark, that was 13% of the
bridge's CPU (a 64 KiB batch costs ~16 ms, all of it holding the GIL). aiokafka, which
faust-streaming brings into the same ``cloud`` install, ships a compiled CRC-32C; when
kafka-python has no compiled one, :func:`use_compiled_crc32c` points it at aiokafka's, after
checking it against the standard check value. Same checksum, so nothing on the wire changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pipeline.compat.versions import Fence

log = logging.getLogger(__name__)

KAFKA_PYTHON = Fence(
    "kafka-python", frozenset({"3.0.12"}), "fallback",
    "KafkaProducer._metadata read; kafka.record.default_records.calc_crc32c replaced",
    "kafka-python has a compiled CRC-32C and a key -> partition cache",
)  # fmt: skip
AIOKAFKA_CRC = Fence("aiokafka", frozenset({"0.14.0"}), "fallback", "aiokafka.record._crecords.cutil.crc32c_cython",
                     "kafka-python has a compiled CRC-32C")  # fmt: skip

# Private names used here, checked by tests/compat (module or class path, attribute).
PRIVATE_SYMBOLS: tuple[tuple[str, str], ...] = (
    ("aiokafka.record._crecords.cutil", "crc32c_cython"),
    ("kafka.record.default_records", "calc_crc32c"),
    ("kafka.record.util", "calc_crc32c"),
    ("kafka.record.util", "crc32c_c"),
)
PRIVATE_INSTANCE_ATTRIBUTES: tuple[str, ...] = ("_metadata",)  # of a KafkaProducer


def producer_cluster(producer: Any) -> Any | None:
    """The producer's cluster metadata (what ``send()`` reads to partition), or None on an
    unverified kafka-python: the caller then lets ``send()`` partition each record itself."""
    if KAFKA_PYTHON.installed() not in KAFKA_PYTHON.verified:
        return None
    return producer._metadata


# CRC-32C (Castagnoli) of b"123456789": the catalogue check value of the algorithm.
_CHECK_INPUT, _CHECK_VALUE = b"123456789", 0xE3069283


def _compiled() -> Callable[[Any], int] | None:
    try:
        from aiokafka.record._crecords.cutil import crc32c_cython
    except ImportError:  # aiokafka absent, or installed without its extensions
        return None
    if not AIOKAFKA_CRC.ok():
        return None
    fn: Callable[[Any], int] = crc32c_cython
    return fn if fn(memoryview(_CHECK_INPUT)) == _CHECK_VALUE else None


def use_compiled_crc32c() -> str:
    """Make kafka-python's record batches use a compiled CRC-32C; returns which one is in use
    (``crc32c``, ``aiokafka`` or ``python``). Idempotent, process-wide."""
    from kafka.record import default_records, util

    if util.crc32c_c is not None:  # kafka-python found the ``crc32c`` package itself
        return "crc32c"
    if not KAFKA_PYTHON.ok():
        return "python"
    fn = _compiled()
    if fn is None:
        log.warning("kafka-python computes record CRCs in pure Python (no crc32c, no aiokafka extension)")
        return "python"
    # default_records imported the name at import time: replace it there, and in util for others.
    default_records.calc_crc32c = fn
    util.calc_crc32c = fn
    return "aiokafka"
