"""Settings load precedence (flags > PIPELINE_* environment > --config YAML > defaults, merged per
field) and the rejection of unknown keys from every source, as ``pipeline <command>`` loads them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import get_args

import pytest
import yaml
from pydantic import BaseModel

from pipeline.cli import build_parser, settings_from_args
from pipeline.errors import ConfigError
from pipeline.settings import EdgeSettings, MqttSettings, Settings, load_settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PIPELINE_* variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name)


def write_config(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def edge_command(*argv: str) -> Settings:
    return settings_from_args(build_parser().parse_args(list(argv)))


def test_defaults_without_any_source() -> None:
    s = load_settings()
    assert s.mqtt.port == MqttSettings().port and s.edge.site == EdgeSettings().site


def test_each_source_beats_the_one_below_field_by_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, {"mqtt": {"host": "yaml-host", "port": 1001, "keepalive_s": 7},
                                     "edge": {"site": "yaml-site", "node_id": "yaml-node"}})  # fmt: skip
    monkeypatch.setenv("PIPELINE_MQTT__PORT", "1002")
    monkeypatch.setenv("PIPELINE_EDGE__NODE_ID", "env-node")
    s = edge_command("--config", str(config), "edge", "--node-id", "flag-node")
    assert s.mqtt.host == "yaml-host", "only the file sets it"
    assert s.mqtt.keepalive_s == 7, "the file's value stays next to an env override in the same section"
    assert s.mqtt.port == 1002, "env beats the file"
    assert s.edge.site == "yaml-site"
    assert s.edge.node_id == "flag-node", "a flag beats env and file"
    assert s.kafka.bootstrap_servers == Settings().kafka.bootstrap_servers, "untouched sections keep their defaults"


def test_numeric_choices_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_EDGE__DETECTOR_INPUT_SIZE", "384")
    s = load_settings()
    assert s.edge.detector_input_size == 384
    assert Settings(**s.model_dump()).edge.detector_input_size == 384, "a dump loads again next to the env"
    monkeypatch.setenv("PIPELINE_EDGE__DETECTOR_INPUT_SIZE", "400")
    with pytest.raises((ConfigError, ValueError), match="320, 384 or 512"):
        load_settings()


def test_pipeline_config_names_the_file_when_no_flag_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_CONFIG", str(write_config(tmp_path, {"edge": {"site": "from-env-file"}})))
    assert load_settings().edge.site == "from-env-file"
    (tmp_path / "other").mkdir()
    other = write_config(tmp_path / "other", {"edge": {"site": "flag"}})
    assert load_settings(other).edge.site == "flag", "--config beats PIPELINE_CONFIG"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"mqtt": {"prot": 1883}}, "prot"),  # a typo in a section
        ({"mqt": {"port": 1883}}, "mqt"),  # a typo of a section
        ({"edge": {"cameras": [{"id": "c1", "source": "0", "fps": 5}]}}, "fps"),  # inside a list item
    ],
)
def test_unknown_keys_in_the_file_are_errors_naming_the_key(tmp_path: Path, data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_settings(write_config(tmp_path, data))


def test_unknown_keys_in_the_environment_and_flags_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="prot"):
        load_settings(mqtt={"prot": 1})
    monkeypatch.setenv("PIPELINE_MQTT__PROT", "1")
    with pytest.raises(ConfigError, match="prot"):
        load_settings()


def test_bad_files_and_values_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="port"):
        load_settings(mqtt={"port": "not a port"})


def test_every_setting_has_a_description() -> None:
    """`pipeline <command> --help` and `pipeline settings` are only as good as these."""

    def undescribed(model: type[BaseModel], path: str) -> list[str]:
        out = []
        for name, f in model.model_fields.items():
            if not f.description:
                out.append(path + name)
            for t in (*get_args(f.annotation), f.annotation):
                for inner in (*get_args(t), t):
                    if isinstance(inner, type) and issubclass(inner, BaseModel):
                        out += undescribed(inner, f"{path}{name}.")
        return out

    assert undescribed(Settings, "") == []


def test_a_subcommand_whose_library_is_missing_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An edge-only install lacks faust: `pipeline cloud` is listed and fails with the reason."""
    import importlib

    from pipeline import cli

    real = importlib.import_module

    def without_faust(name: str, package: str | None = None) -> object:
        if name == "pipeline.cloud_stage.command":
            raise ModuleNotFoundError("No module named 'faust'", name="faust")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_faust)  # the importlib pipeline.cli uses
    assert "unavailable: needs the Python package 'faust'" in cli.build_parser().format_help()
    assert cli.main(["config", "set"]) == 2
    assert "`pipeline config` needs the Python package 'faust'" in capsys.readouterr().err

    def without_own_module(name: str, package: str | None = None) -> object:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(importlib, "import_module", without_own_module)
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()  # a module of our own missing is a bug: loud


def test_pipeline_settings_masks_secrets_unless_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main

    monkeypatch.setenv("PIPELINE_MQTT__PASSWORD", "s3cr3t-mqtt")
    monkeypatch.setenv("PIPELINE_CONSOLE__SESSION_SECRET", "s3cr3t-session")
    assert main(["settings"]) == 0
    shown = capsys.readouterr().out
    assert "s3cr3t" not in shown and "password: '**********'" in shown
    assert main(["settings", "--show-secrets"]) == 0
    clear = capsys.readouterr().out
    assert "password: s3cr3t-mqtt" in clear and "session_secret: s3cr3t-session" in clear
    password = Settings.model_validate(yaml.safe_load(clear)).mqtt.password
    assert password is not None and password.get_secret_value() == "s3cr3t-mqtt"
