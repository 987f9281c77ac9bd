"""Registry, file server (Range), download store, smoke test, rollback on failures, selection:
real model files, a real HTTP server on loopback, no brokers."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from pipeline.cloud_stage.verification import CropDetection, Verdict
from pipeline.edge_stage.capture import Image
from pipeline.edge_stage.detectors.base import Detector, Roi
from pipeline.edge_stage.detectors.tflite_centernet import CenterNetDetector
from pipeline.edge_stage.model_download import ModelStore, file_sha256
from pipeline.edge_stage.model_swap import CameraModels, smoke_test, synthetic_frame
from pipeline.errors import ConfigError
from pipeline.hard_examples.selection import sampled, select
from pipeline.local_stack.ports import free_port
from pipeline.model_registry.command import publish_records
from pipeline.model_registry.file_server import RegistryServer
from pipeline.model_registry.registry import ModelRegistry, model_ref
from pipeline.model_registry.rollout import bucket, select_cameras
from pipeline.model_signing import signed
from pipeline.operators.schema import Event, Rejected
from pipeline.operators.tracking import Detection
from pipeline.settings import EdgeSettings, Settings
from pipeline.testing import wait_until
from tests.learning_loop.loop_helpers import DEFAULT_INT8_TAG, INT8, registry_with_versions

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ModelRegistry, RegistryServer]]:
    reg = registry_with_versions(tmp_path_factory.mktemp("reg") / "registry")
    with RegistryServer(reg) as server:
        yield reg, server


def test_registry_add_list_and_refs(served: tuple[ModelRegistry, RegistryServer], tmp_path: Path) -> None:
    reg, server = served
    assert [e.tag for e in reg.entries()] == ["centernet@2", "centernet@3"]
    v2 = reg.get("centernet", "2")
    assert v2.sha256 == file_sha256(INT8) and v2.size == INT8.stat().st_size and v2.input_size == (512, 512)
    with pytest.raises(ConfigError, match="already"):
        reg.add(INT8, "centernet", "2")
    with pytest.raises(ConfigError, match="bad model version"):
        reg.add(INT8, "centernet", "../x")
    ref = model_ref(v2, server.url)
    assert ref.url == f"{server.url}/models/centernet/2/centernet.tflite" and ref.tag == "centernet@2"


def test_staged_selection_is_deterministic(tmp_path: Path) -> None:
    cams = [f"cam-{i}" for i in range(200)]
    half, tenth = select_cameras(cams, 50), select_cameras(cams, 10)
    assert set(tenth) <= set(half) and 60 <= len(half) <= 140 and select_cameras(cams, 50) == half
    assert all(bucket(c) < 10 for c in tenth) and select_cameras(cams, 100) == sorted(cams)
    s = Settings(registry={"dir": str(tmp_path / "empty")})
    with pytest.raises(ConfigError, match="not in the registry"):
        publish_records(s, "site-a", "centernet", "9", cameras=["cam-1"])
    records = publish_records(s, "site-a", None, None, cameras=["cam-1", "cam-2"], default=True)
    assert [c for c, _ in records] == ["cam-1", "cam-2"]
    assert json.loads(records[0][1])["config"] == {"model": None}


def test_file_server_ranges(served: tuple[ModelRegistry, RegistryServer]) -> None:
    reg, server = served
    url = server.url + reg.get("centernet", "2").url_path()
    data = INT8.read_bytes()
    with urllib.request.urlopen(url) as r:
        assert r.status == 200 and r.read() == data and r.headers["Accept-Ranges"] == "bytes"
    req = urllib.request.Request(url, headers={"Range": "bytes=1000-"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 206 and r.read() == data[1000:]
        assert r.headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Range": f"bytes={len(data)}-"}))
    assert bad.value.code == 416
    bad.value.close()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(server.url + "/models/centernet/2/../../x")
    assert missing.value.code == 404
    missing.value.close()


def test_store_resumes_and_rejects(served: tuple[ModelRegistry, RegistryServer], tmp_path: Path) -> None:
    reg, server = served
    store = ModelStore(EdgeSettings(model_dir=tmp_path / "models"))
    ref = model_ref(reg.get("centernet", "2"), server.url)
    part = store.path_for(ref).with_name(store.path_for(ref).name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(INT8.read_bytes()[:700_000])  # an interrupted download
    before = len(server.requests)
    path = store.fetch(ref)
    assert isinstance(path, Path) and file_sha256(path) == ref.sha256 and not part.exists()
    assert server.requests[before:] == [(reg.get("centernet", "2").url_path(), 206)]  # resumed, not restarted
    assert store.fetch(ref) == path and len(server.requests) == before + 1  # verified copy on disk: no download

    wrong = ref.model_copy(update={"sha256": "0" * 64})
    got = store.fetch(wrong)
    assert isinstance(got, Rejected) and got.reason == "checksum_mismatch"
    assert not list(store.root.glob("*.part")) and not store.path_for(wrong).exists()
    short = ref.model_copy(update={"size": ref.size - 10, "sha256": "1" * 64})
    got = store.fetch(short)
    assert isinstance(got, Rejected) and got.reason == "size_mismatch"
    small = ModelStore(EdgeSettings(model_dir=tmp_path / "m2", model_max_bytes=1024))
    assert small.fetch(ref) == Rejected("too_large", f"{ref.size} bytes > edge.model_max_bytes 1024")
    gone = ref.model_copy(update={"version": "7", "url": server.url + "/models/centernet/7/x.tflite"})
    got = store.fetch(gone)
    assert isinstance(got, Rejected) and got.reason == "download_failed" and "404" in got.detail
    newer = ref.model_copy(update={"version": "8", "min_edge_version": "99.0"})
    assert isinstance(r := store.fetch(newer), Rejected) and r.reason == "edge_too_old"
    # nothing listens there: each attempt is transient, retried, then one clear rejection
    down = ref.model_copy(update={"version": "9", "url": f"http://127.0.0.1:{free_port()}/x.tflite"})
    two = ModelStore(EdgeSettings(model_dir=tmp_path / "m3", model_download_attempts=2))
    got = two.fetch(down)
    assert isinstance(got, Rejected) and got.reason == "download_failed"
    assert got.detail.startswith("2 attempts: URLError"), got.detail


def test_signed_references_only_when_a_key_is_set(served: tuple[ModelRegistry, RegistryServer], tmp_path: Path) -> None:
    reg, server = served
    key = SecretStr("fleet-key")
    store = ModelStore(EdgeSettings(model_dir=tmp_path / "signed", model_signing_key=key))
    plain = model_ref(reg.get("centernet", "2"), server.url)
    before = len(server.requests)
    unsigned = store.fetch(plain)
    assert isinstance(unsigned, Rejected) and unsigned.reason == "bad_signature" and "unsigned" in unsigned.detail
    forged = signed(plain, SecretStr("another-key"))
    assert isinstance(r := store.fetch(forged), Rejected) and r.reason == "bad_signature"
    # A valid signature moved onto another file's hash does not verify either.
    good = signed(plain, key)
    tampered = good.model_copy(update={"sha256": "2" * 64})
    assert isinstance(r := store.fetch(tampered), Rejected) and r.reason == "bad_signature"
    assert len(server.requests) == before, "nothing is downloaded for a reference that fails its signature"
    path = store.fetch(good)
    assert isinstance(path, Path) and file_sha256(path) == good.sha256
    # Without a key configured the edge takes unsigned references (sha256 still checked).
    assert isinstance(ModelStore(EdgeSettings(model_dir=tmp_path / "plain")).fetch(plain), Path)


class Flaky(Detector):
    """The real int8 detector whose inference fails on demand (to exercise the rollback)."""

    def __init__(self, inner: Detector, name: str, version: str) -> None:
        self.inner, self.name, self.version = inner, name, version
        self.labels, self.input_size = inner.labels, inner.input_size
        self.fail = False

    def detect(self, frame_bgr: Image, roi: Roi | None = None) -> list[Detection]:
        if self.fail:
            raise RuntimeError("tensor arena corrupted")
        return self.inner.detect(frame_bgr, roi)


def test_smoke_test_and_rollback_after_failures(served: tuple[ModelRegistry, RegistryServer], tmp_path: Path) -> None:
    reg, server = served
    frame = synthetic_frame()
    real = CenterNetDetector(INT8, name="centernet-int8", version="human-models-3.0.4")
    assert smoke_test(real, frame) is None
    edge = EdgeSettings(model_dir=tmp_path / "models", model_max_failures=3)
    reports: list[tuple[str, str, str | None]] = []
    models = CameraModels("cam-1", edge, ModelStore(edge), lambda: real, lambda *a: reports.append(a))
    assert models.start(real).tag == DEFAULT_INT8_TAG
    models.request(model_ref(reg.get("centernet", "2"), server.url))
    assert wait_until(lambda: models.state == "ready"), models.snapshot()
    new = models.poll()
    assert new is not None and new.tag == "centernet@2" and reports[-1][0] == "active"
    # wrap the real v2 interpreter so that its inference fails from now on
    assert models.active is not None
    flaky = Flaky(models.active.detector, "centernet", "2")
    models.active.detector = flaky
    flaky.fail = True
    assert models.on_error(RuntimeError("1")) is None and models.on_error(RuntimeError("2")) is None
    restored = models.on_error(RuntimeError("3"))
    assert restored is real and reports[-1][0] == "rolled_back" and reports[-1][2] == DEFAULT_INT8_TAG
    model_error = models.snapshot()["model_error"]
    assert isinstance(model_error, str) and model_error.startswith("rolled_back: centernet@2 failed 3 times")
    with pytest.raises(RuntimeError):  # the packaged model failing has nothing to fall back to
        models.on_error(RuntimeError("packaged"))
    models.close()

    # A restarted node: the retained config still names centernet@2, which is quarantined on
    # disk and not loaded again; another version is tried normally.
    reports.clear()
    again = CameraModels("cam-1", edge, ModelStore(edge), lambda: real, lambda *a: reports.append(a))
    again.start(real)
    again.request(model_ref(reg.get("centernet", "2"), server.url))
    assert wait_until(lambda: again.state == "rejected"), again.snapshot()
    assert reports[-1][0] == "rejected" and "quarantined" in reports[-1][1] and "inference errors" in reports[-1][1]
    assert again.poll() is None and again.active is not None and again.active.detector is real
    again.request(model_ref(reg.get("centernet", "3"), server.url))
    assert wait_until(lambda: again.state == "ready"), again.snapshot()
    swapped = again.poll()
    assert swapped is not None and swapped.tag == "centernet@3"
    again.close()


def _event(eid: str, label: str = "person") -> Event:
    return Event(id=eid, site="s", cam="c", ts=1_700_000_000_000, seq=1, type="track_started", track=1,
                 label=label, score=0.1, box=(0.1, 0.1, 0.3, 0.5), det="centernet@2", crop="x")  # fmt: skip


def test_selection_kinds() -> None:
    car = CropDetection("car", 0.8, (0.2, 0.2, 0.8, 0.8), True)
    contradicted = Verdict(0.05, 0.1, "contradicted", "centernet@1", detections=(car,))
    sel = select(_event("a"), contradicted, 0.0, 0.4)
    assert sel is not None and sel.kind == "contradicted" and sel.cloud_label == "car"
    person = CropDetection("person", 0.9, (0.2, 0.1, 0.8, 0.9), True)
    verified = Verdict(0.9, 0.8, "verified", "centernet@1", detections=(person, car))
    assert (s := select(_event("b"), verified, 0.0, 0.4)) is not None and s.kind == "missed_label"
    assert s.missed_labels == ("car",)
    plain = Verdict(0.9, 0.8, "verified", "centernet@1", detections=(person,))
    ids = [f"e{i}" for i in range(400)]
    chosen = [i for i in ids if select(_event(i), plain, 0.25, 0.4) is not None]
    assert chosen == [i for i in ids if sampled(i, 0.25)] and 60 < len(chosen) < 140
    assert select(_event("c"), Verdict(None, 0.1, "unverified"), 1.0, 0.4) is None
    assert np.isclose(sum(sampled(i, 1.0) for i in ids), 400)


def test_prune_keeps_recent_partial_downloads_and_removes_abandoned_ones(tmp_path: Path) -> None:
    import os
    import time

    edge = EdgeSettings(model_dir=tmp_path / "models", model_keep_versions=2)
    store = ModelStore(edge)
    root = edge.model_dir
    root.mkdir(parents=True, exist_ok=True)
    fresh, old, old_mqtt = root / "a-1-x.tflite.part", root / "b-1-y.tflite.part", root / "c-1-z.tflite.mqtt.part"
    models = [root / f"m-{i}-h.tflite" for i in range(4)]
    for i, p in enumerate([fresh, old, old_mqtt, *models]):
        p.write_bytes(b"x")
        os.utime(p, (time.time() - 3600 * i, time.time() - 3600 * i))
    day_ago = time.time() - 25 * 3600
    os.utime(old, (day_ago, day_ago))
    os.utime(old_mqtt, (day_ago, day_ago))
    store.prune()
    assert fresh.exists() and not old.exists() and not old_mqtt.exists()
    assert [p.exists() for p in models] == [True, True, False, False]  # the newest 2 spare files stay
