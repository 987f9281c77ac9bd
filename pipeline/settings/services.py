"""Settings of the services behind the edge: bridge, cloud worker, learning loop, history, console, local stack."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from pipeline.operators.chunk_codec import DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES, MIN_CHUNK_BYTES
from pipeline.settings.base import DEFAULT_RUN_DIR, Section
from pipeline.settings.edge import RuleSettings

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
