"""Settings: defaults < TOML file < TOCSIN_* variables < CLI flags; bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tocsin.settings import Settings, SettingsError


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "tocsin.toml"
    config.write_text('node_name = "tocsin-a"\nreplicas = 3\nsse_keepalive_s = 5\nlisten = "0.0.0.0:9000"\n')
    env = {"TOCSIN_REPLICAS": "5", "TOCSIN_NATS_URL": "nats://a:4222", "TOCSIN_NATS_MONITOR_URL": "http://a:8222"}
    settings = Settings.from_env(env, config=config, listen="127.0.0.1:8081")
    assert settings.node_name == "tocsin-a"  # file
    assert settings.sse_keepalive_s == 5.0
    assert settings.replicas == 5  # environment over file
    assert settings.listen == "127.0.0.1:8081"  # flag over both


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "tocsin.toml"
    config.write_text('node_name = "from-file"\n')
    assert Settings.from_env({"TOCSIN_CONFIG": str(config)}).node_name == "from-file"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope = 1\n", "unknown setting 'nope'"),
        ('replicas = "three"\n', "replicas"),
        ("replicas = \n", "config file"),
    ],
)
def test_bad_config_file_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "tocsin.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({}, config=config)


def test_malformed_variable_is_named() -> None:
    with pytest.raises(SettingsError, match="TOCSIN_REPLICAS"):
        Settings.from_env({"TOCSIN_REPLICAS": "x"})


def test_external_nats_needs_its_monitoring_endpoint() -> None:
    with pytest.raises(SettingsError, match="TOCSIN_NATS_MONITOR_URL"):
        Settings.from_env({"TOCSIN_NATS_URL": "nats://a:4222"})
