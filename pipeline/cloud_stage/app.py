"""The cloud stage as a Faust app: consume -> escalate -> verify -> rules -> alert.

:func:`build_app` wires one :class:`faust.App` from the settings; :func:`run_worker` runs it
until SIGTERM/SIGINT. Records are taken in small batches (``model_server.max_batch`` within
``model_server.max_wait_ms``) so that the crops of many cameras share one Predict call, while
rules still see each camera's events in order.

State (all changelogged, so a restarted worker recovers it):
- ``seen``: processed event ids (bounded, windowed) - duplicates never touch state;
- ``tracks``: the cloud verdict of each live track (later events of the track reuse it);
- ``rule_state``: per rule and camera (dwell timers, line sides, count windows);
- ``incidents``: the incident ledger (one alert per incident, cooldown).

Per-track entries of tracks whose ``track_ended`` never came are expired after
``cloud.track_state_ttl_s`` of silence (:mod:`~pipeline.cloud_stage.track_expiry`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.types import EventT, StreamT
from faust.worker import Worker

from pipeline.cloud_stage.alerting import IncidentLedger, make_alert
from pipeline.cloud_stage.consume import SeenIndex, dead_letter_record, decode
from pipeline.cloud_stage.diagnostics import install_task_dump
from pipeline.cloud_stage.escalation import policy_for, should_escalate
from pipeline.cloud_stage.inference_client import InferenceClient
from pipeline.cloud_stage.live_rules import LiveRules
from pipeline.cloud_stage.offset_guard import GapReport, OffsetGuard, ProcessedOffsets
from pipeline.cloud_stage.recovery_watchdog import install as install_recovery_watchdog
from pipeline.cloud_stage.rules_engine import RulesEngine, StagedState
from pipeline.cloud_stage.track_expiry import TrackExpiry
from pipeline.cloud_stage.verification import Verdict, Verifier, fuse
from pipeline.compat.faust_app import PipelineFaustApp
from pipeline.compat.faust_app import current_event as event_context
from pipeline.errors import InferenceUnavailable
from pipeline.hard_examples.recorder import HardExampleRecorder
from pipeline.metrics import Registry
from pipeline.operators.rules import camera_key, state_key
from pipeline.operators.schema import Event, Rejected, encode_alert
from pipeline.readiness import mark_ready
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def faust_options(settings: Settings) -> dict[str, Any]:
    k, c = settings.kafka, settings.cloud
    opts: dict[str, Any] = {
        "broker": ";".join(f"kafka://{b.strip()}" for b in k.bootstrap_servers.split(",")),
        "store": "memory://",
        "topic_partitions": k.partitions,
        "topic_replication_factor": k.replication_factor,
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "key_serializer": "raw",
        "value_serializer": "raw",
        "web_enabled": c.web_enabled,
        "web_port": c.web_port,
        "web_bind": c.web_host,
        "web_host": c.web_host,
        "datadir": str(c.data_dir),
        "autodiscover": False,
        "producer_acks": -1,
        "broker_commit_interval": 1.0,
    }
    if c.single_record_batches:  # see CloudSettings.single_record_batches (Tansu ListOffsets)
        opts["producer_max_batch_size"] = 1
    if k.security_protocol != "PLAINTEXT":
        opts["broker_credentials"] = _credentials(settings)
    if k.fast_group_join:  # docs/dependencies.md: worker ready in ~4 s instead of ~30 s
        opts.update(
            broker_session_timeout=6.0,
            broker_heartbeat_interval=1.0,
            broker_rebalance_timeout=6.0,
            broker_max_poll_interval=10.0,
        )
    return opts


def _credentials(settings: Settings) -> Any:
    k = settings.kafka
    ssl_context = None
    if k.ssl_cafile or k.security_protocol.endswith("SSL"):
        import ssl

        ssl_context = ssl.create_default_context(cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
    if k.sasl_mechanism:
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value() if k.sasl_password else None,
            mechanism=k.sasl_mechanism,
            ssl_context=ssl_context,
        )
    return faust.SSLCredentials(ssl_context)


class CloudProcessor:
    """Handles one batch of Kafka events; holds the tables and the verifier."""

    def __init__(self, app: faust.App, settings: Settings, metrics: Registry) -> None:
        self.settings = settings
        self.metrics = metrics
        k, c = settings.kafka, settings.cloud
        self.events_topic = app.topic(k.events_topic, key_type=bytes, value_type=bytes)
        self.alerts_topic = app.topic(k.alerts_topic, key_type=bytes, value_type=bytes)
        self.dlq_topic = app.topic(k.dead_letter_topic, key_type=bytes, value_type=bytes)

        def table(name: str, help: str) -> Any:
            return app.Table(name, default=None, key_type=str, help=help)

        self.seen_table = table("seen", "Processed event ids -> first seen (ms).")
        # cam = site/cam (camera_key): camera ids are unique within a site only
        self.tracks = table("tracks", "cam|track -> cloud verdict of the track.")
        self.rule_state = table("rule_state", "rule|cam|track (or zone) -> rule state.")
        self.incidents = table("incidents", "rule|cam|incident -> alert ledger entry.")
        self.seen = SeenIndex(self.seen_table, c.dedupe_window_s, c.dedupe_max_per_camera, metrics)
        self.live_rules = LiveRules(settings, metrics)
        self.rules = RulesEngine(
            list(c.rules), live=self.live_rules.for_camera, link_window_ms=round(c.link_window_s * 1000)
        )
        self.ledger = IncidentLedger(self.incidents)
        self.expiry = TrackExpiry(
            self.rule_state, self.tracks, [self.rule_state, self.incidents],
            lambda cam, track: [state_key(spec, cam, track) for spec in self.rules.specs_for(cam)
                                if spec.kind != "count"],  # count: camera-wide
            c.track_state_ttl_s, metrics,
        )  # fmt: skip
        self.verifier = Verifier(settings, metrics)
        self.guard = OffsetGuard(c.offset_max_rewinds, c.offset_stall_s)
        # The commit gate (pipeline.compat.faust_app.CommitGate): Kafka offsets are committed
        # up to what handle() finished, never up to what Faust acknowledged (finding 10).
        self.processed = ProcessedOffsets(frozenset({k.events_topic}))
        # app.consumer is created lazily by Faust: look it up when seeking, not now.
        self.seek: Callable[[Any, int], Awaitable[None]] = lambda tp, offset: app.consumer.seek(tp, offset)
        self.busy = False
        he = settings.hard_examples
        self.hard_examples = HardExampleRecorder(he, metrics) if he.enabled else None

    async def handle(self, events: list[EventT[Any]]) -> None:
        """One batch from ``take_events``: records past a gap are skipped and their partition
        rewound (:mod:`pipeline.cloud_stage.offset_guard`); the rest is processed."""
        self.busy = True
        try:
            report = GapReport()
            live = [fe for fe in events if self.guard.decide(fe.message.tp, fe.message.offset, report) == "process"]
            await self._rewind(report.rewind_to, "gap")
            for tp, first, seen in report.accepted:
                log.error("events %s: offsets %d..%d never arrived after %d rewinds; going on without them",
                          tp, first, seen - 1, self.guard.max_rewinds)  # fmt: skip
                self.metrics.inc("cloud_offset_gaps_accepted_total", help="Offset gaps given up on.")
            # Where the guard stands after deciding: all records below were handed to _handle
            # in this batch or in earlier ones (which finished: one agent, batches in order).
            marks = {fe.message.tp: self.guard.expected(fe.message.tp) for fe in live}
            epoch = self.processed.epoch
            try:
                await self._handle(live)
            except Exception:
                await self._redo(live)
                raise
            self.processed.finished(marks, epoch)
            for tp in marks:
                self.guard.progressed(tp)
        finally:
            self.busy = False

    def reset(self) -> None:
        """Partitions were (re)assigned: forget per-partition progress."""
        self.processed.reset()
        self.guard.reset()

    async def _redo(self, live: list[EventT[Any]]) -> None:
        # The batch failed as a whole (Faust acks it anyway, take_events' finally): rewind each
        # partition to its first record here, so it is processed again and never committed past.
        first: dict[Any, int] = {}
        for fe in live:
            tp, off = fe.message.tp, fe.message.offset
            first[tp] = min(off, first.get(tp, off))
        for tp, offset in first.items():
            if (self.guard.expected(tp) or 0) > offset:
                self.guard.restart_at(tp, offset)
                await self._rewind({tp: offset}, "failed batch")

    async def _rewind(self, targets: dict[Any, int], reason: str) -> None:
        for tp, offset in targets.items():
            log.warning("events %s: rewinding to offset %d (%s: records from there did not reach the worker)",
                        tp, offset, reason)  # fmt: skip
            self.metrics.inc("cloud_offset_rewinds_total", help="Partitions sought back to a missed offset.",
                             reason=reason)  # fmt: skip
            await self.seek(tp, offset)
            self.guard.rewound(tp)

    async def check_stalls(self, assignment: set[Any], highwater: Callable[[Any], int | None]) -> None:
        """Rewind partitions with records waiting in Kafka that delivered nothing for a while."""
        if self.busy:  # a long batch (a held model call) is not a stall
            return
        topic = self.settings.kafka.events_topic
        highwaters: dict[Any, int | None] = {}
        for tp in assignment:
            if tp.topic == topic:
                try:
                    highwaters[tp] = highwater(tp)
                except Exception:  # not fetched yet, or revoked meanwhile
                    highwaters[tp] = None
        await self._rewind(self.guard.stalled(highwaters), "stall")

    async def _handle(self, events: list[EventT[Any]]) -> None:
        m = self.metrics
        accepted: list[tuple[EventT[Any], Event]] = []
        in_batch: set[str] = set()
        for fe in events:
            m.inc("cloud_events_total", help="Records taken from the events topic.")
            ev = decode(fe.value)
            if isinstance(ev, Rejected):
                await self._dead_letter(ev, fe.value)
                continue
            key = SeenIndex.key(ev)
            with event_context(fe):
                dup = key in in_batch or self.seen.seen(ev)
            if dup:
                m.inc("cloud_events_duplicate_total", help="Events dropped as already processed.")
                continue
            in_batch.add(key)
            accepted.append((fe, ev))
        if not accepted:
            return
        c = self.settings.cloud
        escalate = [
            should_escalate(ev, policy_for(c, ev.cam, ev.label), c.escalation_low_confidence) for _, ev in accepted
        ]
        verdicts: dict[int, Verdict] = {}
        jobs = {i: self.verifier.verify(ev) for i, (_, ev) in enumerate(accepted) if escalate[i]}
        if jobs:
            m.inc("cloud_events_escalated_total", len(jobs), help="Events sent to the heavy model.")
            results = await asyncio.gather(*jobs.values(), return_exceptions=True)
            for i, res in zip(jobs, results, strict=True):
                if isinstance(res, BaseException):  # a bug, not an outage: keep the stream going
                    log.error("verification of %s failed: %r", accepted[i][1].id, res)
                    res = Verdict(None, accepted[i][1].score, "unverified", detail="verification error")
                verdicts[i] = res
        if self.hard_examples is not None:
            for i, verdict in verdicts.items():
                try:
                    self.hard_examples.consider(accepted[i][1], verdict)
                except Exception:  # learning data must never stop alerting
                    log.exception("hard example of %s failed", accepted[i][1].id)
        for i, (fe, ev) in enumerate(accepted):
            with event_context(fe):
                try:
                    await self._process(ev, verdicts.get(i))
                except Exception as exc:  # one bad event must not stop the stream
                    log.exception("event %s failed", ev.id)
                    await self._dead_letter(Rejected("processing_error", repr(exc)[:300]), fe.value)

    async def _process(self, ev: Event, verdict: Verdict | None) -> None:
        c = self.settings.cloud
        cam = camera_key(ev.site, ev.cam)
        track_key = f"{cam}|{ev.track}"
        fresh = verdict is not None
        if verdict is None:
            known = self.tracks.get(track_key)
            if known:
                cloud = known.get("cloud")
                verdict = Verdict(cloud, fuse(ev.score, cloud, c.edge_weight), known["verification"],
                                  known.get("model"))  # fmt: skip
            else:
                verdict = Verdict(None, ev.score, "not_escalated")
        state = StagedState(self.rule_state)
        for firing in self.rules.apply(ev, verdict.fused_score, state):
            opened_ms, key, entry = self.ledger.decide(firing, ev)
            if opened_ms is not None:
                alert = make_alert(firing, ev, verdict, opened_ms)
                fut = await self.alerts_topic.send(key=cam.encode(), value=encode_alert(alert))
                await fut  # acknowledged before the ledger says "alerted" (no lost alert on crash)
                self.metrics.inc("cloud_alerts_total", help="Alerts produced.", rule=firing.rule.id,
                                 verification=alert.verification)  # fmt: skip
                if ev.ts:
                    self.metrics.observe("cloud_alert_latency_seconds", time.time() - ev.ts / 1000)
                log.info("alert %s rule=%s cam=%s track=%s %s fused=%.2f", alert.id, alert.rule, ev.cam,
                         ev.track, alert.verification, alert.fused_score)  # fmt: skip
            self.ledger.commit(key, entry)
        state.commit()
        for expired_cam, person in self.rules.expired:
            self.ledger.forget(self.rules.specs_for(expired_cam), expired_cam, person)
        if ev.type == "track_ended":
            if track_key in self.tracks:
                del self.tracks[track_key]
        elif fresh:  # remember the heavy model's verdict for the track's later events
            self.tracks[track_key] = {
                "cloud": verdict.cloud_score, "verification": verdict.verification, "model": verdict.model,
            }  # fmt: skip
        self.expiry.touch(cam, ev.track, ev.ts, ended=ev.type == "track_ended")
        self.seen.add(ev, int(time.time() * 1000))

    async def _dead_letter(self, rejected: Rejected, raw: Any) -> None:
        topic = self.settings.kafka.events_topic
        self.metrics.inc("cloud_events_rejected_total", help="Records dead-lettered.", reason=rejected.reason)
        log.warning("dead-letter: %s %s", rejected.reason, rejected.detail[:120])
        await self.dlq_topic.send(key=topic.encode(), value=dead_letter_record(rejected, topic, raw))


def build_app(settings: Settings, metrics: Registry | None = None) -> faust.App:
    """The Faust app of the cloud stage (not started)."""
    metrics = metrics or Registry()
    app = PipelineFaustApp(
        settings.cloud.app_id, fetch_max_wait_ms=settings.cloud.consumer_fetch_max_wait_ms, **faust_options(settings)
    )
    proc = CloudProcessor(app, settings, metrics)
    ms = settings.model_server
    within = max(ms.max_wait_ms / 1000, 0.005)

    async def process(stream: StreamT[bytes]) -> None:
        batches = stream.take_events(ms.max_batch, within=within)  # type: ignore[attr-defined]
        async for events in batches:
            await proc.handle(list(events))

    app.agent(proc.events_topic, name="cloud-events")(process)

    def _on_seeked(offsets: dict[Any, int]) -> None:
        proc.guard.start({tp: off for tp, off in offsets.items() if tp.topic == settings.kafka.events_topic})

    app.seek_listeners.append(_on_seeked)
    app.commit_gate = proc.processed

    @app.timer(interval=max(0.5, settings.cloud.offset_stall_s / 4))  # type: ignore[untyped-decorator]
    async def _stall_check() -> None:
        if app.in_recovery:  # streams are paused by the recovery: rewinds would only use up max_rewinds
            return
        await proc.check_stalls(app.consumer.assignment(), app.consumer.highwater)

    # a recovery that receives no changelog record is re-seeked, then rebalanced (see the module)
    install_recovery_watchdog(app, settings.cloud.offset_stall_s, metrics)

    @app.task  # type: ignore[untyped-decorator]
    async def _diagnostics() -> None:  # `kill -USR1 <pid>`: every task's stack to the log
        install_task_dump(asyncio.get_running_loop())

    @app.task  # type: ignore[untyped-decorator]
    async def _live_rules() -> None:  # per-camera rules from the config topic (daemon thread)
        proc.live_rules.start()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _on_assigned(app: faust.App, *args: Any, **kwargs: Any) -> None:
        proc.seen.reset()
        proc.expiry.reset()
        proc.reset()

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def _on_ready(app: faust.App, *args: Any, **kwargs: Any) -> None:
        log.info("cloud stage ready: partitions assigned and tables recovered")
        mark_ready("cloud stage")

    @app.page("/metrics")
    async def _metrics(web: Any, request: Any) -> Any:
        return web.text(metrics.render())

    @app.page("/healthz")
    async def _health(web: Any, request: Any) -> Any:
        return web.text(f"ok breaker={proc.verifier.breaker.state}\n")

    app.cloud_processor = proc  # type: ignore[attr-defined]
    app.cloud_metrics = metrics  # type: ignore[attr-defined]
    return app


async def preflight(settings: Settings) -> None:
    """Check the heavy model's metadata before consuming anything.

    A wrong model (ModelError) stops the worker with a clear message; an unreachable server only
    warns: events then go on as ``unverified`` until the circuit breaker finds it back.
    """
    client = InferenceClient(settings.model_server)
    try:
        await client.connect()
    except InferenceUnavailable as exc:
        log.warning("model server not reachable yet (%s); alerts are unverified until it is", exc)
    finally:
        await client.close()


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    """Start the Faust worker; returns its exit code after SIGTERM/SIGINT."""
    if settings.cloud.escalation != "never" or settings.cloud.escalation_overrides:
        asyncio.run(preflight(settings))
    settings.cloud.data_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(settings)
    worker = Worker(app, loglevel=loglevel, override_logging=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
