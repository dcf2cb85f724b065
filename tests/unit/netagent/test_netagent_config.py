"""`[netagent]` settings: defaults, environment, validation of names."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from metastack.errors import ConfigError
from metastack.netagent.cli import netagent_command
from metastack.netagent.config import load_netagent_config
from metastack.netns.dnsmasq import unsearchable_folder


def test_defaults_follow_upstream() -> None:
    config = load_netagent_config(environ={})
    assert config.enable_isolated_metadata and not config.force_metadata
    assert config.metadata_port == 9697
    assert config.state_path == "/var/lib/metastack"
    assert config.dhcp_netns("n1") == "qdhcp-n1"
    assert config.router_netns("r1") == "qrouter-r1"
    assert config.bridge_name("0123456789abcdef") == "ms-br-01234567"
    assert config.report_interval == 30  # neutron's
    assert config.capabilities == ["dhcp", "l3", "metadata"]
    assert config.networks == [] and config.routers == []  # what is scheduled to it


def test_capabilities_from_env_and_refused_when_unknown_or_repeated() -> None:
    config = load_netagent_config(environ={"METASTACK_NETAGENT_CAPABILITIES": '["l3"]'})
    assert config.capabilities == config.reported_capabilities == ["l3"]
    for bad in ('["dhcp", "dhcp"]', '["firewall"]'):
        with pytest.raises(ConfigError, match="capabilities"):
            load_netagent_config(environ={"METASTACK_NETAGENT_CAPABILITIES": bad})


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


def test_control_url_is_one_url_or_several() -> None:
    one = load_netagent_config(environ={"METASTACK_NETAGENT_CONTROL_URL": "http://c1:8774"})
    assert one.control_urls() == ["http://c1:8774"]
    several = load_netagent_config(
        environ={"METASTACK_NETAGENT_CONTROL_URL": '["http://c1:8774/", "http://c2:8774"]'}
    )
    assert several.control_urls() == ["http://c1:8774", "http://c2:8774"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("bridge_name_template", "bridge-for-{network_id}"),  # longer than 15
        ("bridge_name_template", "br-{other}"),
        ("namespace_prefix", "a/b"),
        ("state_path", "relative"),
        ("control_url", "ftp://x"),
        ("control_url", ["http://c1", "ftp://x"]),
        ("metadata_access_mark", "zz"),
        ("report_interval", "0"),
    ],
)
def test_rejects(key: str, value: object) -> None:
    with pytest.raises(ConfigError):
        load_netagent_config(environ={}, overrides={key: value})


def test_unsearchable_state_path_is_named() -> None:
    # Under /var/tmp: pytest's own temporary folders are closed to other users.
    with tempfile.TemporaryDirectory(dir="/var/tmp") as scratch:
        top = Path(scratch)
        top.chmod(0o755)
        closed = top / "closed"
        closed.mkdir()
        closed.chmod(0o700)
        assert unsearchable_folder(closed / "state" / "dhcp") == closed
        closed.chmod(0o711)
        assert unsearchable_folder(closed / "state" / "dhcp") is None


def test_netagent_refuses_a_state_path_dnsmasq_cannot_enter(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    tmp_path.chmod(0o755)
    state = closed / "state"
    result = CliRunner().invoke(
        netagent_command,
        ["--state-path", str(state), "--control-url", "http://127.0.0.1:9"],
        env={"METASTACK_NETAGENT_ADMIN_TOKEN": "t"},
    )
    assert result.exit_code == 2, result.output
    assert f"{closed} is not searchable by other users" in result.output
    assert not state.exists()  # nothing made, nothing started
