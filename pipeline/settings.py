"""One typed settings model for every part of the pipeline.

Sources, highest priority first: command-line flags (passed in as overrides), environment
variables (``PIPELINE_<SECTION>__<FIELD>``, e.g. ``PIPELINE_MQTT__PORT=1884``), a YAML file
(``--config FILE`` or ``PIPELINE_CONFIG``), then the defaults below. Nothing is read at import
time: call :func:`load_settings`.

Every section forbids unknown keys, so a typo in a config file is an error, not a silent default.
"""

from __future__ import annotations

import contextvars
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pipeline.errors import ConfigError
from pipeline.operators.chunk_codec import DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES, MIN_CHUNK_BYTES, MQTT_URL_PATTERN
from pipeline.operators.geometry import polygon_problem

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CLIP = REPO_ROOT / "samples" / "vtest_clip.mp4"
DEFAULT_RUN_DIR = Path(".pipeline-run")

Point = tuple[float, float]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- transport


class MqttSettings(Section):
    host: str = Field("127.0.0.1", description="MQTT broker host.")
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker port.")
    username: str | None = Field(None, description="MQTT user name (one per camera node / service).")
    password: SecretStr | None = Field(None, description="MQTT password; prefer the environment variable.")
    tls_ca_file: Path | None = Field(None, description="CA bundle; setting it turns TLS on.")
    tls_insecure: bool = Field(False, description="Skip server host name check (test CAs only).")
    topic_prefix: str = Field("vision", description="First level of every topic this project uses.")
    keepalive_s: int = Field(15, ge=5, le=600, description="MQTT keep-alive; a dead link is seen in ~1.5x.")
    max_payload_bytes: int = Field(
        64 * 1024, ge=512, description="Largest event payload accepted; larger ones are dead-lettered."
    )
    session_expiry_s: int = Field(
        24 * 3600, ge=0, description="MQTT 5 session expiry so the broker keeps our queue while we are away."
    )


class KafkaSettings(Section):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated.")
    events_topic: str = Field("vision.events", description="Validated edge events, key = camera id.")
    alerts_topic: str = Field("vision.alerts", description="Alerts produced by the cloud stage.")
    config_topic: str = Field("vision.config", description="Per-camera config, forwarded as retained MQTT.")
    dead_letter_topic: str = Field("vision.deadletter", description="Rejected records with their reason.")
    partitions: int = Field(4, ge=1, description="Partitions for topics this project creates.")
    replication_factor: int = Field(1, ge=1, description="Replication for topics this project creates.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol (SASL mechanism PLAIN)."
    )
    sasl_mechanism: str | None = Field(None, description="e.g. PLAIN, SCRAM-SHA-512.")
    sasl_username: str | None = Field(None, description="SASL user (SASL_* protocols).")
    sasl_password: SecretStr | None = Field(None, description="SASL password; set it from the environment.")
    ssl_cafile: Path | None = Field(None, description="CA bundle that signed the brokers' certificates (SSL).")
    fetch_max_wait_ms: int = Field(
        100, ge=1, le=10_000,
        description="Longest a consumer's fetch waits at the broker for data. A broker answers early when data"
        " arrives, but Tansu 0.6 waits the full time on multi-partition fetches (~500 ms of latency); 100 ms"
        " costs an idle consumer ~10 requests/s. Used by the bridge's downlink; the Faust worker has its own"
        " (cloud.consumer_fetch_max_wait_ms).",
    )  # fmt: skip
    fast_group_join: bool = Field(
        False,
        description="Short session/heartbeat/rebalance timeouts: a consumer group joins in ~3 s instead of"
        " ~25 s. For the local stack and tests; production keeps the client defaults.",
    )

    def client_kwargs(self) -> dict[str, Any]:
        """Connection settings shared by every kafka-python client."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        if self.ssl_cafile:
            kw["ssl_cafile"] = str(self.ssl_cafile)
        return kw

    def group_kwargs(self) -> dict[str, Any]:
        """Consumer-group timeouts (kafka-python names)."""
        if not self.fast_group_join:
            return {}
        return {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 10000}


class ModelServerSettings(Section):
    address: str = Field("127.0.0.1:8500", description="TF Serving gRPC address host:port.")
    model_name: str = Field("centernet", description="model_spec.name of the heavy model.")
    signature_name: str = Field("serving_default", description="model_spec.signature_name.")
    model_version: int | None = Field(None, description="model_spec.version; None = latest.")
    model_base_path: Path = Field(REPO_ROOT / "models", description="TF Serving model directory.")
    timeout_s: float = Field(2.0, gt=0, description="Deadline of one Predict call.")
    max_batch: int = Field(32, ge=1, description="Largest micro-batch sent in one Predict call.")
    max_wait_ms: float = Field(
        5.0,
        ge=0,
        description="Longest a request waits for others to join its batch (also the cloud worker's event"
        " take window). Under load batches fill while the in-flight calls run, so this can stay short.",
    )
    max_latency_ms: float | None = Field(
        250.0,
        gt=0,
        description="Server time one batch may take: caps the batch at this / the measured cost per image"
        " (None: max_batch alone caps it). Bounds what an event in a burst waits for.",
    )
    max_inflight: int = Field(
        2, ge=1, le=64, description="Predict calls out at once (one batched call keeps ~1 core of a CPU server busy)."
    )
    queue_limit: int = Field(256, ge=1, description="Requests waiting for a batch; beyond it, fail fast.")
    breaker_failures: int = Field(3, ge=1, description="Consecutive failures that open the circuit breaker.")
    breaker_reset_s: float = Field(5.0, gt=0, description="Open time before a trial call (half-open).")


# --------------------------------------------------------------------------- edge


class ModelRef(Section):
    """A model version the cloud's registry offers this camera (``pipeline models publish``)."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Model name in the registry.")
    version: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Model version in the registry.")
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the file; checked before loading.")
    size: int = Field(..., ge=1, description="File size in bytes (the download stops beyond it).")
    url: str = Field(
        ...,
        pattern=rf"^(https?://|{MQTT_URL_PATTERN}$)",
        description="Where the edge downloads the file: http(s):// (Range resume) or mqtt://models/<name>/<version>"
        " (retained chunks on the edge's own broker, under its topic prefix; `pipeline models push-chunks`).",
    )
    labels: str = Field("coco80", description="Label set of the model's class ids (only coco80 is known).")
    min_edge_version: str = Field("0", description="Oldest edge software version that can run it.")
    signature: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="HMAC-SHA256 (hex) of the reference with the fleet's signing key; required by an edge"
        " that has edge.model_signing_key set.",
    )

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def signed_text(self) -> bytes:
        """What the signature covers: identity, content hash and size (the URL may move)."""
        return f"pipeline-model-v1\n{self.name}\n{self.version}\n{self.sha256}\n{self.size}".encode()


class RuleSettings(Section):
    id: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Rule id (part of every alert id).")
    kind: Literal["presence", "zone", "dwell", "line", "count"] = Field("presence", description="What fires it.")
    labels: list[str] = Field(default_factory=lambda: ["person"], description="Object labels the rule watches.")
    cameras: list[str] | None = Field(
        None, description="Cameras this rule applies to: a camera id (that id on every site) or site/cam; None = all."
    )
    min_score: float = Field(0.5, ge=0, le=1, description="Minimum fused score.")
    zone: list[Point] | None = Field(None, description="Polygon (normalised) for zone/dwell/count rules.")
    line: tuple[Point, Point] | None = Field(None, description="Segment (normalised) for line rules.")
    direction: Literal["any", "left_to_right", "right_to_left"] = Field(
        "any",
        description="Line rules: which crossing fires; left and right as seen walking from the line's first"
        " point to its second (pipeline/operators/geometry.py).",
    )
    dwell_s: float = Field(10.0, gt=0, description="Dwell rules: seconds inside the zone before it fires.")
    count: int = Field(5, ge=1, description="Count rule fires above this many distinct tracks...")
    window_s: float = Field(60.0, gt=0, description="...within this sliding window.")
    cooldown_s: float = Field(60.0, ge=0, description="One alert per incident within this time.")
    schedule: tuple[str, str] | None = Field(None, description="Active between HH:MM and HH:MM (UTC).")
    hysteresis: float = Field(
        0.02,
        ge=0,
        lt=0.5,
        description="Line and zone rules: a side of a line, or inside/outside a zone, counts only this far"
        " (normalised) past it, so feet jittering on it count no crossing and no new stay.",
    )


class CameraSettings(Section):
    id: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Camera id, unique in the site.")
    source: str = Field(..., description="Video file path, V4L2 device index ('0') or rtsp/http URL.")
    loop: bool = Field(False, description="Restart a file source at its end (simulates a live camera).")
    realtime: bool | None = Field(
        None, description="Pace a file at its own fps and drop frames when slow; default: live sources only."
    )
    detect_fps: float = Field(5.0, gt=0, le=60, description="Detections per second, whatever the camera fps.")
    min_score: float = Field(0.35, ge=0, le=1, description="Edge detector score threshold.")
    labels: list[str] = Field(
        default_factory=lambda: ["person", "car", "bicycle", "motorcycle", "bus", "truck"],
        description="Labels reported; others are ignored.",
    )
    masks: list[list[Point]] = Field(
        default_factory=list, description="Polygons (normalised x,y) where motion is ignored."
    )
    motion_threshold: float = Field(0.002, ge=0, le=1, description="Share of changed pixels that counts as motion.")
    lines: list[tuple[Point, Point]] = Field(
        default_factory=list,
        description="Line segments (normalised, as in the cloud's line rules): the edge sends an event as soon"
        " as a track's feet clearly change side of one (or of a line rule in this camera's `rules`), so every"
        " crossing it sees reaches the rules.",
    )
    zones: list[list[Point]] = Field(
        default_factory=list,
        description="Polygons (normalised, as in the cloud's zone/dwell rules): the edge sends an event as soon"
        " as a track's feet clearly enter or leave one (or a zone of a zone/dwell rule in `rules`), so stays"
        " are timed at the detection rate.",
    )
    line_margin: float = Field(
        0.02, ge=0, lt=0.5,
        description="How far (normalised) from a line or zone edge the feet must be to change side.",
    )  # fmt: skip

    @field_validator("zones")
    @classmethod
    def _zones_are_polygons(cls, zones: list[list[Point]]) -> list[list[Point]]:
        for zone in zones:
            if (problem := polygon_problem(zone)) is not None:
                raise ValueError(f"zone {zone}: {problem}")
        return zones

    crops: bool = Field(
        True,
        description="Attach a small JPEG crop to track_started events (and to a later event with a clearly"
        " better view of the track, see crop_refreshes): the cloud's heavy model judges the crop.",
    )
    crop_refreshes: int = Field(
        2, ge=0, le=10,
        description="Later crops per track at most, each sent when the track shows a clearly better view"
        " (the first box touched the frame border, or the box doubled in area): a person walking in at the"
        " border is otherwise judged on a sliver. 0 = only the first crop.",
    )  # fmt: skip
    crop_max_bytes: int = Field(16 * 1024, ge=1024, le=60 * 1024, description="JPEG crop size cap.")
    blur_faces: bool = Field(False, description="Blur faces in crops before they leave the node.")
    pose: bool = Field(
        False, description="Run MediaPipe pose on person crops of track_started events (attrs pose=up|down)."
    )
    reopen_attempts: int | None = Field(
        None, ge=1, description="Consecutive failed opens before the camera is 'failed'; None = retry forever."
    )
    stream_timeout_s: float = Field(
        10.0, gt=0, le=120,
        description="Network sources: give up opening, or reading a stalled stream, after this (then reopen).",
    )  # fmt: skip
    rules: list[RuleSettings] = Field(
        default_factory=list,
        description="Cloud rules of this camera (drawn in `pipeline console` or sent with `pipeline config set`):"
        " applied live by the cloud worker on top of cloud.rules; the edge only passes them on.",
    )
    model: ModelRef | None = Field(
        None,
        description="Detector model from the cloud's registry (downloaded, verified, smoke-tested, then"
        " swapped in live); None = the packaged model named by edge.detector.",
    )


class EdgeSettings(Section):
    node_id: str = Field("node-1", description="This camera node's id (its MQTT client id and user).")
    site: str = Field("site-a", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Site id of this node.")
    cameras: list[CameraSettings] = Field(
        default_factory=lambda: [CameraSettings(id="cam-1", source=str(SAMPLE_CLIP))],
        description="Cameras this node runs.",
    )
    detector: Literal["centernet", "centernet-int8", "hog"] = Field(
        "centernet", description="Light detector: TFLite CenterNet (float or int8) or OpenCV HOG."
    )
    detector_input_size: Literal[320, 384, 512] = Field(
        512,
        description="CenterNet input side in px (fp32 only below 512): smaller is cheaper per frame (384: ~0.55x,"
        " 320: ~0.4x of 512's time) and finds fewer small people (benchmarks/RESULTS.md, accuracy).",
    )
    detector_runtime: Literal["litert", "openvino"] = Field(
        "litert",
        description="Engine of the CenterNet float model: ai-edge-litert (XNNPack) or OpenVINO's CPU runtime (same"
        " .tflite file; with detector_precision bf16 about 2x faster where the CPU has bf16: benchmarks/RESULTS.md).",
    )
    detector_precision: Literal["f32", "bf16"] = Field(
        "f32",
        description="OpenVINO only: arithmetic of the network; bf16 is a hint (f32 on CPUs without bf16) and moves"
        " scores by ~0.01 (its detection and tracking figures are in benchmarks/RESULTS.md).",
    )
    detector_pool: int | None = Field(
        None,
        ge=0,
        le=64,
        description="Interpreters shared by the node's cameras (single-threaded each); 0 = one per camera"
        " with detector_threads; None = auto: min(cameras, CPU cores) when the node has several cameras.",
    )
    outbox_path: Path = Field(DEFAULT_RUN_DIR / "edge-outbox.sqlite", description="On-disk outbox file.")
    outbox_max_events: int = Field(200_000, ge=10, description="Outbox cap; oldest dropped (and counted).")
    outbox_max_age_s: float = Field(7 * 24 * 3600, gt=0, description="Events older than this are dropped.")
    ack_timeout_s: float = Field(10.0, gt=0, description="Replay events not confirmed in Kafka after this.")
    drain_rate_per_s: float = Field(500.0, gt=0, description="Outbox replay rate after a reconnect.")
    metrics_port: int | None = Field(None, description="Serve Prometheus metrics on this local port.")
    keepalive_event_s: float = Field(5.0, gt=0, description="track_updated at least this often.")
    track_max_missed: int = Field(
        5, ge=1, description="Detections a track may miss (coasting on its prediction) before it is lost."
    )
    track_lost_s: float = Field(
        5.0,
        ge=0,
        description="A lost track is kept this long for re-identification (motion + appearance) before it"
        " ends; 5 s is Frigate's default too. 0 = end as soon as it is lost.",
    )
    track_appearance: bool = Field(
        True, description="Colour-histogram appearance cue for association and re-identification (~0.1 ms/box)."
    )
    track_low_score: float | None = Field(
        None,
        ge=0,
        le=1,
        description="ByteTrack's second association: detections between this and min_score may extend a track,"
        " never start one. Off by default: on PETS09-S2L1 it cost MOTA (57 -> 43 at 0.3, benchmarks/RESULTS.md).",
    )
    detector_threads: int = Field(2, ge=1, le=64, description="TFLite interpreter threads per camera.")
    final_ack_wait_s: float = Field(
        10.0, ge=0, description="When every camera has ended, wait this long for the outbox to be acked."
    )
    status_interval_s: float = Field(
        10.0, gt=0, description="Republish each camera's retained status (with metrics) this often."
    )
    snapshot_interval_s: float = Field(
        30.0, ge=0,
        description="Publish a small retained JPEG of each camera (<prefix>/<site>/<cam>/snapshot, for the console's"
        " zone editor) at most this often; 0 = never. Faces blurred when the camera has blur_faces.",
    )  # fmt: skip
    snapshot_max_bytes: int = Field(48 * 1024, ge=4096, le=256 * 1024, description="Largest snapshot JPEG.")
    model_dir: Path = Field(
        DEFAULT_RUN_DIR / "edge-models",
        description="Where downloaded models are kept (the active and the previous versions per camera).",
    )
    model_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest model file the edge downloads; bigger ones are refused."
    )
    model_signing_key: SecretStr | None = Field(
        None,
        description="When set, a model reference must carry a valid HMAC-SHA256 signature with this key, or it is"
        " refused before anything is downloaded (set it from the environment).",
    )
    model_download_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Socket timeout of one model download request; over MQTT, how long without a chunk (or the"
        " manifest) before the download fails.",
    )
    model_download_attempts: int = Field(
        5, ge=1, description="Download attempts (each resumes with an HTTP Range request) before giving up."
    )
    model_max_failures: int = Field(
        3, ge=1, description="Consecutive inference errors of a downloaded model before the previous one is restored."
    )
    model_keep_versions: int = Field(
        3, ge=2, description="Downloaded model files kept on disk per node (newest first; the active ones always)."
    )

    @model_validator(mode="after")
    def _runtime_fits_detector(self) -> EdgeSettings:
        if self.detector_runtime == "openvino" and self.detector != "centernet":
            raise ValueError("detector_runtime openvino runs the float CenterNet (detector: centernet)")
        if self.detector_precision == "bf16" and self.detector_runtime != "openvino":
            raise ValueError("detector_precision bf16 needs detector_runtime openvino (LiteRT runs f32)")
        return self


# --------------------------------------------------------------------------- bridge


class BridgeSettings(Section):
    client_id: str = Field("bridge-1", description="MQTT client id (unique per bridge instance).")
    shared_group: str | None = Field(
        "bridges", description="MQTT 5 shared subscription group; None subscribes directly."
    )
    max_inflight: int = Field(1000, ge=1, description="MQTT messages taken but not yet acked by Kafka.")
    persistent_session: bool | None = Field(
        None,
        description="Keep the uplink's MQTT session while away. Default: only without a shared group. With a"
        " $share group, Mosquitto 2.0 keeps routing the group's messages into a dead member's session and a"
        " session restored after a broker crash can stop receiving; the edge outbox replays whatever was not"
        " acknowledged from Kafka, so a clean session loses nothing and fails over in ~ack_timeout_s.",
    )
    ack_interval_ms: int = Field(200, ge=10, description="How often acknowledged seqs go to the edge.")
    linger_ms: int = Field(5, ge=0, description="Kafka producer linger: wait this long to fill a batch.")
    batch_size: int = Field(64 * 1024, ge=1024, description="Kafka producer batch size in bytes.")
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "none", description="Kafka producer compression of event batches."
    )
    dead_letter_max_bytes: int = Field(8 * 1024, ge=256, description="Original bytes kept in a DLQ record.")
    max_future_skew_s: float = Field(300.0, gt=0, description="Events stamped further ahead are rejected.")
    health_port: int | None = Field(None, description="Serve /healthz and /metrics on this port.")
    health_host: str = Field(
        "127.0.0.1",
        description="Address /healthz and /metrics bind to; 0.0.0.0 in a container so Prometheus can scrape.",
    )
    downlink_group: str | None = Field(
        None,
        description="Kafka consumer group of the downlink (alerts/config -> MQTT); default"
        " '<shared_group>-downlink' (bridges of one group split the records), or"
        " '<client_id>-downlink' without a shared group.",
    )
    drain_timeout_s: float = Field(
        10.0, gt=0, description="On stop, how long to wait for Kafka to acknowledge records already sent."
    )


# --------------------------------------------------------------------------- cloud


Escalation = Literal["always", "low_confidence", "track_started", "never"]


class CloudSettings(Section):
    app_id: str = Field("vision-cloud", description="Faust app id (consumer group and table prefix).")
    escalation: Escalation = Field("track_started", description="Which events go to the heavy model.")
    escalation_low_confidence: float = Field(0.6, ge=0, le=1, description="'low_confidence' threshold.")
    on_model_unavailable: Literal["unverified", "hold"] = Field(
        "unverified",
        description="Heavy model down: alert 'unverified' at once, or 'hold' the partition until it is back.",
    )
    edge_weight: float = Field(0.4, ge=0, le=1, description="Fused = w*edge + (1-w)*cloud.")
    rules: list[RuleSettings] = Field(
        default_factory=lambda: [RuleSettings(id="person-present", kind="presence", labels=["person"])],
        description="Rules of every camera (cameras[].rules add per-camera ones).",
    )
    link_window_s: float = Field(
        10.0,
        ge=0,
        le=600,
        description="A track the edge links to one that vanished (attrs.link) is the same person for presence,"
        " zone, dwell and line rules; a person is forgotten this long after their last track ended. 0 = off.",
    )
    escalation_overrides: dict[str, Escalation] = Field(
        default_factory=dict,
        description="Per camera/label escalation: keys 'cam/label', 'cam/*' or '*/label'; most specific wins.",
    )
    contradiction_threshold: float = Field(
        0.25, ge=0, le=1, description="Cloud score below this contradicts the edge ('contradicted')."
    )
    crop_centre_fraction: float = Field(
        0.5, gt=0, le=1, description="A cloud detection counts when it overlaps this central share of the crop."
    )
    dedupe_window_s: float = Field(3600.0, gt=0, description="How long an event id is remembered.")
    dedupe_max_per_camera: int = Field(
        20_000, ge=10, description="Event ids remembered per camera; the oldest are forgotten beyond it."
    )
    consumer_fetch_max_wait_ms: int | None = Field(
        100, ge=1, le=10_000,
        description="The Faust consumer's fetch wait (faust-streaming hard-codes 1500 ms; Tansu then adds"
        " ~500 ms per hop; 100 cuts the worker hop to ~40 ms). None keeps Faust's 1500 ms. It was opt-in while"
        " a worker-restart record loss seen with it was open; that was Faust's post-restart seek race, now"
        " guarded (docs/faults.md, finding 9).",
    )  # fmt: skip
    offset_max_rewinds: int = Field(
        5, ge=0,
        description="Rewinds of an events partition for one offset gap before the gap is accepted as real"
        " (records that never reached the worker; see pipeline/cloud_stage/offset_guard.py).",
    )  # fmt: skip
    offset_stall_s: float = Field(
        10.0, gt=0,
        description="An events partition with records waiting in Kafka that delivered nothing for this long"
        " (and no batch in progress) is rewound to its next expected offset.",
    )  # fmt: skip
    track_state_ttl_s: float = Field(
        300.0, gt=0,
        description="Forget a track's rule state and verdict after this long without any event of it (event"
        " time): its track_ended was lost (edge crash, dead-lettered). Keep it well above"
        " edge.keepalive_event_s.",
    )  # fmt: skip
    single_record_batches: bool = Field(
        True,
        description="Produce one record per batch. Tansu 0.6 answers ListOffsets(latest) with the last"
        " batch's base offset + 1, so Faust's changelog recovery stops short of a multi-record batch's"
        " tail and loses table state; single-record batches avoid that. Set false on Apache Kafka.",
    )
    web_enabled: bool = Field(True, description="Serve the Faust web server (/metrics, health).")
    web_port: int = Field(6066, ge=1, le=65535, description="Faust web (health/metrics) port.")
    web_host: str = Field(
        "127.0.0.1",
        description="Address the Faust web server binds to; 0.0.0.0 in a container so Prometheus can scrape.",
    )
    data_dir: Path = Field(DEFAULT_RUN_DIR / "faust", description="Faust table storage.")


# --------------------------------------------------------------------------- learning loop


class RegistrySettings(Section):
    dir: Path = Field(DEFAULT_RUN_DIR / "model-registry", description="Model registry directory (cloud side).")
    host: str = Field("127.0.0.1", description="Address `pipeline models serve` binds.")
    port: int = Field(8765, ge=1, le=65535, description="Port of `pipeline models serve`.")
    base_url: str | None = Field(
        None,
        description="URL the edges download from (put in the model reference); default http://<host>:<port>.",
    )

    signing_key: SecretStr | None = Field(
        None, description="Shared key that signs published model references (HMAC-SHA256); set it from the environment."
    )
    via: Literal["http", "mqtt"] = Field(
        "http",
        description="How `pipeline models publish` offers a version: 'http' (registry.base_url) or 'mqtt' (retained"
        " chunks on the broker, for sites that reach only the broker).",
    )
    chunk_bytes: int = Field(
        DEFAULT_CHUNK_BYTES,
        ge=MIN_CHUNK_BYTES,
        le=MAX_CHUNK_BYTES,
        description="Chunk size of models offered over MQTT (one retained QoS 1 message each).",
    )

    def url(self) -> str:
        return (self.base_url or f"http://{self.host}:{self.port}").rstrip("/")


class HardExampleSettings(Section):
    enabled: bool = Field(False, description="Record disagreements between the edge and the heavy model.")
    dataset_dir: Path = Field(DEFAULT_RUN_DIR / "hard-examples", description="Dataset directory (images/, labels/).")
    agreement_rate: float = Field(
        0.05, ge=0, le=1, description="Share of agreements also recorded (deterministic by event id)."
    )
    other_label_min_score: float = Field(
        0.4, ge=0, le=1, description="A cloud detection of another label in the crop's centre counts as missed."
    )
    max_per_camera_day: int = Field(500, ge=1, description="Examples kept per camera and day; more are dropped.")
    max_bytes_per_camera_day: int = Field(
        50 * 1024 * 1024, ge=1024, description="Image bytes kept per camera and day; more are dropped."
    )
    blur: Literal["none", "person_head"] = Field(
        "person_head",
        description="Privacy blur of stored crops: 'person_head' = Gaussian blur of the upper third of every"
        " person box (the cloud's detections and the edge's box); the edge's MediaPipe face blur needs"
        " mediapipe, which the cloud image does not carry.",
    )


# --------------------------------------------------------------------------- history and console


class HistorySettings(Section):
    """``pipeline history``: the alerts topic into SQL (SQLite embedded, PostgreSQL in compose)."""

    database_url: str = Field(
        f"sqlite:///{DEFAULT_RUN_DIR / 'history.sqlite3'}",
        pattern=r"^(sqlite:///.+|postgres(ql)?://.+)$",
        description="sqlite:///PATH (embedded, the demo) or postgresql://USER:PASSWORD@HOST:PORT/DB (psycopg 3);"
        " put a password in the environment (PIPELINE_HISTORY__DATABASE_URL), not in a file.",
    )
    group: str = Field("history", description="Kafka consumer group of the history store (one per database).")
    crops: bool = Field(
        True,
        description="Also read the events topic and keep each track's crop (track_started), shown with its alerts.",
    )
    crop_max_bytes: int = Field(
        24 * 1024, ge=1024, le=256 * 1024,
        description="Largest crop kept; bigger ones are re-encoded smaller, or dropped (counted) if that fails.",
    )  # fmt: skip
    crop_blur: Literal["none", "person_head"] = Field(
        "none",
        description="Blur stored crops again: 'person_head' blurs the upper third of the edge's box (the edge's own"
        " camera.blur_faces has already run on what it sent).",
    )
    retention_days: float = Field(30.0, gt=0, description="Alerts and crops older than this (alert time) are deleted.")
    retention_interval_s: float = Field(600.0, gt=0, description="How often the retention delete runs.")
    batch_max: int = Field(500, ge=1, le=10_000, description="Records written in one database transaction at most.")
    health_port: int | None = Field(None, description="Serve /healthz and /metrics on this local port.")


class ConsoleSettings(Section):
    """``pipeline console``: the operator web app."""

    host: str = Field("127.0.0.1", description="Address the console binds; loopback unless told otherwise.")
    port: int = Field(8088, ge=0, le=65535, description="Console HTTP port (0 = any free port, printed).")
    users: str | None = Field(
        None,
        description="Users as 'name:role:hash' entries separated by ';' (role admin or viewer; hash from"
        " `pipeline console --hash-password`). Set it from the environment.",
    )
    users_file: Path | None = Field(
        None, description="File with one 'name:role:hash' line per user (# comments); read at start."
    )
    session_secret: SecretStr | None = Field(
        None, description="Key that signs session cookies; default a random one per start (log in again after)."
    )
    session_max_age_s: int = Field(8 * 3600, ge=60, description="A login lasts this long.")
    live_alerts_kept: int = Field(200, ge=10, le=10_000, description="Recent live alerts kept in memory for new pages.")
    page_size: int = Field(50, ge=5, le=500, description="History rows per page.")
    offline_after_s: float = Field(
        25.0, gt=0,
        description="A camera whose status is older than this is shown offline (its node refreshes it every"
        " edge.status_interval_s, 10 s by default). A node that dies is shown offline sooner: the broker"
        " publishes its Last Will within ~1.5x mqtt.keepalive_s (at once if its process died).",
    )  # fmt: skip


# --------------------------------------------------------------------------- local stack


class LocalStackSettings(Section):
    run_dir: Path = Field(DEFAULT_RUN_DIR, description="Where the local stack keeps configs, data, pids.")
    mosquitto_bin: str = Field("mosquitto", description="Mosquitto executable (Debian package).")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PIPELINE_", env_nested_delimiter="__", extra="forbid", frozen=True)

    mqtt: MqttSettings = Field(MqttSettings(), description="MQTT broker and client (every part).")
    kafka: KafkaSettings = Field(KafkaSettings(), description="Kafka brokers and topics (bridge, cloud, history).")
    model_server: ModelServerSettings = Field(
        ModelServerSettings(), description="The heavy model on TF Serving (cloud)."
    )
    edge: EdgeSettings = Field(EdgeSettings(), description="A camera node and its cameras.")
    bridge: BridgeSettings = Field(BridgeSettings(), description="The MQTT <-> Kafka bridge.")
    cloud: CloudSettings = Field(CloudSettings(), description="The Faust worker: escalation, verification, rules.")
    registry: RegistrySettings = Field(RegistrySettings(), description="The model registry and its file server.")
    hard_examples: HardExampleSettings = Field(
        HardExampleSettings(), description="Where edge and cloud disagree (recorder)."
    )
    history: HistorySettings = Field(HistorySettings(), description="Alert history store.")
    console: ConsoleSettings = Field(ConsoleSettings(), description="The web console.")
    local: LocalStackSettings = Field(LocalStackSettings(), description="Local brokers and model server (demo, tests).")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    @field_validator("edge")
    @classmethod
    def _unique_cameras(cls, v: EdgeSettings) -> EdgeSettings:
        ids = [c.id for c in v.cameras]
        if len(ids) != len(set(ids)):
            raise ValueError(f"camera ids must be unique, got {ids}")
        return v

    @model_validator(mode="after")
    def _topics_distinct(self) -> Settings:
        k = self.kafka
        names = [k.events_topic, k.alerts_topic, k.config_topic, k.dead_letter_topic]
        if len(set(names)) != len(names):
            raise ValueError(f"Kafka topics must be distinct: {names}")
        return self

    def to_yaml(self, *, reveal_secrets: bool = True) -> str:
        """Serialise, secrets included, for child processes of the local stack; with
        ``reveal_secrets=False`` (what ``pipeline settings`` prints) they show as ``**********``."""
        data = self.model_dump(mode="json")
        if not reveal_secrets:
            return yaml.safe_dump(data, sort_keys=False)
        for section, field in (
            ("mqtt", "password"),
            ("kafka", "sasl_password"),
            ("edge", "model_signing_key"),
            ("registry", "signing_key"),
            ("console", "session_secret"),
        ):
            secret = getattr(getattr(self, section), field)
            if secret is not None:
                data[section][field] = secret.get_secret_value()
        return yaml.safe_dump(data, sort_keys=False)


_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("pipeline_config", default=None)


class _YamlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _config_file.get()
        if path is None:
            return {}
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping, got {type(data).__name__}")
        return data


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings: flags (``overrides``, nested dicts) > env > YAML file > defaults."""
    path = config_file or os.environ.get("PIPELINE_CONFIG")
    token = _config_file.set(Path(path) if path else None)
    try:
        return Settings(**overrides)
    except ConfigError:
        raise
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise ConfigError(f"invalid settings: {exc}") from exc
    finally:
        _config_file.reset(token)
