"""Parts 3 and 4: the GT frames through the real pipeline, and what the cloud verifier is worth.

The first ``n`` frames of vtest.avi (cut losslessly-enough: MJPG at quality 95) go through the
local stack as a deployment runs it: the edge (this process, file not paced), Mosquitto, ``pipeline
bridge``, Tansu, ``pipeline cloud`` with the heavy model on each track start, and the rules below.
Every event (an MQTT subscriber beside the bridge) and every alert (``<prefix>/alerts``) is kept.

Frame of an event: the edge stamps ``ts = capture start + media time`` and the media time of frame
``i`` is ``i x 100 ms``; the start is not on the wire, so it is recovered as the frame offset that
best aligns the events' boxes with the GT boxes (a search over 0-60 frames; the best offset wins
by a wide margin since people move).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import paho.mqtt.client as mqtt
from scipy.stats import mannwhitneyu

from benchmarks.accuracy.counting import FRAME_MS, LINES, ZONE, DwellAlert, rules
from benchmarks.accuracy.data import GroundTruth
from benchmarks.accuracy.replay import to_px
from benchmarks.harness import Context, bridge_and_cloud, cut_clip
from pipeline.alerts_subscriber import AlertSubscriber
from pipeline.cloud_stage.escalation import should_escalate
from pipeline.cloud_stage.verification import verify_each
from pipeline.edge_stage.runner import run_edge
from pipeline.metrics import Registry
from pipeline.mqtt_client import connect, make_client
from pipeline.operators.schema import Alert, Event, Rejected, decode_event
from pipeline.operators.tracking import iou
from pipeline.settings import Settings
from pipeline.topics import Kind, Topics

CAMERA = "pets"


def write_clip(video: Path, n_frames: int, path: Path) -> Path:
    return cut_clip(path, 0.0, video, frames=n_frames, fourcc="MJPG")


class EventCollector:
    """Every event the edge publishes (a plain QoS 1 subscriber next to the bridge's group)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.events: dict[str, Event] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._topic = Topics(settings.mqtt.topic_prefix).all_cameras(Kind.EVENTS)
        self._client = make_client(settings.mqtt, f"{settings.mqtt.topic_prefix}-acc-events")
        self._client.on_connect = lambda c, *a: c.subscribe(self._topic, qos=1)
        self._client.on_subscribe = lambda *a: self._ready.set()
        self._client.on_message = self._on_message

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        ev = decode_event(bytes(msg.payload))
        if not isinstance(ev, Rejected):
            with self._lock:
                self.events[ev.id] = ev

    def __enter__(self) -> EventCollector:
        connect(self._client, self.settings.mqtt, persistent=False)
        if not self._ready.wait(10):
            raise TimeoutError(f"no SUBACK for {self._topic}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass
class PipelineRun:
    events: list[Event]
    alerts: list[Alert]
    frame_of: dict[str, int]  # event id -> video frame index
    settings: Settings
    offset_quality: float  # mean IoU of events with GT at the chosen alignment
    info: dict[str, Any] = field(default_factory=dict)


def align(events: list[Event], gt: GroundTruth, fps: float) -> tuple[dict[str, int], float]:
    """Frame of each event: the offset (0-60 frames) under which most events overlap a GT box
    (IoU >= 0.5); returns the mapping and the share of events that do under it."""
    t0 = min(e.ts for e in events)
    step = 1000.0 / fps
    best: tuple[float, int] = (-1.0, 0)
    for off in range(0, 61):
        hits = 0
        for e in events:
            i = off + round((e.ts - t0) / step)
            hits += any(iou(to_px(e.box), b) >= 0.5 for _, b in gt.at(i))
        best = max(best, (hits / len(events), off))
    off = best[1]
    return {e.id: off + round((e.ts - t0) / step) for e in events}, best[0]


def track_identities(runp: PipelineRun, gt: GroundTruth) -> dict[int, int]:
    """Each track's GT identity: the one its events' boxes match (IoU >= 0.5) most often."""
    votes: dict[int, Counter[int]] = {}
    for e in runp.events:
        gid = match_gt(e, runp.frame_of[e.id], gt)
        if gid is not None:
            votes.setdefault(e.track, Counter())[gid] += 1
    return {track: c.most_common(1)[0][0] for track, c in votes.items()}


def rule_alerts(runp: PipelineRun, rule: str) -> list[tuple[Event, int]]:
    """(event that fired it, its video frame) of each alert of ``rule``."""
    events = {e.id: e for e in runp.events}
    return [(ev, runp.frame_of[ev.id]) for a in runp.alerts if a.rule == rule and (ev := events.get(a.event_id))]


def alert_people(runp: PipelineRun, gt: GroundTruth, rule: str) -> list[int | None]:
    """The GT person (or None) of each alert of ``rule``.

    An alert is for the GT person its event's box overlaps (IoU >= 0.3) or, when it overlaps none,
    for its track's GT identity over the track's life: the edge sees people walking in at the
    border a few frames before the GT annotates them (3 of 10 presence alerts here come from such
    first frames, on a box the GT does not have yet)."""
    identity = track_identities(runp, gt)
    out: list[int | None] = []
    for ev, frame in rule_alerts(runp, rule):
        gid = match_gt(ev, frame, gt, iou_min=0.3)
        out.append(identity.get(ev.track) if gid is None else gid)
    return out


def dwell_alerts(runp: PipelineRun, gt: GroundTruth, rule: str = "dwell-centre") -> list[DwellAlert]:
    """Each alert of ``rule`` with its time on the file's clock and its affinity with each GT
    identity (:class:`benchmarks.accuracy.counting.DwellAlert`)."""
    identity = track_identities(runp, gt)
    out: list[DwellAlert] = []
    for ev, frame in rule_alerts(runp, rule):
        affinity = {g: o for g, b in gt.at(frame) if (o := iou(to_px(ev.box), b)) > 0}
        if (g := identity.get(ev.track)) is not None:
            affinity[g] = max(affinity.get(g, 0.0), 0.05)
        out.append(DwellAlert(frame * FRAME_MS / 1000, affinity))
    return out


def presence_coverage(runp: PipelineRun, gt: GroundTruth, rule: str = "person-present") -> tuple[int, int]:
    """(GT people a presence alert was raised for, presence alerts on nobody in the GT)."""
    people = alert_people(runp, gt, rule)
    return len({gid for gid in people if gid is not None}), people.count(None)


def run_pipeline(ctx: Context, video: Path, gt: GroundTruth) -> PipelineRun:
    n = gt.last + 1
    clip = write_clip(video, n, ctx.work_dir / f"pets_0_{n - 1}.avi")
    # the edge knows the lines and the zone too, so it reports each side change and each entry or
    # exit as it sees it (cameras[].lines, cameras[].zones)
    camera = {
        "id": CAMERA, "source": str(clip), "realtime": False, "loop": False,
        "lines": list(LINES.values()), "zones": [list(ZONE)],
    }  # fmt: skip
    settings = ctx.fresh_settings(
        "acc",
        edge={"cameras": [camera], "final_ack_wait_s": 20.0},
        cloud={"rules": rules(), "escalation": "track_started"},
    )
    bridge, cloud, run = bridge_and_cloud(settings)
    ctx.log(f"accuracy: {n} GT frames through the local stack (logs in {run})")
    with bridge, cloud, AlertSubscriber(settings, f"{settings.mqtt.topic_prefix}-alerts") as subscriber:
        with EventCollector(settings) as collector:
            summary = run_edge(settings, threading.Event())
            subscriber.wait_quiet(quiet_s=5.0, timeout_s=120.0)
        events = sorted(collector.events.values(), key=lambda e: (e.ts, e.seq))
    alerts = [r.alert for r in subscriber.stats.unique.values()]
    cap = cv2.VideoCapture(str(clip))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    cap.release()
    frame_of, quality = align(events, gt, fps) if events else ({}, 0.0)
    ctx.log(f"   {len(events)} events, {len(alerts)} alerts, {summary.tracks} tracks; {100 * quality:.0f}% on a GT box")
    return PipelineRun(
        events,
        alerts,
        frame_of,
        settings,
        quality,
        {"tracks": summary.tracks, "duplicates": subscriber.stats.duplicates},
    )


def match_gt(event: Event, frame: int, gt: GroundTruth, iou_min: float = 0.5) -> int | None:
    best, gid = iou_min, None
    for g, b in gt.at(frame):
        o = iou(to_px(event.box), b)
        if o >= best:
            best, gid = o, g
    return gid


@dataclass(frozen=True, slots=True)
class Cascade:
    started: int
    true_starts: int
    auc: float | None
    edge_only: tuple[float, float]  # precision, recall (GT identities) of alerts at the rule threshold
    verified: tuple[float, float]
    escalated_share: float
    scores: list[tuple[bool, float, float, float]]  # (true?, edge, cloud, fused)


def cascade_value(runp: PipelineRun, gt: GroundTruth, threshold: float) -> Cascade:
    """Heavy model on every person ``track_started`` crop, scored against the GT (IoU >= 0.5)."""
    starts = [e for e in runp.events if e.type == "track_started" and e.label == "person" and e.crop]
    verdicts = verify_each(runp.settings, starts, Registry("acc"))
    rows: list[tuple[bool, float, float, float]] = []
    hit_ids: dict[str, set[int]] = {"edge": set(), "fused": set()}
    alerted: Counter[str] = Counter()
    tp_alerts: Counter[str] = Counter()
    for e, v in zip(starts, verdicts, strict=True):
        gid = match_gt(e, runp.frame_of[e.id], gt)
        cloud = v.cloud_score if v.cloud_score is not None else 0.0
        rows.append((gid is not None, e.score, cloud, v.fused_score))
        for kind, s in (("edge", e.score), ("fused", v.fused_score)):
            if s >= threshold:
                alerted[kind] += 1
                if gid is not None:
                    tp_alerts[kind] += 1
                    hit_ids[kind].add(gid)
    pos = [r[2] for r in rows if r[0]]
    neg = [r[2] for r in rows if not r[0]]
    auc = float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))) if pos and neg else None
    n_ids = len(gt.ids)

    def pr(kind: str) -> tuple[float, float]:
        return (tp_alerts[kind] / alerted[kind] if alerted[kind] else 0.0, len(hit_ids[kind]) / n_ids)

    policy = runp.settings.cloud.escalation
    low = runp.settings.cloud.escalation_low_confidence
    escalated = sum(1 for e in runp.events if should_escalate(e, policy, low))
    return Cascade(
        len(starts), len(pos), auc, pr("edge"), pr("fused"), escalated / len(runp.events) if runp.events else 0.0, rows
    )
