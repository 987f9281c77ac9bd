"""``pipeline cloud`` (the Faust worker) and ``pipeline config set`` (per-camera config)."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from pipeline.cli_support import add_override
from pipeline.errors import BrokerUnavailable, ConfigError
from pipeline.operators.rules import camera_key
from pipeline.operators.schema import Rejected
from pipeline.operators.wire import ConfigUpdate, decode_config, encode_config
from pipeline.settings import CameraSettings, EdgeSettings, Settings

CLOUD_HELP = """\
Consume edge events from Kafka, verify some of them with the heavy model on TF Serving,
apply the rules and produce one alert per incident to the alerts topic (key = site/camera).

escalation (cloud.escalation; per camera/label in cloud.escalation_overrides, e.g.
{"cam-1/person": "always"}): which events' crops go to the heavy model -
  always          every event carrying a crop
  low_confidence  edge score below cloud.escalation_low_confidence
  track_started   the first event of each track (default; the edge attaches its crop there)
  never           the edge score alone decides
The cloud score is the best detection of the same label over the crop's centre;
fused = edge_weight*edge + (1-edge_weight)*cloud. Verdicts: verified, contradicted (cloud
score < cloud.contradiction_threshold), unverified (model unavailable: circuit breaker open
after model_server.breaker_failures failures, retried after breaker_reset_s), not_escalated.
Predict calls are micro-batched across cameras (model_server.max_batch, max_wait_ms).

rules (cloud.rules, a list in the YAML config): kind presence | zone | dwell | line | count,
for labels on cameras (None = all), fired when the fused score >= min_score, optionally only
within schedule [HH:MM, HH:MM] UTC. zone: bottom-centre of the box inside the polygon; dwell: in
the zone for dwell_s; line: crossing the segment (direction any/left_to_right/right_to_left);
count: more than `count` distinct tracks within window_s. One alert per incident (a track, or
the camera for count) within cooldown_s; alert ids are derived from rule, site, camera,
incident and occurrence, so reprocessing after a crash re-emits the same ids.

State (seen event ids, track verdicts, rule state, incident ledger) is in Faust tables with
Kafka changelogs: a restarted worker resumes. Undecodable records go to the dead-letter topic.
"""


def register(subparsers: Any) -> None:
    cloud = subparsers.add_parser(
        "cloud",
        help="Run the cloud stage (Faust worker): verify events, apply rules, produce alerts.",
        description=CLOUD_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_override(cloud, "--app-id", path="cloud.app_id", metavar="ID", help="Faust app id / consumer group.")
    add_override(cloud, "--escalation", path="cloud.escalation", metavar="POLICY",
                 choices=["always", "low_confidence", "track_started", "never"],
                 help="Which events go to the heavy model.")  # fmt: skip
    add_override(cloud, "--web-port", path="cloud.web_port", type=int, metavar="PORT", help="Faust web (metrics) port.")
    add_override(
        cloud, "--model-server", path="model_server.address", metavar="HOST:PORT", help="TF Serving gRPC host:port."
    )
    add_override(
        cloud, "--bootstrap-servers", path="kafka.bootstrap_servers", metavar="SERVERS", help="Kafka bootstrap."
    )
    cloud.set_defaults(func=_run_cloud)

    config = subparsers.add_parser("config", help="Per-camera configuration, sent to the edge via Kafka.")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION")
    config_sub.required = True
    cset = config_sub.add_parser(
        "set",
        help="Send key=value camera settings (validated) to a camera through the config topic.",
        description="Produce {'v':1,'site','cam','rev','config'} (key = site/cam) to kafka.config_topic. "
        'Values are JSON when they parse as JSON (0.4, true, ["person"]), else strings; list '
        f"fields also take comma lists. Keys: {', '.join(sorted(configurable_keys()))}.",
    )
    cset.add_argument("--site", required=True, help="Site id of the camera.")
    cset.add_argument("--camera", required=True, help="Camera id.")
    cset.add_argument("pairs", nargs="+", metavar="KEY=VALUE", help="CameraSettings fields to set.")
    add_override(
        cset, "--bootstrap-servers", path="kafka.bootstrap_servers", metavar="SERVERS", help="Kafka bootstrap."
    )
    cset.set_defaults(func=_run_config_set)


def _run_cloud(args: argparse.Namespace, settings: Settings) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    from pipeline.cloud_stage.app import run_worker  # Faust and TensorFlow load only when needed

    return run_worker(settings, loglevel=str(getattr(args, "log_level", "info")).lower())


# --------------------------------------------------------------------------- config set


def configurable_keys() -> set[str]:
    return set(CameraSettings.model_fields) - {"id"}


def parse_pairs(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` strings -> a partial, validated CameraSettings dict (ConfigError if bad)."""
    allowed = configurable_keys()
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {pair!r}")
        if key not in allowed:
            raise ConfigError(f"unknown camera setting {key!r}; known: {', '.join(sorted(allowed))}")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        annotation = str(CameraSettings.model_fields[key].annotation)
        if annotation.startswith("list[str]") and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        out[key] = value
    base = {"id": "validate", "source": "validate"}
    try:
        checked = CameraSettings.model_validate({**base, **out})
    except ValueError as exc:
        raise ConfigError(f"invalid camera setting: {exc}") from exc
    return {k: v for k, v in checked.model_dump(mode="json").items() if k in out}


def config_record(site: str, cam: str, config: dict[str, Any], rev: int | None = None) -> bytes:
    rev = rev if rev is not None else int(time.time() * 1000)
    return encode_config(ConfigUpdate(site, cam, rev, config))


def produce_configs(settings: Settings, records: list[tuple[str, bytes]]) -> list[str]:
    """Produce config records ``(camera, value)`` to ``kafka.config_topic`` (acks=all); one line each.

    The Kafka key is the record's ``site/cam``, not the camera id alone: the topic is compacted by
    key in production, and two sites' ``cam-1`` must not replace each other's config."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    k = settings.kafka
    try:
        producer = KafkaProducer(**k.client_kwargs(), acks="all", retries=3)
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka {k.bootstrap_servers}: {exc}") from exc
    lines = []
    try:
        for cam, value in records:
            record = decode_config(value)
            key = cam if isinstance(record, Rejected) else camera_key(record.site, record.cam)
            meta = producer.send(k.config_topic, key=key.encode(), value=value).get(timeout=15)
            lines.append(f"{k.config_topic}[{meta.partition}]@{meta.offset} {value.decode()}")
    except KafkaError as exc:
        raise BrokerUnavailable(f"could not produce to {k.config_topic}: {exc}") from exc
    finally:
        producer.close(timeout=5)
    return lines


def _run_config_set(args: argparse.Namespace, settings: Settings) -> int:
    try:  # id patterns: the same as the edge's settings
        CameraSettings.model_validate({"id": args.camera, "source": "validate"})
        EdgeSettings.model_validate({"site": args.site})
    except ValueError as exc:
        raise ConfigError(f"bad --site/--camera: {exc}") from exc
    config = parse_pairs(args.pairs)
    value = config_record(args.site, args.camera, config)
    for line in produce_configs(settings, [(args.camera, value)]):
        print(line)
    return 0
