"""Group concurrent inference requests (from any camera) into one Predict call.

A request waits at most ``max_wait_s`` for others to join; a batch holds at most ``max_batch``
images. While one batch is at the server the next one fills, so under load batches grow by
themselves. The queue is bounded (``queue_limit``): when full, :meth:`MicroBatcher.infer`
fails at once with :class:`InferenceUnavailable` (counted as ``cloud_batcher_rejected_total``)
instead of letting latency grow without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np
import numpy.typing as npt

from pipeline.errors import InferenceUnavailable, PipelineError
from pipeline.metrics import Registry

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float32]
PredictFn = Callable[[FloatArray], Awaitable[FloatArray]]
_Item = tuple[FloatArray, "asyncio.Future[FloatArray]"]


class MicroBatcher:
    def __init__(
        self,
        predict: PredictFn,
        max_batch: int,
        max_wait_s: float,
        queue_limit: int,
        metrics: Registry | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue_limit = queue_limit
        self._metrics = metrics or Registry()
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.images = 0

    async def infer(self, image: FloatArray) -> FloatArray:
        """One image [512,512,3] -> its detections [100,6] (awaits the batch it joined)."""
        if self._queue is None:
            self._queue = asyncio.Queue(self.queue_limit)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")
        fut: asyncio.Future[FloatArray] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((image, fut))
        except asyncio.QueueFull:
            self._metrics.inc("cloud_batcher_rejected_total", help="Inference requests refused: queue full.")
            raise InferenceUnavailable(f"inference queue full ({self.queue_limit})") from None
        self._metrics.set("cloud_batcher_queue", self._queue.qsize(), help="Requests waiting for a batch.")
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    while len(batch) < self.max_batch and not queue.empty():
                        batch.append(queue.get_nowait())
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            await self._send(batch)

    async def _send(self, batch: list[_Item]) -> None:
        live = [(img, fut) for img, fut in batch if not fut.done()]
        if not live:
            return
        started = time.monotonic()
        try:
            out = await self._predict(np.stack([img for img, _ in live]))
        except PipelineError as exc:
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        except Exception as exc:  # a bug or an unexpected client error: fail these requests, keep running
            log.exception("micro-batch predict failed")
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(InferenceUnavailable(f"predict error: {exc!r}"))
            return
        self.batches += 1
        self.images += len(live)
        m = self._metrics
        m.inc("cloud_predict_batches_total", help="Predict calls sent to the model server.")
        m.inc("cloud_predict_images_total", len(live), help="Images sent to the model server.")
        m.observe("cloud_predict_batch_size", len(live))
        m.observe("cloud_predict_seconds", time.monotonic() - started)
        for (_, fut), det in zip(live, out, strict=True):
            if not fut.done():
                fut.set_result(det)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                _, fut = self._queue.get_nowait()
                if not fut.done():
                    fut.set_exception(InferenceUnavailable("batcher closed"))
        self._queue = None
