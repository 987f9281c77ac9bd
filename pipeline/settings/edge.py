"""Settings of a camera node: its cameras, their rules and the models it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from pipeline.operators.chunk_codec import MQTT_URL_PATTERN
from pipeline.operators.geometry import polygon_problem
from pipeline.settings.base import DEFAULT_RUN_DIR, SAMPLE_CLIP, Point, Section


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
    min_score: float = Field(
        0.35,
        ge=0,
        le=1,
        description="Edge detector score threshold (CenterNet's scores are on the 512 px file's scale at every input"
        " size: the smaller files' scores are calibrated onto it, models.json).",
    )
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


def _int_from_text(value: object) -> object:
    """An environment variable is text, and a ``Literal`` of ints takes no text (pydantic v2):
    ``PIPELINE_EDGE__DETECTOR_INPUT_SIZE=384`` failed with "Input should be 320, 384 or 512"."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


InputSize = Annotated[Literal[320, 384, 512], BeforeValidator(_int_from_text)]


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
    detector_input_size: InputSize = Field(
        512,
        description="CenterNet input side in px (fp32 only below 512): smaller is cheaper per frame (384: ~0.55x,"
        " 320: ~0.4x of 512's time; 384 gives 4 cameras per core at 5 fps). With calibrated scores 384 matches"
        " 512's person recall, and IDF1 within a point, on the ground truth; through the pipeline its identity"
        " swaps in crowds cost exact counts (25 of 24 line crossings, 14 of 13 zone entries: benchmarks/RESULTS.md).",
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
        description="Most interpreters shared by the node's cameras (single-threaded each; the pool starts with one"
        " and adds one while they are busy >= 75% of the time); 0 = one per camera with detector_threads;"
        " None = auto: min(cameras, CPU cores) when the node has several cameras.",
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
