"""A model file as retained chunks from the broker (model URL ``mqtt://models/<name>/<version>``).

For sites that reach only the broker. One :class:`ChunkDownload` per fetch, on the camera's update
thread, with its own short-lived MQTT client (clean session; the node's publisher keeps its
persistent session free of chunk subscriptions):

1. subscribe to the manifest (:mod:`~pipeline.operators.chunk_codec`); refuse it before any chunk
   is taken when its size is above ``edge.model_max_bytes`` (``too_large``) or its size or sha256
   differ from the model reference (``size_mismatch``, ``checksum_mismatch``): the reference, not
   the manifest, is what the cloud signed;
2. the ``.part`` file is the file itself, sparse, at full size; a chunk already on disk is one
   whose bytes there hash to the manifest's digest, so a restart keeps them without any
   bookkeeping file, and a chunk torn by a crash is simply fetched again;
3. subscribe to the missing chunks, ``WINDOW`` topics at a time (the broker sends each retained
   chunk once per subscription; the window bounds what it queues for us); each chunk is checked
   (header names this file, length, sha256) and written at its offset by paho's network thread, so
   at most one chunk is in memory; a bad chunk is counted and asked for again, up to
   ``edge.model_download_attempts`` times (``chunk_mismatch``);
4. the whole file's sha256 against the reference, as on the HTTP path.

``edge.model_download_timeout_s`` without a manifest or chunk ends it (``download_failed``); the
verified chunks stay on disk for the next attempt. Results are values, never exceptions.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from pipeline.edge_stage.model_download import file_sha256
from pipeline.mqtt_client import connect_properties, make_client, paho_keepalive
from pipeline.operators.chunk_codec import (
    MAX_CHUNK_BYTES,
    MAX_MANIFEST_BYTES,
    Manifest,
    decode_chunk,
    decode_manifest,
    parse_mqtt_url,
)
from pipeline.operators.schema import Rejected
from pipeline.settings import ModelRef, MqttSettings
from pipeline.topics import Topics

log = logging.getLogger(__name__)
WINDOW = 16
# Chunk or manifest plus topic and properties; the broker drops anything larger instead of sending it.
MAX_PACKET = max(MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES) + 64 * 1024
Count = Callable[[str, int], None]


class ChunkDownload:
    def __init__(
        self,
        ref: ModelRef,
        part: Path,
        mqtt_settings: MqttSettings,
        *,
        client_id: str,
        max_bytes: int,
        timeout_s: float,
        attempts: int,
        stop: threading.Event,
        count: Count,
    ) -> None:
        self.ref, self.part, self.settings = ref, part, mqtt_settings
        self.client_id, self.max_bytes, self.timeout_s, self.attempts = client_id, max_bytes, timeout_s, attempts
        self.stop, self.count = stop, count
        parsed = parse_mqtt_url(ref.url)
        self.name, self.version = parsed if parsed else (ref.name, ref.version)
        self.topics = Topics(mqtt_settings.topic_prefix)
        self.manifest_topic = self.topics.model_manifest(self.name, self.version)
        self._cond = threading.Condition()
        # everything below is shared with paho's network thread, under _cond
        self._connected = False
        self._subs: list[str] = []
        self._last = time.monotonic()  # last manifest or chunk message: the idle timeout runs from it
        self._manifest_raw: bytes | None = None
        self._manifest: Manifest | None = None
        self._fd: int | None = None
        self._have: set[int] = set()
        self._window: set[int] = set()
        self._answered: set[int] = set()
        self._bad: Counter[int] = Counter()
        self._bad_why: dict[int, Rejected] = {}  # the last refusal of each bad chunk
        self._error: Rejected | None = None

    # ------------------------------------------------------------------ network thread

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            with self._cond:
                self._error = Rejected("download_failed", f"MQTT connect refused: {reason}")
                self._cond.notify_all()
            return
        with self._cond:
            self._connected = True
            subs = list(self._subs)  # a reconnect (clean session) lost them
            self._cond.notify_all()
        if subs:
            client.subscribe([(t, 1) for t in subs])

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._cond:
            self._connected = False

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        refused = [c for c in codes if getattr(c, "is_failure", False)]
        if refused:
            with self._cond:
                self._error = Rejected("download_failed", f"broker refused the subscription: {refused[0]} (ACL?)")
                self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._take(msg.topic, bytes(msg.payload))  # paho hands bytes: no copy
        except Exception as exc:  # e.g. disk full; paho would otherwise end its network thread
            log.exception("model %s: chunk handling failed", self.ref.tag)
            with self._cond:
                self._error = Rejected("download_failed", f"{type(exc).__name__}: {exc}"[:300])
                self._cond.notify_all()

    def _take(self, topic: str, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained message: as if absent
        if topic == self.manifest_topic:
            with self._cond:
                if self._manifest is None:
                    self._manifest_raw, self._last = payload, time.monotonic()
                    self._cond.notify_all()
            return
        level = topic.rsplit("/", 1)[-1]
        if not level.isdigit():
            return
        index = int(level)
        with self._cond:
            manifest, fd = self._manifest, self._fd
            if manifest is None or fd is None or index not in self._window:
                return  # a late delivery of an earlier window
            self._last = time.monotonic()
            if index in self._have:
                self.count("chunks_duplicate", 1)
                return
        chunk = decode_chunk(payload, manifest)
        if not isinstance(chunk, Rejected) and chunk.index != index:
            chunk = Rejected("bad_chunk", f"chunk {chunk.index} on the topic of chunk {index}")
        if isinstance(chunk, Rejected):
            self.count("chunks_rejected", 1)
            log.warning("model %s: chunk %d refused: %s %s", self.ref.tag, index, chunk.reason, chunk.detail)
            with self._cond:
                self._bad[index] += 1
                self._bad_why[index] = chunk
                self._answered.add(index)
                self._cond.notify_all()
            return
        os.pwrite(fd, chunk.data, manifest.span(index)[0])
        self.count("chunks_received", 1)
        with self._cond:
            self._have.add(index)
            self._answered.add(index)
            self._cond.notify_all()

    # ------------------------------------------------------------------ update thread

    def _wait(self, done: Callable[[], bool]) -> Rejected | None:
        """Until ``done()`` (called under the lock); a Rejected on stop, error or idle timeout."""
        with self._cond:
            while True:
                if self._error is not None:
                    return self._error
                if done():
                    return None
                if self.stop.is_set():
                    return Rejected("stopped", "edge stopping")
                idle = time.monotonic() - self._last
                if idle >= self.timeout_s:
                    return Rejected("timeout", "")
                self._cond.wait(min(0.5, self.timeout_s - idle))

    def _subscribe(self, client: mqtt.Client, topics: list[str]) -> None:
        with self._cond:
            old, self._subs = self._subs, topics
            self._last = time.monotonic()
            connected = self._connected
        if old:
            client.unsubscribe(old)
        if topics and connected:  # else on_connect subscribes them
            client.subscribe([(t, 1) for t in topics])

    def run(self) -> Path | Rejected:
        client = make_client(self.settings, self.client_id, max_queued=4 * WINDOW)
        client.on_connect, client.on_disconnect = self._on_connect, self._on_disconnect
        client.on_subscribe, client.on_message = self._on_subscribe, self._on_message
        s = self.settings
        props = connect_properties(receive_maximum=WINDOW, maximum_packet_size=MAX_PACKET)
        keepalive = paho_keepalive(s.keepalive_s)
        client.connect_async(s.host, s.port, keepalive=keepalive, clean_start=True, properties=props)
        client.loop_start()
        try:
            return self._run(client)
        finally:
            client.disconnect()
            client.loop_stop()  # no chunk is written after this
            with self._cond:
                fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)

    def _run(self, client: mqtt.Client) -> Path | Rejected:
        t = f"{self.timeout_s:g}"
        if (r := self._wait(lambda: self._connected)) is not None:
            return _timeout(r, f"MQTT broker {self.settings.host}:{self.settings.port} not reachable in {t} s")
        self._subscribe(client, [self.manifest_topic])
        if (r := self._wait(lambda: self._manifest_raw is not None)) is not None:
            return _timeout(r, f"no manifest from the broker in {t} s ({self.manifest_topic})")
        self._subscribe(client, [])
        assert self._manifest_raw is not None
        manifest = decode_manifest(self._manifest_raw)
        if isinstance(manifest, Rejected):
            return Rejected("bad_manifest", f"{manifest.reason}: {manifest.detail}"[:300])
        if (refused := self._check(manifest)) is not None:
            return refused  # before a single chunk is accepted
        fd, have = self._open_part(manifest)
        with self._cond:
            self._manifest, self._fd, self._have = manifest, fd, have
        self.count("chunks_reused", len(have))
        started, n = time.monotonic(), manifest.chunks
        while True:
            with self._cond:
                missing = [i for i in range(n) if i not in self._have]
                bad = Counter(self._bad)
            if not missing:
                break
            # chunks never refused first: everything fetchable is on disk before we give up on one
            retry = sorted((i for i in missing if bad[i] < self.attempts), key=lambda i: (bad[i], i))
            if not retry:
                return self._gave_up(missing, n)
            window = retry[:WINDOW]
            worst = max(bad[i] for i in window)
            if worst and self.stop.wait(min(5.0, 0.2 * 2 ** (worst - 1))):
                return Rejected("stopped", "edge stopping")
            with self._cond:
                self._window, self._answered = set(window), set()
            self._subscribe(client, [self.topics.model_chunk(self.name, self.version, i) for i in window])
            r = self._wait(lambda: self._window <= self._answered)
            self._subscribe(client, [])
            if r is not None:
                with self._cond:
                    on_disk, silent = len(self._have), min(self._window - self._answered, default=window[0])
                topic = self.topics.model_chunk(self.name, self.version, silent)
                return _timeout(
                    r, f"no chunks from the broker in {t} s ({on_disk} of {n} on disk, waiting for {topic})"
                )
        os.fsync(fd)
        return self._verified(manifest, started)

    def _gave_up(self, missing: list[int], n: int) -> Rejected:
        with self._cond:
            why = self._bad_why[missing[0]]
        detail = why.detail if why.detail.startswith("chunk ") else f"chunk {missing[0]}: {why.detail}"
        on_disk = n - len(missing)
        return Rejected(why.reason, f"{detail} ({self.attempts} times; {on_disk} of {n} chunks on disk)"[:300])

    def _check(self, m: Manifest) -> Rejected | None:
        if m.size > self.max_bytes:
            return Rejected("too_large", f"manifest offers {m.size} bytes > edge.model_max_bytes {self.max_bytes}")
        if m.size != self.ref.size:
            return Rejected("size_mismatch", f"manifest offers {m.size} bytes, published {self.ref.size}")
        if m.sha256 != self.ref.sha256:
            return Rejected("checksum_mismatch", f"manifest is for sha256 {m.sha256[:16]}…, published"
                                                 f" {self.ref.sha256[:16]}…")  # fmt: skip
        return None

    def _open_part(self, m: Manifest) -> tuple[int, set[int]]:
        """The part file at full size and the chunks already in it (hashed one at a time)."""
        fresh = not self.part.is_file()
        fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size != m.size:
                os.ftruncate(fd, m.size)  # sparse: no disk used until chunks arrive
            have: set[int] = set()
            if not fresh:
                for i in range(m.chunks):
                    offset, length = m.span(i)
                    if hashlib.sha256(os.pread(fd, length, offset)).hexdigest() == m.chunk_sha256[i]:
                        have.add(i)
        except BaseException:
            os.close(fd)
            raise
        return fd, have

    def _verified(self, m: Manifest, started: float) -> Path | Rejected:
        digest = file_sha256(self.part)
        if digest != self.ref.sha256:  # chunks matched a manifest that lies about the whole
            self.part.unlink(missing_ok=True)
            return Rejected("checksum_mismatch", f"sha256 {digest[:16]}… is not the published {self.ref.sha256[:16]}…")
        with self._cond:
            rejected = sum(self._bad.values())
        log.info("model %s: %d chunks of %d B over MQTT in %.2f s (%d bad chunks refused)", self.ref.tag, m.chunks,
                 m.chunk_size, time.monotonic() - started, rejected)  # fmt: skip
        return self.part


def _timeout(r: Rejected, detail: str) -> Rejected:
    return Rejected("download_failed", detail[:300]) if r.reason == "timeout" else r
