"""One typed settings model for every part of the pipeline.

Sources, highest priority first: command-line flags (passed in as overrides), environment
variables (``PIPELINE_<SECTION>__<FIELD>``, e.g. ``PIPELINE_MQTT__PORT=1884``), a YAML file
(``--config FILE`` or ``PIPELINE_CONFIG``), then the defaults below. Nothing is read at import
time: call :func:`load_settings`.

Every section forbids unknown keys, so a typo in a config file is an error, not a silent default.

The sections live in ``base`` (paths, ``Section``), ``transport`` (MQTT, Kafka, model server),
``edge`` (camera node, cameras, rules) and ``services`` (bridge, cloud, learning loop, history,
console, local stack); everything is importable from ``pipeline.settings``.
"""

from __future__ import annotations

import contextvars
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pipeline.errors import ConfigError
from pipeline.settings.base import DEFAULT_RUN_DIR, REPO_ROOT, SAMPLE_CLIP, Point, Section
from pipeline.settings.edge import CameraSettings, EdgeSettings, ModelRef, RuleSettings
from pipeline.settings.services import (
    BridgeSettings,
    CloudSettings,
    ConsoleSettings,
    Escalation,
    HardExampleSettings,
    HistorySettings,
    LocalStackSettings,
    RegistrySettings,
)
from pipeline.settings.transport import KafkaSettings, ModelServerSettings, MqttSettings

__all__ = [
    "DEFAULT_RUN_DIR", "REPO_ROOT", "SAMPLE_CLIP", "BridgeSettings", "CameraSettings", "CloudSettings",
    "ConsoleSettings", "EdgeSettings", "Escalation", "HardExampleSettings", "HistorySettings", "KafkaSettings",
    "LocalStackSettings", "ModelRef", "ModelServerSettings", "MqttSettings", "Point", "RegistrySettings",
    "RuleSettings", "Section", "Settings", "load_settings",
]  # fmt: skip


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PIPELINE_", env_nested_delimiter="__", extra="forbid", frozen=True)

    mqtt: MqttSettings = Field(MqttSettings(), description="MQTT broker and client (every part).")
    kafka: KafkaSettings = Field(KafkaSettings(), description="Kafka brokers and topics (bridge, cloud, history).")
    model_server: ModelServerSettings = Field(
        ModelServerSettings(), description="The heavy model on TF Serving (cloud)."
    )
    edge: EdgeSettings = Field(EdgeSettings(), description="A camera node and its cameras.")
    bridge: BridgeSettings = Field(BridgeSettings(), description="The MQTT <-> Kafka bridge.")
    cloud: CloudSettings = Field(CloudSettings(), description="The Faust worker: escalation, verification, rules.")
    registry: RegistrySettings = Field(RegistrySettings(), description="The model registry and its file server.")
    hard_examples: HardExampleSettings = Field(
        HardExampleSettings(), description="Where edge and cloud disagree (recorder)."
    )
    history: HistorySettings = Field(HistorySettings(), description="Alert history store.")
    console: ConsoleSettings = Field(ConsoleSettings(), description="The web console.")
    local: LocalStackSettings = Field(LocalStackSettings(), description="Local brokers and model server (demo, tests).")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    @field_validator("edge")
    @classmethod
    def _unique_cameras(cls, v: EdgeSettings) -> EdgeSettings:
        ids = [c.id for c in v.cameras]
        if len(ids) != len(set(ids)):
            raise ValueError(f"camera ids must be unique, got {ids}")
        return v

    @model_validator(mode="after")
    def _topics_distinct(self) -> Settings:
        k = self.kafka
        names = [k.events_topic, k.alerts_topic, k.config_topic, k.dead_letter_topic]
        if len(set(names)) != len(names):
            raise ValueError(f"Kafka topics must be distinct: {names}")
        return self

    def to_yaml(self, *, reveal_secrets: bool = True) -> str:
        """Serialise, secrets included, for child processes of the local stack; with
        ``reveal_secrets=False`` (what ``pipeline settings`` prints) they show as ``**********``."""
        data = self.model_dump(mode="json")
        if not reveal_secrets:
            return yaml.safe_dump(data, sort_keys=False)
        for section, field in (
            ("mqtt", "password"),
            ("kafka", "sasl_password"),
            ("edge", "model_signing_key"),
            ("registry", "signing_key"),
            ("console", "session_secret"),
        ):
            secret = getattr(getattr(self, section), field)
            if secret is not None:
                data[section][field] = secret.get_secret_value()
        return yaml.safe_dump(data, sort_keys=False)


_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("pipeline_config", default=None)


class _YamlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _config_file.get()
        if path is None:
            return {}
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping, got {type(data).__name__}")
        return data


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings: flags (``overrides``, nested dicts) > env > YAML file > defaults."""
    path = config_file or os.environ.get("PIPELINE_CONFIG")
    token = _config_file.set(Path(path) if path else None)
    try:
        return Settings(**overrides)
    except ConfigError:
        raise
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise ConfigError(f"invalid settings: {exc}") from exc
    finally:
        _config_file.reset(token)
