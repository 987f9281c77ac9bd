"""The whole path on real parts: sample clip -> edge -> Mosquitto -> bridge -> Tansu (Kafka) ->
Faust worker + TF-Serving-compatible model server -> alerts topic -> bridge -> MQTT subscriber.

The bridge and the cloud worker run as the real commands (``pipeline bridge``, ``pipeline cloud``)
in child processes; the edge runs in-process so its summary can be checked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from pipeline import testing
from pipeline.alerts_subscriber import AlertStats, AlertSubscriber
from pipeline.cloud_stage.escalation import policy_for, should_escalate
from pipeline.cloud_stage.verification import fuse, verify_each
from pipeline.edge_stage.runner import EdgeSummary, run_edge
from pipeline.local_stack.pipeline_service import PipelineService
from pipeline.metrics import Registry
from pipeline.operators.schema import Event, Rejected, decode_event
from pipeline.settings import SAMPLE_CLIP, RuleSettings, Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

CAM = "cam-e2e"
SITE = "site-e2e"
RULE = RuleSettings(id="person-present", kind="presence", labels=["person"], min_score=0.5)


@dataclass
class KafkaRecord:
    key: bytes
    headers: dict[str, bytes]
    event: Event
    partition: int
    offset: int


def read_events_topic(settings: Settings) -> list[KafkaRecord]:
    """Every record of the events topic, from the beginning to the current end."""
    consumer = KafkaConsumer(**settings.kafka.client_kwargs(), enable_auto_commit=False, group_id=None)
    try:
        topic = settings.kafka.events_topic
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        out: list[KafkaRecord] = []
        idle = 0
        while idle < 3:  # Tansu reports end offsets wrongly (see cloud_stage docs): read until quiet
            batch = consumer.poll(timeout_ms=1000)
            idle = 0 if batch else idle + 1
            for records in batch.values():
                for r in records:
                    decoded = decode_event(r.value)
                    assert not isinstance(decoded, Rejected), f"undecodable record in events topic: {decoded}"
                    out.append(KafkaRecord(r.key, dict(r.headers), decoded, r.partition, r.offset))
        return out
    finally:
        consumer.close()


@contextmanager
def cloud_side(settings: Settings, run_dir: Path) -> Iterator[AlertStats]:
    """``pipeline bridge`` + ``pipeline cloud`` as child processes and an alert subscriber."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "settings.yaml"
    config.write_text(settings.to_yaml())
    with ExitStack() as stack:
        stack.enter_context(PipelineService("bridge", run_dir, config, ["bridge"]))
        stack.enter_context(PipelineService("cloud", run_dir, config, ["cloud"], start_timeout_s=180))
        subscriber = stack.enter_context(AlertSubscriber(settings, f"{settings.mqtt.topic_prefix}-subscriber"))
        yield subscriber.stats
        subscriber.wait_quiet(quiet_s=6.0, timeout_s=120.0)


def e2e_settings(make_settings: Callable[..., Settings], tmp_path: Path, escalation: str) -> Settings:
    return make_settings(
        edge={
            "site": SITE,
            # As fast as the detector goes (not paced), so the frames detected do not depend on load.
            "cameras": [{"id": CAM, "source": str(SAMPLE_CLIP), "realtime": False, "detect_fps": 5.0}],
            "final_ack_wait_s": 20.0,
        },
        cloud={"escalation": escalation, "rules": [RULE.model_dump()], "web_enabled": False},
    )


def run_pipeline(settings: Settings, tmp_path: Path) -> tuple[EdgeSummary, AlertStats, list[KafkaRecord]]:
    with cloud_side(settings, tmp_path / "run") as alerts:
        summary = run_edge(settings, threading.Event())
    return summary, alerts, read_events_topic(settings)


def check_transport(summary: EdgeSummary, records: list[KafkaRecord]) -> dict[str, Event]:
    """Every event the edge made is in Kafka once or more, keyed by camera, in seq order per camera."""
    assert summary.events > 10, "the sample clip should produce events"
    assert summary.outbox_depth == 0, "every event was acknowledged by the bridge after Kafka took it"
    by_id: dict[str, Event] = {}
    for rec in records:
        assert rec.key == f"{SITE}/{CAM}".encode()
        assert rec.headers.get("event_id") == rec.event.id.encode()
        by_id[rec.event.id] = rec.event
    assert len(by_id) == summary.events, "each event the edge stored reached Kafka (duplicates allowed)"
    seqs = [r.event.seq for r in sorted(records, key=lambda r: r.offset) if r.partition == records[0].partition]
    first_seen = list(dict.fromkeys(seqs))
    assert first_seen == sorted(first_seen), "one camera's events stay in order in one partition"
    return by_id


def expected_presence_alerts(events: dict[str, Event], fused: Callable[[Event], float]) -> dict[str, str]:
    """alert id -> event id that the presence rule implies (pipeline.testing, shared with tests/compose)."""
    return testing.expected_presence_alerts(events.values(), RULE, fused)


def fused_scores(settings: Settings, events: dict[str, Event]) -> dict[str, float]:
    """event id -> the fused score the worker gives it: the heavy model (the same server, the same
    Verifier) on every crop the escalation policy sends it; later events of a track reuse the
    track's latest verdict; a track with none keeps its edge score."""
    c = settings.cloud
    ordered = sorted(events.values(), key=lambda e: e.seq)
    escalated = [e for e in ordered if should_escalate(e, policy_for(c, e.cam, e.label), c.escalation_low_confidence)]
    verdicts = verify_each(settings, escalated, Registry("e2e"))
    cloud = {e.id: v.cloud_score for e, v in zip(escalated, verdicts, strict=True)}
    assert all(score is not None for score in cloud.values()), "the model server answered every crop"
    verdict_of_track: dict[int, float | None] = {}
    out: dict[str, float] = {}
    for ev in ordered:
        if ev.id in cloud:
            verdict_of_track[ev.track] = cloud[ev.id]
        known = ev.track in verdict_of_track
        out[ev.id] = fuse(ev.score, verdict_of_track[ev.track], settings.cloud.edge_weight) if known else ev.score
    return out


def test_sample_clip_end_to_end_edge_scores_only(
    make_settings: Callable[..., Settings], model_server: object, tmp_path: Path
) -> None:
    """Escalation off: fused score = edge score, so the expected alerts follow from Kafka alone."""
    settings = e2e_settings(make_settings, tmp_path, escalation="never")
    summary, alerts, records = run_pipeline(settings, tmp_path)
    events = check_transport(summary, records)

    expected = expected_presence_alerts(events, fused=lambda e: e.score)
    got = {aid: r.alert for aid, r in alerts.unique.items()}
    assert expected, "people walk through the sample clip: the rule must fire"
    assert set(got) == set(expected), "alert ids are exactly those the rule implies"
    for aid, alert in got.items():
        assert alert.event_id == expected[aid]
        assert alert.event_id in events
        assert alert.verification == "not_escalated" and alert.cloud_score is None
        assert (alert.site, alert.cam, alert.rule) == (SITE, CAM, RULE.id)
        assert alert.fused_score == pytest.approx(events[alert.event_id].score, abs=1e-3)
    assert alerts.rejected == 0


def test_sample_clip_end_to_end_with_heavy_model(
    make_settings: Callable[..., Settings], model_server: object, tmp_path: Path
) -> None:
    """track_started events (with crops) go to the heavy model; alerts carry both scores."""
    settings = e2e_settings(make_settings, tmp_path, escalation="track_started")
    summary, alerts, records = run_pipeline(settings, tmp_path)
    events = check_transport(summary, records)
    started_with_crop = {e.id for e in events.values() if e.type == "track_started" and e.crop}
    assert started_with_crop, "track_started events carry crops for the heavy model"

    got = [r.alert for r in alerts.unique.values()]
    assert got, "people walk through the sample clip: verified alerts must arrive"
    w = settings.cloud.edge_weight
    tracks_alerted = [a.track for a in got]
    assert len(tracks_alerted) == len(set(tracks_alerted)), "one alert per track (presence incident)"
    for alert in got:
        assert alert.event_id in events
        assert alert.verification in ("verified", "contradicted")
        assert alert.cloud_score is not None and alert.model and alert.model.startswith("centernet")
        assert alert.fused_score == pytest.approx(w * alert.edge_score + (1 - w) * alert.cloud_score, abs=2e-3)
        assert alert.fused_score >= RULE.min_score
    # A track's verdict comes from its track_started crop, replaced by a better-view crop's
    # (view=better) from that event on; the model scores those crops the same when asked again, so
    # the alerts are exactly those the presence rule implies with each event's fused score.
    fused = fused_scores(settings, events)
    for alert in got:
        assert alert.fused_score == pytest.approx(fused[alert.event_id], abs=2e-3)
    expected = expected_presence_alerts(events, fused=lambda e: fused[e.id])
    assert {r.alert.id for r in alerts.unique.values()} == set(expected)
