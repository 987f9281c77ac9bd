"""Models as retained chunks over MQTT (sites that reach only the broker): the codec, then the real
Mosquitto: `push-chunks` -> the edge's ModelStore (byte-for-byte, resume counted in chunks, a bad
chunk refused, the size cap from the manifest, timeouts), and a live camera that refuses a
corrupted version, keeps running, then swaps to a good one."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr, ValidationError

from pipeline.edge_stage.model_download import ModelStore
from pipeline.edge_stage.runner import run_edge
from pipeline.local_stack.mosquitto import MosquittoProcess
from pipeline.model_registry.chunk_push import clear_chunks, push_chunks, retained_manifest
from pipeline.model_registry.command import publish_records
from pipeline.model_registry.registry import ModelRegistry, model_ref
from pipeline.operators.chunk_codec import (
    HEADER,
    MAX_CHUNKS,
    MIN_CHUNK_BYTES,
    Chunk,
    Manifest,
    decode_chunk,
    decode_manifest,
    encode_chunk,
    encode_manifest,
    iter_chunks,
    manifest_of,
    mqtt_url,
    parse_mqtt_url,
)
from pipeline.operators.schema import Rejected
from pipeline.settings import EdgeSettings, ModelRef, MqttSettings, Settings
from pipeline.testing import wait_until
from pipeline.topics import Kind, Topics
from tests.learning_loop.loop_helpers import DEFAULT_INT8_TAG, FP32, INT8, Listener, registry_with_versions

# ----------------------------------------------------------------------------- codec (unit)


def _manifest(data: bytes, chunk: int = MIN_CHUNK_BYTES) -> Manifest:
    return manifest_of("m", "1", io.BytesIO(data), chunk)


@pytest.mark.unit
def test_manifest_and_chunks_round_trip() -> None:
    data = bytes(range(256)) * 300  # 76,800 bytes: 4 full chunks of 16 KiB and a short one
    m = _manifest(data)
    assert (m.size, m.chunks, m.span(4)) == (len(data), 5, (4 * MIN_CHUNK_BYTES, len(data) - 4 * MIN_CHUNK_BYTES))
    assert m.sha256 == hashlib.sha256(data).hexdigest()
    assert decode_manifest(encode_manifest(m)) == m
    rebuilt = bytearray()
    for index, payload in iter_chunks(io.BytesIO(data), m):
        chunk = decode_chunk(payload, m)
        assert isinstance(chunk, Chunk) and chunk.index == index and len(payload) == HEADER.size + m.span(index)[1]
        rebuilt += chunk.data
    assert bytes(rebuilt) == data
    assert parse_mqtt_url(mqtt_url("centernet", "3")) == ("centernet", "3")
    assert parse_mqtt_url("mqtt://models/+/3") is None and parse_mqtt_url("mqtt://models/a/3/x") is None


@pytest.mark.unit
def test_bad_chunks_and_manifests_are_values() -> None:
    data = bytes(range(256)) * 300
    m = _manifest(data)
    good = encode_chunk(1, m.chunks, m.sha256, data[MIN_CHUNK_BYTES : 2 * MIN_CHUNK_BYTES])
    flipped = bytearray(good)
    flipped[-1] ^= 1
    cases = {
        "chunk_mismatch": bytes(flipped),
        "bad_chunk": b"PMC0" + good[4:],
    }
    for reason, raw in cases.items():
        got = decode_chunk(raw, m)
        assert isinstance(got, Rejected) and got.reason == reason, (reason, got)
    for raw in (good[:10], encode_chunk(1, m.chunks, "ab" * 32, good[HEADER.size :]),  # another file
                encode_chunk(9, m.chunks, m.sha256, good[HEADER.size :]),  # index out of range
                encode_chunk(1, m.chunks, m.sha256, good[HEADER.size :] + b"x")):  # fmt: skip
        got = decode_chunk(raw, m)
        assert isinstance(got, Rejected) and got.reason == "bad_chunk", got

    obj = json.loads(encode_manifest(m))
    for change in ({"chunks": 4}, {"chunk_size": 1024}, {"size": 0}, {"sha256": "x" * 64}, {"name": "a/b"},
                   {"chunk_sha256": obj["chunk_sha256"][:-1]}, {"extra": 1}, {"v": 2},
                   {"size": MIN_CHUNK_BYTES * (MAX_CHUNKS + 1), "chunks": MAX_CHUNKS + 1}):  # fmt: skip
        assert isinstance(decode_manifest(json.dumps({**obj, **change}).encode()), Rejected), change
    assert isinstance(decode_manifest(b"{" + b" " * 600_000 + b"}"), Rejected)  # over MAX_MANIFEST_BYTES


@pytest.mark.unit
def test_model_ref_url_and_topics() -> None:
    base = {"name": "centernet", "version": "3", "sha256": "a" * 64, "size": 10}
    assert ModelRef(**base, url="mqtt://models/centernet/3").url.startswith("mqtt://")
    assert ModelRef(**base, url="http://registry:8765/models/centernet/3/x.tflite")
    for url in ("mqtt://models/#", "mqtt://models/a/+", "mqtt://host:1883/models/a/3", "file:///etc/passwd"):
        with pytest.raises(ValidationError):
            ModelRef(**base, url=url)
    t = Topics("vision")
    assert t.model_chunk("centernet", "3", 7) == "vision/models/centernet/3/7"
    assert t.model_manifest("centernet", "3") == "vision/models/centernet/3/manifest"
    assert t.parse_camera(t.model_chunk("centernet", "3", 7)) is None  # never taken for a camera topic


# ----------------------------------------------------------------------------- real Mosquitto


@pytest.fixture
def mq(mqtt_broker: MosquittoProcess) -> MqttSettings:
    b = mqtt_broker
    return MqttSettings(host=b.host, port=b.port, topic_prefix=f"t{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    reg = registry_with_versions(tmp_path_factory.mktemp("chunk-reg") / "registry")
    src = tmp_path_factory.mktemp("v4") / "centernet.tflite"
    src.write_bytes(INT8.read_bytes())
    reg.add(src, "centernet", "4")
    return reg


def chunk_ref(reg: ModelRegistry, version: str) -> ModelRef:
    return model_ref(reg.get("centernet", version), "http://unused").model_copy(
        update={"url": mqtt_url("centernet", version)}
    )


def publish(mq: MqttSettings, items: list[tuple[str, bytes]]) -> None:
    """Retained QoS 1 publishes, each confirmed (a forger or the operator on the broker)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"forge-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    c.connect(mq.host, mq.port)
    c.loop_start()
    try:
        for topic, payload in items:
            c.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


def store(tmp: Path, mq: MqttSettings, stop: threading.Event | None = None, **edge: object) -> ModelStore:
    settings = EdgeSettings(**{"model_dir": tmp, "model_download_timeout_s": 3.0, **edge})
    return ModelStore(settings, stop, mqtt=mq)


@pytest.mark.integration
def test_pushed_version_downloads_byte_for_byte_and_clears(
    registry: ModelRegistry, mq: MqttSettings, tmp_path: Path
) -> None:
    v3 = registry.get("centernet", "3")  # the 8 MB fp32 file
    pushed = push_chunks(mq, v3, registry.path_of(v3), 128 * 1024)
    assert pushed.manifest.chunks == -(-v3.size // (128 * 1024)) == 63
    assert retained_manifest(mq, "centernet", "3") == pushed.manifest
    s = store(tmp_path / "edge", mq)
    path = s.fetch(chunk_ref(registry, "3"))
    assert isinstance(path, Path) and path.read_bytes() == FP32.read_bytes()
    assert s.chunk_stats() == {"chunks_received": 63, "chunks_reused": 0}
    assert not list((tmp_path / "edge").glob("*.part"))
    assert s.fetch(chunk_ref(registry, "3")) == path and s.chunk_stats()["chunks_received"] == 63  # from disk

    # `models publish --via mqtt` puts the mqtt:// URL in the record (and the signature ignores URLs)
    cfg = Settings(registry={"dir": str(registry.root), "signing_key": "k"}, mqtt=mq.model_dump())
    ((_, value),) = publish_records(cfg, "s1", "centernet", "3", cameras=["cam-1"], via="mqtt")
    model = json.loads(value)["config"]["model"]
    assert model["url"] == "mqtt://models/centernet/3" and model["signature"]

    assert clear_chunks(mq, "centernet", "3", v3.size) == 1 + 63
    assert retained_manifest(mq, "centernet", "3") is None
    seen: list[str] = []
    marker = f"{mq.topic_prefix}/probe/{uuid.uuid4().hex[:6]}"
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    c.on_message = lambda cl, u, msg: seen.append(msg.topic)
    c.connect(mq.host, mq.port)
    c.loop_start()
    c.subscribe(Topics(mq.topic_prefix).model_chunks("centernet", "3"), qos=1)
    c.subscribe(marker, qos=1)
    # The broker sends a subscription's retained messages before it handles our later publish:
    # once the marker is back, any chunk still retained would have arrived before it.
    c.publish(marker, b"end", qos=1)
    assert wait_until(lambda: marker in seen, 10), "the probe's own marker came back"
    c.disconnect()
    c.loop_stop()
    assert seen == [marker], "the broker still keeps chunks of a cleared version"


class StopsAfter(ModelStore):
    """A node stopped right after its 10th chunk (the transfer takes ~0.1 s: too fast to time)."""

    def _count_chunks(self, key: str, n: int) -> None:
        super()._count_chunks(key, n)
        if self.chunk_stats().get("chunks_received", 0) >= 10:
            self.stop.set()


@pytest.mark.integration
def test_resume_fetches_only_the_missing_chunks(registry: ModelRegistry, mq: MqttSettings, tmp_path: Path) -> None:
    v2 = registry.get("centernet", "2")
    n = push_chunks(mq, v2, registry.path_of(v2), 64 * 1024).manifest.chunks  # 36 chunks
    first = StopsAfter(EdgeSettings(model_dir=tmp_path), threading.Event(), mqtt=mq)
    got = first.fetch(chunk_ref(registry, "2"))
    assert got == Rejected("stopped", "edge stopping")
    part = next(tmp_path.glob("*.mqtt.part"))
    k = first.chunk_stats()["chunks_received"]
    assert 10 <= k < n
    # a torn write on disk: that chunk does not hash right any more, so it is fetched again
    data, size = INT8.read_bytes(), 64 * 1024
    with part.open("r+b") as f:
        on_disk = [i for i in range(n) if f.seek(i * size) >= 0 and f.read(size) == data[i * size : (i + 1) * size]]
        assert len(on_disk) == k
        f.seek(on_disk[0] * size + 100)
        f.write(b"\xff" * 10)

    second = store(tmp_path, mq)  # a restarted node
    path = second.fetch(chunk_ref(registry, "2"))
    assert isinstance(path, Path) and path.read_bytes() == INT8.read_bytes() and not part.exists()
    assert second.chunk_stats() == {"chunks_reused": k - 1, "chunks_received": n - k + 1}


@pytest.mark.integration
def test_bad_chunk_refused_then_resumed_after_repush(registry: ModelRegistry, mq: MqttSettings, tmp_path: Path) -> None:
    v4 = registry.get("centernet", "4")
    m = push_chunks(mq, v4, registry.path_of(v4), 64 * 1024).manifest
    data = bytearray(INT8.read_bytes()[5 * 64 * 1024 : 6 * 64 * 1024])
    data[100] ^= 0xFF
    topic5 = Topics(mq.topic_prefix).model_chunk("centernet", "4", 5)
    publish(mq, [(topic5, encode_chunk(5, m.chunks, m.sha256, bytes(data)))])
    s = store(tmp_path, mq, model_download_attempts=2)
    got = s.fetch(chunk_ref(registry, "4"))
    assert isinstance(got, Rejected) and got.reason == "chunk_mismatch", got
    assert got.detail.startswith("chunk 5: sha256")
    assert "2 times" in got.detail and f"{m.chunks - 1} of {m.chunks} chunks on disk" in got.detail
    assert s.chunk_stats() == {"chunks_received": m.chunks - 1, "chunks_reused": 0, "chunks_rejected": 2}
    assert not s.path_for(chunk_ref(registry, "4")).exists()

    push_chunks(mq, v4, registry.path_of(v4), 64 * 1024)  # the operator pushes again
    path = s.fetch(chunk_ref(registry, "4"))
    assert isinstance(path, Path) and path.read_bytes() == INT8.read_bytes()
    assert s.chunk_stats()["chunks_received"] == m.chunks  # only chunk 5 came the second time


@pytest.mark.integration
def test_manifest_checked_before_any_chunk_and_timeouts(
    registry: ModelRegistry, mq: MqttSettings, tmp_path: Path
) -> None:
    t = Topics(mq.topic_prefix)
    cap = 3 * 1024 * 1024
    s = store(tmp_path, mq, model_max_bytes=cap, model_download_timeout_s=1.0)
    v2 = registry.get("centernet", "2")  # 2.3 MB: under the cap
    push_chunks(mq, v2, registry.path_of(v2), 64 * 1024)
    real = retained_manifest(mq, "centernet", "2")
    assert real is not None
    ref = chunk_ref(registry, "2").model_copy(update={"url": mqtt_url("forged", "1")})
    huge = Manifest("forged", "1", 100 * 1024 * 1024, real.sha256, 1024 * 1024, ("0" * 64,) * 100)
    cases = [
        (huge, "too_large", f"manifest offers {huge.size} bytes > edge.model_max_bytes {cap}"),
        (Manifest("forged", "1", real.size + 1, real.sha256, real.chunk_size, real.chunk_sha256), "size_mismatch",
         None),
        (Manifest("forged", "1", real.size, "c" * 64, real.chunk_size, real.chunk_sha256), "checksum_mismatch", None),
    ]  # fmt: skip
    # the real chunks under the forged topics: taken if the manifest were not checked first
    publish(mq, [(t.model_chunk("forged", "1", i), p) for i, p in iter_chunks(io.BytesIO(INT8.read_bytes()), real)])
    for manifest, reason, detail in cases:
        publish(mq, [(t.model_manifest("forged", "1"), encode_manifest(manifest))])
        got = s.fetch(ref)
        assert isinstance(got, Rejected) and got.reason == reason, got
        assert detail is None or got.detail == detail
    assert s.chunk_stats() == {} and not list(tmp_path.glob("*.part"))

    nothing = ref.model_copy(update={"url": mqtt_url("absent", "1")})
    got = s.fetch(nothing)
    assert got == Rejected("download_failed", f"no manifest from the broker in 1 s ({t.model_manifest('absent', '1')})")
    publish(mq, [(t.model_manifest("orphan", "1"), encode_manifest(real))])  # a manifest without chunks
    got = s.fetch(ref.model_copy(update={"url": mqtt_url("orphan", "1")}))
    assert isinstance(got, Rejected) and got.reason == "download_failed"
    assert got.detail.startswith(f"no chunks from the broker in 1 s (0 of {real.chunks} on disk")

    signed_only = store(tmp_path / "signed", mq, model_signing_key=SecretStr("fleet"))
    got = signed_only.fetch(chunk_ref(registry, "2"))
    assert isinstance(got, Rejected) and got.reason == "bad_signature" and signed_only.chunk_stats() == {}


# ----------------------------------------------------------------------------- a live camera


def rejected(tag: str, reason: str) -> Callable[[dict[str, Any]], bool]:
    return lambda status: f"model {tag} rejected: {reason}" in status.get("reason", "")


@pytest.mark.integration
@pytest.mark.slow
def test_live_camera_refuses_a_bad_chunk_then_swaps_over_mqtt(
    make_settings: Callable[..., Settings], registry: ModelRegistry, loop_clip: Path, tmp_path: Path
) -> None:
    s = make_settings(
        edge={"site": "s1", "detector": "centernet-int8", "keepalive_event_s": 0.5, "detector_threads": 1,
              "status_interval_s": 1.0, "model_dir": str(tmp_path / "edge-models"), "final_ack_wait_s": 0.5,
              "model_download_attempts": 2, "model_download_timeout_s": 5.0,
              "cameras": [{"id": "cam-1", "source": str(loop_clip), "loop": True, "realtime": True,
                           "detect_fps": 4}]},
        registry={"dir": str(registry.root), "via": "mqtt", "chunk_bytes": 128 * 1024},
    )  # fmt: skip
    mq, t = s.mqtt, Topics(s.mqtt.topic_prefix)
    config_topic = t.camera("s1", "cam-1", Kind.CONFIG)
    for version in ("2", "4"):
        entry = registry.get("centernet", version)
        push_chunks(mq, entry, registry.path_of(entry), s.registry.chunk_bytes)
    bad = retained_manifest(mq, "centernet", "4")
    assert bad is not None
    data = bytearray(INT8.read_bytes()[: bad.chunk_size])
    data[0] ^= 0xFF
    publish(mq, [(t.model_chunk("centernet", "4", 0), encode_chunk(0, bad.chunks, bad.sha256, bytes(data)))])

    listener = Listener(s)
    stop = threading.Event()
    edge = threading.Thread(target=run_edge, args=(s, stop), daemon=True)
    try:
        edge.start()
        assert wait_until(lambda: bool(listener.cam_events("cam-1")), 90)
        ((_, record),) = publish_records(s, "s1", "centernet", "4", cameras=["cam-1"])
        publish(mq, [(config_topic, record)])
        assert wait_until(lambda: listener.any_status("cam-1", rejected("centernet@4", "chunk_mismatch")), 60), (
            listener.status("cam-1"))  # fmt: skip
        n = len(listener.cam_events("cam-1"))
        assert wait_until(lambda: len(listener.cam_events("cam-1")) > n + 2, 30)  # the old model keeps running
        assert {e.det for e in listener.cam_events("cam-1")} == {DEFAULT_INT8_TAG}
        assert listener.status("cam-1")["metrics"]["model_update"] == "rejected"

        ((_, record),) = publish_records(s, "s1", "centernet", "2", cameras=["cam-1"])
        publish(mq, [(config_topic, record)])
        assert wait_until(lambda: listener.status("cam-1").get("model") == "centernet@2", 60), listener.status("cam-1")
        n = len(listener.cam_events("cam-1"))
        assert wait_until(lambda: any(e.det == "centernet@2" for e in listener.cam_events("cam-1")[n:]), 30)
        assert (tmp_path / "edge-models" / f"centernet-2-{registry.get('centernet', '2').sha256[:16]}.tflite").is_file()
    finally:
        stop.set()
        edge.join(30)
        listener.close()
