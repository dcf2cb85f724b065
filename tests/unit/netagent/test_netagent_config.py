"""`[netagent]` settings: defaults, environment, validation of names."""

from __future__ import annotations

from pathlib import Path

import pytest

from metastack.errors import ConfigError
from metastack.netagent.config import load_netagent_config


def test_defaults_follow_upstream() -> None:
    config = load_netagent_config(environ={})
    assert config.enable_isolated_metadata and not config.force_metadata
    assert config.metadata_port == 9697
    assert config.state_path == "/var/lib/metastack"
    assert config.dhcp_netns("n1") == "qdhcp-n1"
    assert config.router_netns("r1") == "qrouter-r1"
    assert config.bridge_name("0123456789abcdef") == "ms-br-01234567"


def test_file_env_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[netagent]\nnamespace_prefix = "ms-x-"\nnetworks = ["a"]\n')
    config = load_netagent_config(
        path,
        {"METASTACK_NETAGENT_FORCE_METADATA": "true", "METASTACK_NETAGENT_ROUTERS": '["r"]'},
        {"host": "node9"},
    )
    assert config.dhcp_netns("n") == "ms-x-qdhcp-n"
    assert config.networks == ["a"] and config.routers == ["r"]
    assert config.force_metadata
    assert config.dhcp_device_id == "dhcp-node9"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("bridge_name_template", "bridge-for-{network_id}"),  # longer than 15
        ("bridge_name_template", "br-{other}"),
        ("namespace_prefix", "a/b"),
        ("state_path", "relative"),
        ("control_url", "ftp://x"),
        ("metadata_access_mark", "zz"),
    ],
)
def test_rejects(key: str, value: str) -> None:
    with pytest.raises(ConfigError):
        load_netagent_config(environ={}, overrides={key: value})
