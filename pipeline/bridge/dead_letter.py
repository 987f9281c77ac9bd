"""Dead-letter records: what was refused, why, and (capped) the original bytes.

Value (compact JSON): ``{"v":1,"reason","detail","source":"mqtt|kafka","topic","ts",
"payload_b64","size","truncated"}``; key = the source topic. ``size`` is the original length,
``payload_b64`` holds at most ``cap`` of its bytes.
"""

from __future__ import annotations

import base64
from typing import Literal

from pipeline.operators.schema import encode_json_object

Source = Literal["mqtt", "kafka"]


def dead_letter_value(
    *, reason: str, detail: str, source: Source, topic: str, payload: bytes, now_ms: int, cap: int
) -> bytes:
    kept = payload[:cap]
    return encode_json_object(
        {
            "reason": reason,
            "detail": detail[:500],
            "source": source,
            "topic": topic,
            "ts": now_ms,
            "payload_b64": base64.b64encode(kept).decode("ascii"),
            "size": len(payload),
            "truncated": len(kept) < len(payload),
        }
    )
