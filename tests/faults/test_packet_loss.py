"""Packet loss and a blackhole between the edge and Mosquitto (``pipeline chaos --only packet-loss``):
the edge runs in a network namespace of its own behind a veth pair whose packets nftables drops
(pipeline/chaos/netns.py; this kernel has no ``tc netem``). Needs root, ``ip`` and ``nft``;
skipped with the reason otherwise."""

from __future__ import annotations

import pytest

from pipeline.chaos.link_scenarios import DETECT_KEEPALIVES, DETECT_MARGIN_S, packet_loss
from pipeline.chaos.netns import LossyNetns, NetnsUnavailable
from pipeline.chaos.rig import ChaosEnv
from pipeline.chaos.scenarios import format_table

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

N = 600  # 150 events without loss, 150 under loss (6 bursts each), 300 released as the link goes dark
LOSS_PCT = 20  # the top of the 10-20 % range: the widest gap to the baseline on a loaded machine


@pytest.fixture
def netns_ok() -> None:
    """Skip before any broker starts when this machine cannot make namespaces."""
    try:
        LossyNetns()  # checks root and the tools; creates nothing until started
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))


def test_packet_loss_and_blackhole_lose_nothing(netns_ok: None, chaos_env: ChaosEnv) -> None:
    try:
        result = packet_loss(chaos_env, N, loss_pct=LOSS_PCT)
    except NetnsUnavailable as exc:  # root without CAP_NET_ADMIN (a container), no nf_tables
        pytest.skip(str(exc))
    print("\n" + format_table([result]) + f"\n{result.measures}")
    m = result.measures
    assert result.missing_events == 0 and m["missing_pairs"] == 0, "every event (by id and by cam/seq) in Kafka"
    assert result.lost == 0
    assert m["lossy_eps"] < m["base_eps"], "throughput under loss is below the baseline"
    # ~1.5x keep-alive (paho gets 3/4 of it: pipeline.mqtt_client.paho_keepalive) + a stated margin.
    bound = DETECT_KEEPALIVES * m["keepalive_s"] + DETECT_MARGIN_S
    assert 0 <= m["edge_detect_s"] <= bound, f"edge saw the blackhole after {m['edge_detect_s']:.1f} s (> {bound} s)"
    failed = [k for k, v in result.checks.items() if not v]
    assert not failed, failed  # incl. RSS within its slack, paho queue <= in-flight cap, outbox caps
