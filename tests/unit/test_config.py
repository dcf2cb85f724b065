"""Config loading: file, environment and flags, and clear errors for broken input."""

from __future__ import annotations

from pathlib import Path

import pytest

from metastack.config import load_api_config, parse_hostport
from metastack.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "metastack.toml"
    path.write_text(text)
    return path


def test_defaults_follow_openstack_ports() -> None:
    config = load_api_config()
    assert config.control_listen.endswith(":8774")
    assert config.metadata_listen.endswith(":8775")
    assert config.enabled_apis == ["control", "metadata"]
    assert config.metadata_proxy_shared_secret == ""


def test_scheduling_defaults_follow_neutron() -> None:
    config = load_api_config()
    assert config.agent_down_time == 75
    assert (config.dhcp_agents_per_network, config.max_l3_agents_per_router) == (1, 1)
    assert config.allow_automatic_dhcp_failover and config.allow_automatic_l3agent_failover


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[api]\nworkers = 3\nmetadata_proxy_shared_secret = "file"\nenabled_apis = ["control"]\n'
        '[api.vendordata]\nstatic_json = "/etc/vendor.json"\n',
    )
    config = load_api_config(
        path,
        {"METASTACK_API_WORKERS": "5", "METASTACK_API_ENABLED_APIS": '["metadata"]'},
        {"workers": 7, "database_url": None},
    )
    assert config.workers == 7
    assert config.enabled_apis == ["metadata"]
    assert config.metadata_proxy_shared_secret == "file"
    assert config.vendordata.static_json == "/etc/vendor.json"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[api]\nworkers = 'many'\n", "api.workers"),
        ("[api]\nwrokers = 2\n", "api.wrokers"),
        ("[api]\nenabled_apis = ['compute']\n", "api.enabled_apis"),
        ("[api]\nenabled_apis = []\n", "api.enabled_apis"),
        ("[api]\nmetadata_listen = 'nohost'\n", "api.metadata_listen"),
        ("[api]\ncontrol_listen = '1.2.3.4:99999'\n", "api.control_listen"),
        ("[api.vendordata]\ndynamic_targets = ['nourl']\n", "api.vendordata.dynamic_targets"),
        ("[api\nworkers = 2\n", "not valid TOML"),
        ("api = 3\n", "[api] must be a table"),
    ],
)
def test_broken_file_names_key_and_reason(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_api_config(write(tmp_path, text))
    assert needle in str(caught.value)
    assert str(tmp_path) in str(caught.value)


def test_missing_file_and_unknown_env_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_api_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="METASTACK_API_NOPE"):
        load_api_config(None, {"METASTACK_API_NOPE": "1"})
    with pytest.raises(ConfigError, match="expected JSON"):
        load_api_config(None, {"METASTACK_API_ENABLED_APIS": "[control"})


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:8775") == ("127.0.0.1", 8775)
    assert parse_hostport("[::1]:80") == ("::1", 80)
    assert parse_hostport(":9697") == ("0.0.0.0", 9697)
    with pytest.raises(ValueError):
        parse_hostport("host:http")


def test_postgresql_without_its_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "psycopg" else real(name)
    )
    with pytest.raises(ConfigError) as caught:
        load_api_config(None, {"METASTACK_API_DATABASE_URL": "postgresql+psycopg://m@db/m"})
    assert "api.database_url: PostgreSQL needs the psycopg driver" in str(caught.value)
    assert "pip install 'metastack[postgresql]'" in str(caught.value)
    # SQLite needs nothing, and a plain postgresql:// URL means psycopg too
    assert load_api_config(None, {"METASTACK_API_DATABASE_URL": "sqlite://"})
    with pytest.raises(ConfigError, match="metastack\\[postgresql\\]"):
        load_api_config(None, {"METASTACK_API_DATABASE_URL": "postgresql://m@db/m"})
