"""A cloud worker SIGKILLed again and again while events are in flight: every incident alerts
exactly once, with the id of its first event, after each restart.

This caught a faust-streaming 0.15.3 race (records fetched before the post-restart seek were
skipped; a track's first event never reached the worker, so its alert came late with another
id, or a partition stopped delivering); see ``pipeline/cloud_stage/offset_guard.py``. Under CPU
load about one restart in three hit it; the guard's rewinds are counted in the worker's log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.settings import Settings
from tests.cloud_stage.cloud_stage_helpers import (
    RULE,
    AlertReader,
    CloudWorker,
    Crops,
    expected_id,
    produce,
    track_events,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILL_DELAYS_S = (0.05, 0.3, 0.8, 0.2)  # after producing: mid-fetch, mid-verify, mid-alert, ...


def test_repeated_worker_kills_lose_no_alert_and_make_no_new_ids(
    make_settings: Callable[..., Settings],
    model_server: object,
    crops: Crops,
    tmp_path: Path,
    cloud_worker: list[CloudWorker],
) -> None:
    s = worker_settings(make_settings, rules=[RULE], escalation="track_started", edge_weight=0.4)
    worker = CloudWorker(s, tmp_path / "cloud")
    cloud_worker.append(worker)
    worker.start()
    reader = AlertReader(s)
    expected: set[str] = set()
    track = 100
    for round_no, delay in enumerate(KILL_DELAYS_S):
        events = []
        for i in range(6):  # 3 cameras, i.e. several partitions, two tracks each
            track += 1
            evs = track_events(f"cam-{i % 3 + 1}", track, crops.people[(i + round_no) % len(crops.people)])
            events += evs
            expected.add(expected_id(evs))
        produce(s, events)
        time.sleep(delay)
        worker.kill()
        worker.start()
        alerts = reader.wait_for(len(expected), timeout_s=60, settle_s=1.0)
        got = {a.id for a in alerts}
        assert got == expected, (
            f"round {round_no} (kill {delay} s after producing): missing {sorted(expected - got)}, "
            f"unexpected {sorted(got - expected)}\n{worker.diagnose()}"
        )
    reader.close()
    rewinds = worker.log_path.read_text(errors="replace").count("rewinding to offset")
    print(f"offset guard rewinds over {len(KILL_DELAYS_S)} restarts: {rewinds}")
    assert worker.stop() == 0
