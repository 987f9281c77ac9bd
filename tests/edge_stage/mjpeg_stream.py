"""A local MJPEG-over-HTTP camera (multipart/x-mixed-replace, what many IP cameras serve).

Streams the sample clip's frames at a fixed rate, looping, to every client; ``stop()`` closes
the listener and every open stream (the camera goes away), ``start()`` brings it back on the
same port.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2

from pipeline.settings import SAMPLE_CLIP

BOUNDARY = "frame"


def _jpegs(src: Path, count: int) -> list[bytes]:
    cap = cv2.VideoCapture(str(src))
    out: list[bytes] = []
    while len(out) < count:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    cap.release()
    return out


class MjpegCamera:
    def __init__(
        self, port: int, fps: float = 10.0, frames: int = 40, src: Path = SAMPLE_CLIP, stall_after: int | None = None
    ) -> None:
        self.port = port
        self.stall_after = stall_after  # frames sent per connection, then silence with the socket open
        self.period = 1.0 / fps
        self.frames = _jpegs(src, frames)
        self.url = f"http://127.0.0.1:{port}/stream.mjpg"
        self._server: ThreadingHTTPServer | None = None
        self._alive = threading.Event()
        self.clients = 0

    def start(self) -> MjpegCamera:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                camera.clients += 1
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                i = 0
                try:
                    while camera._alive.is_set():
                        if camera.stall_after is not None and i >= camera.stall_after:
                            time.sleep(0.05)  # a stalled encoder: connection up, no bytes
                            continue
                        jpg = camera.frames[i % len(camera.frames)]
                        self.wfile.write(
                            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpg)}\r\n\r\n".encode()
                            + jpg
                            + b"\r\n"
                        )
                        i += 1
                        time.sleep(camera.period)
                except OSError:
                    pass  # the client went away
                finally:
                    # Close hard: a camera that dies does not say goodbye.
                    self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._alive.set()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="mjpeg-camera", daemon=True).start()
        return self

    def stop(self) -> None:
        self._alive.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
