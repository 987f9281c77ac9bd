"""Uplink checks on top of the schema: the event must come from the camera its topic names, and
not from the future. Pure: the caller passes the clock reading."""

from __future__ import annotations

from pipeline.operators.schema import Event, Rejected, decode_event
from pipeline.topics import Kind, Topics


def validate_uplink(
    topic: str,
    raw: bytes,
    *,
    topics: Topics,
    max_bytes: int,
    max_future_skew_s: float,
    now_ms: int,
) -> Event | Rejected:
    """The decoded event, or why it goes to the dead-letter topic.

    Reasons are the schema's (``not_json``, ``unknown_version``, ``too_large``, ...) plus
    ``bad_topic`` (not a per-camera events topic), ``camera_mismatch`` (payload site/cam differ
    from the topic's) and ``future_ts`` (stamped more than ``max_future_skew_s`` ahead).
    """
    parsed = topics.parse_camera(topic)
    if parsed is None or parsed[2] is not Kind.EVENTS:
        return Rejected("bad_topic", topic[:200])
    site, cam, _ = parsed
    event = decode_event(raw, max_bytes)
    if isinstance(event, Rejected):
        return event
    if (event.site, event.cam) != (site, cam):
        return Rejected("camera_mismatch", f"topic {site}/{cam}, payload {event.site}/{event.cam}")
    if event.ts > now_ms + int(max_future_skew_s * 1000):
        return Rejected("future_ts", f"ts {event.ts} is {(event.ts - now_ms) / 1000:.0f} s ahead")
    return event
