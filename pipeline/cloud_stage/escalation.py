"""Which events go to the heavy model (the cloud's second opinion).

Policies (``cloud.escalation``, overridable per camera and label with
``cloud.escalation_overrides``):

- ``always``: every event that carries a crop;
- ``low_confidence``: events whose edge score is below ``cloud.escalation_low_confidence``;
- ``track_started``: the events the edge attaches a crop to: the first of each track and, at
  most ``edge.cameras[].crop_refreshes`` times, a later one with a clearly better view (attrs
  ``view=better``; its verdict replaces the track's, see ``pipeline.operators.track_events``);
- ``never``: the edge score alone decides.

Only events with a crop can be escalated: the cloud never sees video, only the small JPEG the
edge attached. Others are ``not_escalated`` and use the verdict remembered for their track.
"""

from __future__ import annotations

from pipeline.operators.schema import Event
from pipeline.settings import CloudSettings, Escalation


def policy_for(settings: CloudSettings, cam: str, label: str) -> Escalation:
    """The escalation policy of one camera and label: the most specific override wins."""
    overrides = settings.escalation_overrides
    for key in (f"{cam}/{label}", f"{cam}/*", f"*/{label}"):
        if key in overrides:
            return overrides[key]
    return settings.escalation


def should_escalate(event: Event, policy: Escalation, low_confidence: float) -> bool:
    """True when this event's crop should be checked by the heavy model."""
    if event.crop is None or policy == "never":
        return False
    if policy == "always":
        return True
    if policy == "low_confidence":
        return event.score < low_confidence
    return event.type == "track_started" or event.attrs.get("view") == "better"
