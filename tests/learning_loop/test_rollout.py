"""Model rollout on a real node: `models publish` -> Kafka config topic -> the real bridge ->
retained MQTT config -> the edge downloads from the registry's HTTP server, verifies, smoke-tests
and swaps live. Real Mosquitto, Tansu, the shipped CenterNet files as new versions."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.bridge.service import Bridge, require_producer
from pipeline.cloud_stage.command import config_record, produce_configs
from pipeline.edge_stage.runner import run_edge
from pipeline.model_registry.command import publish_records
from pipeline.model_registry.file_server import RegistryServer
from pipeline.model_registry.registry import model_ref
from pipeline.model_registry.rollout import model_config
from pipeline.settings import Settings
from pipeline.testing import wait_until
from tests.learning_loop.loop_helpers import DEFAULT_INT8_TAG, Listener, registry_with_versions

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def rejected(tag: str, reason: str) -> Callable[[dict[str, Any]], bool]:
    return lambda status: f"model {tag} rejected: {reason}" in status.get("reason", "")


def test_rollout_reject_and_rollback(make_settings: Callable[..., Settings], loop_clip: Path, tmp_path: Path) -> None:
    reg = registry_with_versions(tmp_path / "registry")
    # centernet@4 is registered intact, then damaged on the server's disk: a corrupted transfer
    (tmp_path / "v4").mkdir()
    (tmp_path / "v4" / "centernet.tflite").write_bytes((tmp_path / "registry-src" / "centernet.tflite").read_bytes())
    v4 = reg.add(tmp_path / "v4" / "centernet.tflite", "centernet", "4")
    stored = reg.path_of(v4)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = os.urandom(64)
    stored.write_bytes(bytes(data))
    # centernet@5: not a model at all, but with the right checksum (a bad file)
    (tmp_path / "v5").mkdir()
    (tmp_path / "v5" / "junk.tflite").write_bytes(os.urandom(50_000))
    reg.add(tmp_path / "v5" / "junk.tflite", "centernet", "5", input_size=(512, 512))

    camera = {"source": str(loop_clip), "loop": True, "realtime": True, "detect_fps": 4}
    cams = [{"id": c, **camera} for c in ("cam-1", "cam-2")]
    with RegistryServer(reg) as server:
        s = make_settings(
            edge={"site": "s1", "detector": "centernet-int8", "cameras": cams, "keepalive_event_s": 0.5,
                  "detector_threads": 1, "status_interval_s": 1.0, "model_dir": str(tmp_path / "edge-models"),
                  "final_ack_wait_s": 0.5},
            registry={"dir": str(reg.root), "base_url": server.url},
        )  # fmt: skip
        listener = Listener(s)
        bridge = Bridge(s, require_producer(s, 30))
        bridge.start()
        stop = threading.Event()
        edge = threading.Thread(target=run_edge, args=(s, stop), daemon=True)
        try:
            assert bridge.wait_ready(60), "bridge not ready"
            edge.start()
            assert wait_until(lambda: all(listener.cam_events(c) for c in ("cam-1", "cam-2")), 90)
            assert {e.det for e in listener.events} == {DEFAULT_INT8_TAG}

            # 1. staged rollout: centernet@2 to cam-2 only, through Kafka and the bridge
            produce_configs(s, publish_records(s, "s1", "centernet", "2", cameras=["cam-2"]))
            assert wait_until(lambda: listener.status("cam-2").get("model") == "centernet@2", 60)
            n2 = len(listener.cam_events("cam-2"))
            assert wait_until(lambda: any(e.det == "centernet@2" for e in listener.cam_events("cam-2")[n2:]), 30)
            dets2 = [e.det for e in listener.cam_events("cam-2")]
            first_new = dets2.index("centernet@2")
            assert set(dets2[first_new:]) == {"centernet@2"}  # swapped between frames, never back
            assert listener.status("cam-2")["metrics"]["model_previous"] == DEFAULT_INT8_TAG

            # 2. cam-1: a wrong checksum, a corrupted download, a file that is no model: all refused
            bad_sum = model_ref(reg.get("centernet", "3"), server.url).model_copy(update={"sha256": "ab" * 32})
            produce_configs(s, [("cam-1", config_record("s1", "cam-1", model_config(bad_sum)))])
            assert wait_until(lambda: listener.any_status("cam-1", rejected("centernet@3", "checksum_mismatch")), 60)
            for version, reason in (("4", "checksum_mismatch"), ("5", "load_failed")):
                produce_configs(s, publish_records(s, "s1", "centernet", version, cameras=["cam-1"]))
                seen = rejected(f"centernet@{version}", reason)
                assert wait_until(lambda: listener.any_status("cam-1", seen), 60), listener.status("cam-1")  # noqa: B023
            n1 = len(listener.cam_events("cam-1"))
            assert wait_until(lambda: len(listener.cam_events("cam-1")) > n1 + 2, 30)  # the old model keeps running
            assert {e.det for e in listener.cam_events("cam-1")} == {DEFAULT_INT8_TAG}
            assert listener.status("cam-1")["model"] == DEFAULT_INT8_TAG
            assert listener.status("cam-1")["metrics"]["model_update"] == "rejected"
            assert not list((tmp_path / "edge-models").glob("*.part"))

            # 3. rollback: cam-2 back to its packaged model (still loaded), then to centernet@2 again
            #    (its file still on the node: no second download)
            produce_configs(s, publish_records(s, "s1", None, None, cameras=["cam-2"], default=True))
            assert wait_until(lambda: listener.status("cam-2").get("model") == DEFAULT_INT8_TAG, 60)
            n2 = len(listener.cam_events("cam-2"))
            assert wait_until(lambda: any(e.det == DEFAULT_INT8_TAG for e in listener.cam_events("cam-2")[n2:]), 30)
            downloads = [p for p, _ in server.requests if "/centernet/2/" in p]
            produce_configs(s, publish_records(s, "s1", "centernet", "2", cameras=["cam-2"]))
            assert wait_until(lambda: listener.status("cam-2").get("model") == "centernet@2", 60)
            assert [p for p, _ in server.requests if "/centernet/2/" in p] == downloads == downloads[:1]
            assert {e.det for e in listener.cam_events("cam-1")} == {DEFAULT_INT8_TAG}  # cam-1 untouched
        finally:
            stop.set()
            if edge.ident is not None:  # not started when the bridge never got ready
                edge.join(30)
            bridge.close()
            listener.close()
