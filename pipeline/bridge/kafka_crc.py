"""A compiled CRC-32C for kafka-python's record batches.

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

log = logging.getLogger(__name__)

# CRC-32C (Castagnoli) of b"123456789": the catalogue check value of the algorithm.
_CHECK_INPUT, _CHECK_VALUE = b"123456789", 0xE3069283


def _compiled() -> Callable[[Any], int] | None:
    try:
        from aiokafka.record._crecords.cutil import crc32c_cython
    except ImportError:  # aiokafka absent, or installed without its extensions
        return None
    fn: Callable[[Any], int] = crc32c_cython
    return fn if fn(memoryview(_CHECK_INPUT)) == _CHECK_VALUE else None


def use_compiled_crc32c() -> str:
    """Make kafka-python's record batches use a compiled CRC-32C; returns which one is in use
    (``crc32c``, ``aiokafka`` or ``python``). Idempotent, process-wide."""
    from kafka.record import default_records, util

    if util.crc32c_c is not None:  # kafka-python found the ``crc32c`` package itself
        return "crc32c"
    fn = _compiled()
    if fn is None:
        log.warning("kafka-python computes record CRCs in pure Python (no crc32c, no aiokafka extension)")
        return "python"
    # default_records imported the name at import time: replace it there, and in util for others.
    default_records.calc_crc32c = fn
    util.calc_crc32c = fn
    return "aiokafka"
