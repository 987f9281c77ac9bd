"""Bad video sources and garbage config on a running edge node: a clear status per camera, the
node and its healthy camera keep running, the last good config stays. (A truncated file, a file
that disappears, a missing file and corrupt or resized frames are covered in tests/edge_stage.)"""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.chaos.rig import ChaosEnv
from pipeline.edge_stage.runner import EdgeSummary, run_edge
from pipeline.local_stack.ports import free_port
from pipeline.settings import SAMPLE_CLIP, Settings
from pipeline.testing import wait_until
from pipeline.topics import Kind, Topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class Watch:
    """Records retained status messages of every camera; publishes config as the bridge would."""

    def __init__(self, s: Settings) -> None:
        self.status: list[dict[str, Any]] = []
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watch", protocol=mqtt.MQTTv5)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{s.mqtt.topic_prefix}/+/+/status", 1)
        self.c.on_message = lambda c, u, m: self.status.append(json.loads(m.payload))
        self.c.connect(s.mqtt.host, s.mqtt.port)
        self.c.loop_start()

    def of(self, cam: str) -> list[dict[str, Any]]:
        return [x for x in list(self.status) if x.get("cam") == cam]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _settings(env: ChaosEnv, cameras: list[dict[str, Any]]) -> Settings:
    from pipeline.chaos.stream import ScriptedStream

    mq = env.mqtt_broker()
    s = env.settings(ScriptedStream(1, site="s1"), mq, env.kafka_broker())
    edge = s.edge.model_copy(update={"cameras": [], "detector": "hog", "final_ack_wait_s": 0.5,
                                     "status_interval_s": 1.0})  # fmt: skip
    return s.model_copy(update={"edge": type(edge).model_validate({**edge.model_dump(), "cameras": cameras})})


def test_bad_sources_fail_clearly_and_the_good_camera_keeps_running(chaos_env: ChaosEnv, tmp_path: Path) -> None:
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    closed = f"http://127.0.0.1:{free_port()}/x"
    s = _settings(chaos_env, [
        {"id": "zero", "source": str(zero), "reopen_attempts": 2},
        {"id": "url", "source": closed, "reopen_attempts": 2},
        {"id": "good", "source": str(SAMPLE_CLIP), "loop": True, "realtime": True, "detect_fps": 1.0},
    ])  # fmt: skip
    watch = Watch(s)
    stop = threading.Event()
    result: list[EdgeSummary] = []
    t = threading.Thread(target=lambda: result.append(run_edge(s, stop)), daemon=True)
    t.start()
    try:
        assert wait_until(lambda: any(x["state"] == "failed" for x in watch.of("zero")), 60)
        assert wait_until(lambda: any(x["state"] == "failed" for x in watch.of("url")), 60)
        assert wait_until(lambda: any(x["state"] == "online" for x in watch.of("good")), 60)
        # after both failures, the good camera's frame counter still moves on: the node runs on
        read_after_failures = watch.of("good")[-1]["metrics"]["frames_read"]
        assert wait_until(lambda: watch.of("good")[-1]["metrics"]["frames_read"] > read_after_failures, 30)
        assert t.is_alive(), "the node keeps running with two failed cameras"
    finally:
        stop.set()
        t.join(60)
        watch.close()
    reasons = {c: next(x["reason"] for x in watch.of(c) if x["state"] == "failed") for c in ("zero", "url")}
    assert all(reasons.values()), reasons
    summary = result[0]
    assert summary.camera_states["zero"] == summary.camera_states["url"] == "failed"
    assert summary.frames_read > 0


def test_config_garbage_is_rejected_with_a_reason_and_the_last_good_config_stays(chaos_env: ChaosEnv) -> None:
    s = _settings(chaos_env, [{"id": "cam-1", "source": str(SAMPLE_CLIP), "loop": True, "realtime": True,
                               "detect_fps": 1.0}])  # fmt: skip
    topic = Topics(s.mqtt.topic_prefix).camera("s1", "cam-1", Kind.CONFIG)
    watch = Watch(s)
    stop = threading.Event()
    t = threading.Thread(target=run_edge, args=(s, stop), daemon=True)
    t.start()

    def send(payload: bytes) -> None:
        watch.c.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)

    def last() -> dict[str, Any]:
        return watch.of("cam-1")[-1] if watch.of("cam-1") else {}

    try:
        assert wait_until(lambda: last().get("state") == "online", 60)
        send(json.dumps({"v": 1, "site": "s1", "cam": "cam-1", "rev": 5, "config": {"min_score": 0.6}}).encode())
        assert wait_until(lambda: "config rev 5 applied" in last().get("reason", ""), 30)
        garbage = [
            b"\xff\xfe not utf-8",
            b"{not json",
            b"[1,2]",
            json.dumps({"v": 2, "site": "s1", "cam": "cam-1", "rev": 6, "config": {}}).encode(),
            json.dumps({"v": 1, "site": "s1", "cam": "cam-1", "rev": 7, "config": {"min_scor": 0.4}}).encode(),
            json.dumps({"v": 1, "site": "s1", "cam": "cam-1", "rev": 8, "config": {"min_score": 7}}).encode(),
            json.dumps({"v": 1, "site": "s1", "cam": "cam-1", "rev": "9", "config": {"min_score": 0.4}}).encode(),
        ]

        def rejected_at_least(n: int) -> bool:
            return bool(last().get("metrics", {}).get("config_rejected", 0) >= n)

        for i, payload in enumerate(garbage, 1):
            send(payload)
            assert wait_until(functools.partial(rejected_at_least, i), 30), (
                payload,
                watch.of("cam-1")[-3:],
            )
            assert "config rejected" in last()["reason"], last()
        assert last()["metrics"]["config_rev"] == 5, "the last good config stays"
        assert t.is_alive()
    finally:
        stop.set()
        t.join(60)
        watch.c.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        watch.close()
