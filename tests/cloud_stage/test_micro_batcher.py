"""Micro-batching: concurrent requests share one Predict call (fake and real model server)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from pipeline.cloud_stage.inference_client import InferenceClient
from pipeline.cloud_stage.micro_batcher import FloatArray, MicroBatcher, PredictFn
from pipeline.cloud_stage.verification import letterbox
from pipeline.errors import InferenceUnavailable, ModelError
from pipeline.local_stack.model_server import ModelServerProcess
from pipeline.settings import ModelServerSettings
from tests.cloud_stage.cloud_stage_helpers import Crops, decoded_crop


def _fake(calls: list[int], delay_s: float = 0.0) -> PredictFn:
    async def predict(batch: FloatArray) -> FloatArray:
        calls.append(len(batch))
        await asyncio.sleep(delay_s)
        out = np.zeros((len(batch), 100, 6), np.float32)
        out[:, 0, 4] = batch[:, 0, 0, 0]  # echo each image's marker so results can be matched
        return out

    return predict


@pytest.mark.unit
def test_batches_fill_up_to_max_and_results_match_requests() -> None:
    async def run() -> tuple[list[int], list[float]]:
        calls: list[int] = []
        b = MicroBatcher(_fake(calls, 0.01), max_batch=4, max_wait_s=0.05, queue_limit=64)
        imgs = [np.full((2, 2, 3), i, np.float32) for i in range(10)]
        outs = await asyncio.gather(*(b.infer(im) for im in imgs))
        await b.close()
        return calls, [float(o[0, 4]) for o in outs]

    calls, markers = asyncio.run(run())
    assert calls == [4, 4, 2]
    assert markers == [float(i) for i in range(10)]


@pytest.mark.unit
def test_full_queue_fails_fast_and_errors_reach_every_request() -> None:
    async def run() -> None:
        b = MicroBatcher(_fake([], 0.2), max_batch=1, max_wait_s=0.0, queue_limit=2)
        tasks = [asyncio.ensure_future(b.infer(np.zeros((1, 1, 3), np.float32))) for _ in range(5)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert sum(isinstance(r, InferenceUnavailable) for r in results) >= 2  # beyond the queue limit
        await b.close()

        async def failing(batch: FloatArray) -> FloatArray:
            raise InferenceUnavailable("down")

        b2 = MicroBatcher(failing, max_batch=8, max_wait_s=0.02, queue_limit=8)
        res = await asyncio.gather(*(b2.infer(np.zeros((1, 1, 3), np.float32)) for _ in range(3)),
                                   return_exceptions=True)  # fmt: skip
        assert all(isinstance(r, InferenceUnavailable) for r in res)
        await b2.close()

    asyncio.run(run())


@pytest.mark.integration
def test_real_model_server_one_predict_per_batch(model_server: ModelServerProcess, crops: Crops) -> None:
    address = model_server.address
    people = crops.people

    async def run() -> tuple[list[int], float, float]:
        client = InferenceClient(ModelServerSettings(address=address, timeout_s=60))
        info = await client.connect()
        assert info.name == "centernet" and info.max_batch is None and info.input_size == 256
        images = [letterbox(decoded_crop(people[i % len(people)]), info.input_size).image
                  for i in range(16)]  # fmt: skip
        calls: list[int] = []

        async def predict(batch: FloatArray) -> FloatArray:
            calls.append(len(batch))
            return await client.predict(batch)

        b = MicroBatcher(predict, max_batch=8, max_wait_s=0.05, queue_limit=64)
        outs = await asyncio.gather(*(b.infer(im) for im in images[:8]))
        assert calls == [8]
        single = await client.predict(images[3][None])
        np.testing.assert_allclose(outs[3], single[0], atol=1e-3)

        t0 = time.perf_counter()
        for im in images:
            await client.predict(im[None])
        unbatched = len(images) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        await asyncio.gather(*(b.infer(im) for im in images))
        batched = len(images) / (time.perf_counter() - t0)
        await b.close()
        await client.close()
        return calls, unbatched, batched

    calls, unbatched, batched = asyncio.run(run())
    print(f"\nheavy model throughput: unbatched {unbatched:.1f} img/s, batched(8) {batched:.1f} img/s")
    assert calls[1:] == [8, 8]


@pytest.mark.integration
def test_metadata_mismatch_is_a_clear_model_error(model_server: ModelServerProcess) -> None:
    async def run() -> None:
        address = model_server.address
        client = InferenceClient(ModelServerSettings(address=address, model_name="no-such-model"))
        with pytest.raises(ModelError, match="not served"):
            await client.connect()
        await client.close()
        client = InferenceClient(ModelServerSettings(address=address, signature_name="nope"))
        with pytest.raises(ModelError, match="signature 'nope'"):
            await client.connect()
        await client.close()

    asyncio.run(run())


@pytest.mark.unit
def test_latency_bound_caps_the_batch_from_the_measured_cost() -> None:
    async def run() -> list[int]:
        calls: list[int] = []

        async def predict(batch: FloatArray) -> FloatArray:  # 10 ms per image, as a server would
            calls.append(len(batch))
            await asyncio.sleep(0.01 * len(batch))
            return np.zeros((len(batch), 100, 6), np.float32)

        b = MicroBatcher(predict, max_batch=32, max_wait_s=0.02, queue_limit=128, max_latency_s=0.045)
        await b.infer(np.zeros((1, 1, 3), np.float32))  # measures the cost: >= 10 ms per image
        assert b.image_cost_s is not None and b.batch_cap() == int(0.045 / b.image_cost_s) <= 4
        await asyncio.gather(*(b.infer(np.zeros((1, 1, 3), np.float32)) for _ in range(12)))
        await b.close()
        return calls

    calls = asyncio.run(run())
    assert calls[0] == 1 and max(calls[1:]) <= 4 and sum(calls[1:]) == 12


@pytest.mark.unit
def test_two_calls_in_flight_and_close_fails_waiters() -> None:
    async def run() -> None:
        running = 0
        peak = 0
        release = asyncio.Event()

        async def predict(batch: FloatArray) -> FloatArray:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await release.wait()
            running -= 1
            return np.zeros((len(batch), 100, 6), np.float32)

        b = MicroBatcher(predict, max_batch=2, max_wait_s=0.0, queue_limit=16, max_inflight=2)
        tasks = [asyncio.ensure_future(b.infer(np.zeros((1, 1, 3), np.float32))) for _ in range(6)]
        for _ in range(50):
            await asyncio.sleep(0.005)
            if peak == 2:
                break
        assert peak == 2  # two batches at the server, the rest waiting for a slot
        await b.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, InferenceUnavailable) for r in results)

    asyncio.run(run())
