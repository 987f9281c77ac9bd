"""Settings of the transports every part uses: MQTT, Kafka, the model server."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr

from pipeline.settings.base import REPO_ROOT, Section


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
    events_topic: str = Field("vision.events", description="Validated edge events, key = site/camera.")
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
