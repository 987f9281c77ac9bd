"""One console stack per module: the real bridge and cloud worker (child processes), the history
store (in a thread, SQLite), the console (uvicorn in a thread) and a scripted camera node that
publishes what an edge publishes (status, snapshot, events) on the real Mosquitto.

``browser`` is one headless Debian Chromium (Selenium + /usr/bin/chromedriver) shared by the
module's tests, with a fresh profile.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import uvicorn
from console_helpers import CAM, PASSWORDS, SITE, ConsoleStack, ScriptedNode

from pipeline.console.app import build_app
from pipeline.console.auth import hash_password
from pipeline.console.feed import ConsoleFeed
from pipeline.demo import BRIDGE_READY, CLOUD_READY
from pipeline.history.consumer import HistoryConsumer
from pipeline.history.store import HistoryStore
from pipeline.local_stack.kafka_topics import ensure_topics
from pipeline.local_stack.mosquitto import MosquittoProcess
from pipeline.local_stack.pipeline_service import PipelineService
from pipeline.local_stack.tansu import TansuProcess
from pipeline.metrics import Registry
from pipeline.settings import RuleSettings, Settings
from pipeline.testing import wait_until


def console_settings(mqtt: MosquittoProcess, kafka: TansuProcess, run_dir: Path) -> Settings:
    prefix = f"c{uuid.uuid4().hex[:8]}"
    users = f"ada:admin:{hash_password(PASSWORDS['ada'])};vic:viewer:{hash_password(PASSWORDS['vic'])}"
    settings = Settings(
        mqtt={"host": mqtt.host, "port": mqtt.port, "topic_prefix": prefix},
        kafka={"bootstrap_servers": kafka.bootstrap, "fast_group_join": True, "events_topic": f"{prefix}.events",
               "alerts_topic": f"{prefix}.alerts", "config_topic": f"{prefix}.config",
               "dead_letter_topic": f"{prefix}.deadletter"},
        bridge={"client_id": f"{prefix}-bridge"},
        cloud={"app_id": f"{prefix}-cloud", "data_dir": str(run_dir / "faust"), "escalation": "never",
               "web_enabled": False, "rules": [RuleSettings(id="person-present", kind="presence", cooldown_s=0)]},
        history={"database_url": f"sqlite:///{run_dir / 'history.sqlite3'}", "group": f"{prefix}-history"},
        console={"users": users, "port": 0},
        edge={"site": SITE},
        local={"run_dir": str(run_dir)},
    )  # fmt: skip
    ensure_topics(settings.kafka)
    return settings


@pytest.fixture(scope="module")
def console_stack(
    mqtt_broker: MosquittoProcess, kafka_broker: TansuProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleStack]:
    run_dir = tmp_path_factory.mktemp("console")
    settings = console_settings(mqtt_broker, kafka_broker, run_dir)
    config = run_dir / "settings.yaml"
    config.write_text(settings.to_yaml())
    with ExitStack() as stack:
        stack.enter_context(PipelineService("bridge", run_dir, config, ["bridge"], BRIDGE_READY))
        stack.enter_context(PipelineService("cloud", run_dir, config, ["cloud"], CLOUD_READY, start_timeout_s=180))
        metrics = Registry()
        store = HistoryStore(settings.history.database_url)
        store.migrate()
        stack.callback(store.close)
        stop = threading.Event()
        history = HistoryConsumer(settings, store, metrics)
        history_thread = threading.Thread(target=history.run, args=(stop,), daemon=True)
        history_thread.start()
        stack.callback(history_thread.join, 20)
        stack.callback(stop.set)
        feed = ConsoleFeed(settings, metrics, f"{settings.mqtt.topic_prefix}-console")
        feed.start()
        stack.callback(feed.stop)
        app = build_app(settings, feed=feed, store=store, metrics=metrics)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                               timeout_graceful_shutdown=1))  # fmt: skip
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        assert wait_until(lambda: server.started, 20)

        def shutdown() -> None:
            server.should_exit = True
            thread.join(10)
            sock.close()

        stack.callback(shutdown)
        node = stack.enter_context(ScriptedNode(settings, SITE, CAM))
        assert wait_until(lambda: feed.connected.is_set() and history.ready.is_set(), 30)
        yield ConsoleStack(settings, f"http://127.0.0.1:{sock.getsockname()[1]}", node, store, feed, metrics)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_bin = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_bin), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def screenshots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/ when PIPELINE_SCREENSHOTS=docs (to refresh the README's pictures), else a tmp dir."""
    if os.environ.get("PIPELINE_SCREENSHOTS") == "docs":
        return Path(__file__).resolve().parents[2] / "docs"
    return tmp_path_factory.mktemp("screenshots")


def now_ms() -> int:
    return int(time.time() * 1000)
