"""Network sources that hang: a server that accepts and never answers, and a stream that stalls.

Without FFmpeg open/read timeouts each of these holds a camera thread for ~30 s per attempt
(or until TCP gives up); with ``stream_timeout_s`` the camera reports it and reopens promptly."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from pipeline.edge_stage.capture import Backoff, Capture, SourceState
from pipeline.local_stack.ports import free_port
from pipeline.metrics import Registry
from pipeline.testing import wait_until
from tests.edge_stage.mjpeg_stream import MjpegCamera

pytestmark = pytest.mark.integration


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts TCP connections, reads nothing, answers nothing."""
    srv = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except TimeoutError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/video.mjpg"
    stop.set()
    t.join(5)
    for c in held:
        c.close()
    srv.close()


def _capture(
    source: str, states: list[SourceState], stop: threading.Event, reopen_attempts: int | None = None
) -> Capture:
    return Capture(
        "cam-x", source, detect_fps=lambda: 5.0, stop=stop, metrics=Registry(), on_state=states.append,
        stream_timeout_s=1.0, backoff=Backoff(base_s=0.1, cap_s=0.2), reopen_attempts=reopen_attempts,
    )  # fmt: skip


def test_url_that_never_answers_fails_within_the_stream_timeout(silent_server: str) -> None:
    states: list[SourceState] = []
    cap = _capture(silent_server, states, threading.Event(), reopen_attempts=3)
    started = time.monotonic()
    assert cap.next() is None
    elapsed = time.monotonic() - started
    cap.close()
    assert [s.state for s in states] == ["reconnecting", "failed"]
    assert "cannot open source" in states[-1].reason
    # 3 attempts x 1 s timeout + backoff; FFmpeg's default would take ~30 s per attempt. The
    # margin is for a loaded machine, far below the 90 s the defaults would need.
    assert elapsed < 20, f"{elapsed:.1f} s for 3 attempts"


def test_stalled_stream_is_detected_and_reopened() -> None:
    camera = MjpegCamera(free_port(), fps=20, frames=10, stall_after=8).start()
    states: list[SourceState] = []
    stop = threading.Event()
    cap = _capture(camera.url, states, stop)
    frames: list[int] = []

    def consume() -> None:
        while (frame := cap.next()) is not None:
            frames.append(frame.index)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    try:
        assert wait_until(lambda: bool(frames) and camera.clients >= 1, 20), "first connection streams frames"
        # The camera stalls after 8 frames with the socket open: the read timeout ends the read,
        # the camera goes "reconnecting" and connects again (a fresh connection streams again).
        assert wait_until(lambda: camera.clients >= 2, 20), f"no reconnect; states {states}"
        assert any(s.state == "reconnecting" for s in states), states
    finally:
        stop.set()
        camera.stop()
        cap.close()
        t.join(10)
    assert not t.is_alive()
