"""docker-compose.yml: valid Compose, and the rules the deployment promises (README "Deploy").

No Docker engine is needed: the file is validated against the vendored Compose Specification
schema (deploy/compose-spec/) and, where the `docker-compose` binary exists (Debian package
docker-compose 1.29), with `docker-compose config -q`, which needs no engine either.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pipeline.settings import REPO_ROOT
from tests.deploy.deploy_helpers import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    KAFKA_OVERRIDE,
    LOCAL_IMAGES_OVERRIDE,
    PROJECT_SERVICES,
    compose_variables,
    load_compose,
    service_environment,
)

SCHEMA = REPO_ROOT / "deploy" / "compose-spec" / "compose_spec.json"
ONE_SHOT = ("mosquitto-passwd", "kafka-init")


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.mark.unit
@pytest.mark.parametrize("path", [COMPOSE_FILE, KAFKA_OVERRIDE, LOCAL_IMAGES_OVERRIDE], ids=lambda p: p.name)
def test_compose_file_matches_the_compose_schema(path: Path) -> None:
    errors = sorted(_validator().iter_errors(load_compose(path)), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


@pytest.mark.unit
def test_schema_check_catches_a_mistake() -> None:
    broken = load_compose()
    broken["services"]["bridge"]["helthcheck"] = broken["services"]["bridge"].pop("healthcheck")
    assert any("helthcheck" in e.message for e in _validator().iter_errors(broken))


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose (Debian package, v1.29) not installed; the JSON-schema check above still ran")
    return exe


@pytest.mark.integration
@pytest.mark.parametrize(
    "files",
    [[COMPOSE_FILE], [COMPOSE_FILE, KAFKA_OVERRIDE], [COMPOSE_FILE, LOCAL_IMAGES_OVERRIDE]],
    ids=["main", "kafka-replicated", "local-images"],
)
def test_docker_compose_config_accepts_the_file(files: list[Path]) -> None:
    exe = _docker_compose()
    args = [exe, "--env-file", str(ENV_EXAMPLE), "--project-directory", str(REPO_ROOT)]
    for f in files:
        args += ["-f", str(f)]
    out = subprocess.run([*args, "config"], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    merged = yaml.safe_load(out.stdout)
    assert set(PROJECT_SERVICES) <= set(merged["services"])
    if KAFKA_OVERRIDE in files:
        assert {"kafka-2", "kafka-3"} <= set(merged["services"])
        env = merged["services"]["kafka"]["environment"]
        assert str(env["KAFKA_MIN_INSYNC_REPLICAS"]) == "2"
        assert str(env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"]) == "false"
        assert merged["services"]["bridge"]["environment"]["PIPELINE_KAFKA__BOOTSTRAP_SERVERS"].count(",") == 2
    if LOCAL_IMAGES_OVERRIDE in files:
        # Every service, the profiles' too (console's PostgreSQL, observability's Prometheus), runs a
        # locally built image: nothing is pulled.
        for name, svc in merged["services"].items():
            assert svc["image"].startswith(("evp-local/", "edge-vision-pipeline")), (name, svc["image"])


@pytest.mark.integration
def test_docker_compose_refuses_to_start_without_the_bridge_password(tmp_path: Path) -> None:
    exe = _docker_compose()
    empty = tmp_path / "empty.env"
    empty.write_text("")
    out = subprocess.run(
        [exe, "--env-file", str(empty), "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode != 0
    assert "MQTT_BRIDGE_PASSWORD" in out.stderr


@pytest.mark.unit
def test_every_long_running_service_has_a_health_check_and_a_restart_policy(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if name in ONE_SHOT:
            assert svc["restart"] == "no", name
            continue
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
        assert svc.get("restart") in ("unless-stopped", "always"), f"{name} has no restart policy"


@pytest.mark.unit
def test_dependencies_wait_for_health_or_completion(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must name a condition"
        for dep, spec in deps.items():
            want = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert spec == {"condition": want}, f"{name} -> {dep}"
    assert set(services["bridge"]["depends_on"]) == {"mosquitto", "kafka", "kafka-init"}
    assert set(services["cloud"]["depends_on"]) == {"kafka", "kafka-init", "tfserving"}


@pytest.mark.unit
def test_scaled_services_have_no_fixed_names_or_host_ports(compose: dict[str, Any]) -> None:
    # `docker compose up --scale cloud=3` fails on a container_name or a fixed host port.
    for name in PROJECT_SERVICES:
        svc = compose["services"][name]
        assert "container_name" not in svc, name
        assert "ports" not in svc, name
        assert "hostname" not in svc, name
        assert svc["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    # One image, two commands.
    assert compose["services"]["bridge"]["image"] == compose["services"]["cloud"]["image"]
    assert compose["services"]["bridge"]["command"] != compose["services"]["cloud"]["command"]


@pytest.mark.unit
def test_official_images_and_broker_volumes(compose: dict[str, Any]) -> None:
    s = compose["services"]
    assert s["mosquitto"]["image"] == "eclipse-mosquitto:2"
    assert s["kafka"]["image"].startswith("apache/kafka:")
    assert "tensorflow/serving:" in s["tfserving"]["image"]
    assert s["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    volumes = compose["volumes"]
    assert "kafka-data:/var/lib/kafka/data" in s["kafka"]["volumes"] and "kafka-data" in volumes
    assert "mosquitto-data:/mosquitto/data" in s["mosquitto"]["volumes"] and "mosquitto-data" in volumes


@pytest.mark.unit
def test_bind_mounts_exist_in_the_repository(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists() or source == "./models", f"{name}: {source} missing"


@pytest.mark.unit
def test_tf_serving_uses_the_model_config_and_batching(compose: dict[str, Any]) -> None:
    svc = compose["services"]["tfserving"]
    args = svc["command"]
    assert "--enable_batching" in args
    assert "--model_config_file=/models/models.config" in args
    assert "./models:/models:ro" in svc["volumes"]
    batching = next(a.split("=", 1)[1] for a in args if a.startswith("--batching_parameters_file="))
    mount = next(v for v in svc["volumes"] if v.endswith(":/config:ro"))
    local = REPO_ROOT / mount.split(":")[0] / Path(batching).relative_to("/config")
    assert local.is_file(), local


@pytest.mark.unit
def test_no_secret_in_the_compose_file(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        for key, value in env.items():
            if any(word in key for word in ("PASSWORD", "SECRET", "TOKEN")):
                assert str(value).startswith("${") and str(value).endswith("}"), f"{name}.{key} is a literal"


@pytest.mark.unit
def test_env_example_documents_every_variable(env_example: dict[str, str]) -> None:
    files = (COMPOSE_FILE, KAFKA_OVERRIDE, LOCAL_IMAGES_OVERRIDE)
    used = set().union(*(compose_variables(f.read_text()) for f in files))
    missing = sorted(used - set(env_example))
    assert not missing, f".env.example lacks {missing}"


@pytest.mark.unit
def test_project_services_read_only_known_settings(compose: dict[str, Any], env_example: dict[str, str]) -> None:
    # Settings forbid unknown keys: a misspelt PIPELINE_* variable would stop the container.
    from pipeline.settings import Settings

    for name in PROJECT_SERVICES:
        env = service_environment(compose["services"][name], env_example)
        for key in env:
            if not key.startswith("PIPELINE_"):
                continue
            section, _, field = key.removeprefix("PIPELINE_").lower().partition("__")
            assert section in Settings.model_fields, f"{name}: {key}"
            section_model = Settings.model_fields[section].annotation
            assert section_model is not None, f"{name}: {key}"
            assert field in section_model.model_fields, f"{name}: {key}"


@pytest.mark.unit
def test_prometheus_scrapes_the_ports_the_services_serve(compose: dict[str, Any]) -> None:
    prom = compose["services"]["prometheus"]
    assert prom["profiles"] == ["observability"]
    config = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    bridge_port = int(compose["services"]["bridge"]["environment"]["PIPELINE_BRIDGE__HEALTH_PORT"])
    cloud_port = int(compose["services"]["cloud"]["environment"]["PIPELINE_CLOUD__WEB_PORT"])
    assert jobs["bridge"]["dns_sd_configs"][0] == {"names": ["bridge"], "type": "A", "port": bridge_port,
                                                   "refresh_interval": "30s"}  # fmt: skip
    assert jobs["cloud"]["dns_sd_configs"][0]["port"] == cloud_port
    assert str(bridge_port) in compose["services"]["bridge"]["healthcheck"]["test"][-1]
    assert str(cloud_port) in compose["services"]["cloud"]["healthcheck"]["test"][-1]
