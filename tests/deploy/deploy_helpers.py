"""Helpers of the deployment tests: the parsed compose file, its variables and environment."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.settings import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
KAFKA_OVERRIDE = REPO_ROOT / "deploy" / "compose" / "kafka-replicated.yml"
# Locally built images for sites without registry access (run for real by tests/compose).
LOCAL_IMAGES_OVERRIDE = REPO_ROOT / "deploy" / "compose" / "local-images.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
# Services built from the project's Dockerfile (the rest are official images).
PROJECT_SERVICES = ("bridge", "cloud")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
        env[key.strip()] = value.strip()
    return env


def compose_variables(text: str) -> set[str]:
    """Names of the ``${VAR...}`` interpolations (``$$`` is an escaped dollar, not a variable)."""
    return {m.group(1) for m in _VAR.finditer(text.replace("$$", ""))}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` against ``env``."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        have = env.get(name)
        if op in (":-", "-"):
            return have if have not in (None, "") or (op == "-" and have is not None) else arg
        if op in (":?", "?"):
            if have in (None, "") if op == ":?" else have is None:
                raise KeyError(f"{name}: {arg}")
            assert have is not None  # "?": not None, ":?": neither None nor ""
            return have
        return have or ""

    return _VAR.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def service_environment(service: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: interpolate(str(v), env) for k, v in raw.items()}
