"""`[agent]` config: defaults, endpoints, socket modes, environment and validation."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

import pytest

from metastack.agent.config import AgentConfig, deduce_socket_mode, load_agent_config
from metastack.errors import ConfigError


def test_defaults_follow_upstream_names_and_architecture() -> None:
    config = load_agent_config(None, {})
    assert config.metadata_proxy_socket == "/var/lib/metastack/metadata_proxy"
    # deduce, with no metadata_proxy_user: the proxies run as the agent, owner only (0644)
    assert config.metadata_proxy_socket_mode == "deduce"
    assert config.socket_mode() == 0o644
    assert config.metadata_backlog == 4096
    assert config.endpoints() == ["http://127.0.0.1:8775"]
    assert config.control_url == "http://127.0.0.1:8774"


def test_endpoints_from_host_or_list() -> None:
    v6 = AgentConfig(nova_metadata_host="fd00::1", nova_metadata_protocol="https")
    assert v6.endpoints() == ["https://[fd00::1]:8775"]
    several = AgentConfig(metadata_endpoints=["http://a:8775/", "https://b:8775"])
    assert several.endpoints() == ["http://a:8775", "https://b:8775"]


def test_file_env_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[agent]\nmetadata_proxy_socket_mode = "group"\nupstream_timeout = 4\n')
    environ = {
        "METASTACK_AGENT_METADATA_ENDPOINTS": '["http://x:1", "http://y:2"]',
        "METASTACK_AGENT_UPSTREAM_TIMEOUT": "5",
    }
    config = load_agent_config(path, environ, {"metadata_backlog": 128})
    assert config.socket_mode() == 0o664
    assert config.upstream_timeout == 5.0
    assert config.endpoints() == ["http://x:1", "http://y:2"]
    assert config.metadata_backlog == 128


def test_control_url_is_one_url_or_several(tmp_path: Path) -> None:
    assert load_agent_config(None, {}).control_urls() == ["http://127.0.0.1:8774"]
    plain = {"METASTACK_AGENT_CONTROL_URL": "http://c1:8774/"}
    one = load_agent_config(None, plain)
    assert (one.control_url, one.control_urls()) == ("http://c1:8774", ["http://c1:8774"])
    listed = {"METASTACK_AGENT_CONTROL_URL": '["http://c1:8774", "https://c2:8774/"]'}
    assert load_agent_config(None, listed).control_urls() == ["http://c1:8774", "https://c2:8774"]
    path = tmp_path / "m.toml"
    path.write_text('[agent]\ncontrol_url = ["http://c1:8774", "http://c2:8774"]\n')
    assert load_agent_config(path, {}).control_urls() == ["http://c1:8774", "http://c2:8774"]
    flags = load_agent_config(None, {}, {"control_url": ["http://c3:8774"]})
    assert flags.control_urls() == ["http://c3:8774"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"metadata_proxy_socket_mode": "world"}, "metadata_proxy_socket_mode"),
        ({"metadata_endpoints": ["ftp://x"]}, "metadata_endpoints"),
        ({"metadata_backlog": 0}, "metadata_backlog"),
        ({"upstream_timeout": 0}, "upstream_timeout"),
        ({"upstream_concurrency": -1}, "upstream_concurrency"),
        ({"feed_wait": 61}, "feed_wait"),
        ({"metadata_proxy_shared_secret": "a\nb"}, "metadata_proxy_shared_secret"),
        ({"control_url": "127.0.0.1:8774"}, "control_url"),
        ({"control_url": ["http://c1:8774", "c2:8774"]}, "control_url"),
        ({"control_url": []}, "control_url"),
        ({"unknown_option": 1}, "unknown_option"),
    ],
)
def test_invalid_values_name_the_option(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"agent.{field}"):
        load_agent_config(None, {}, overrides)


def test_deduce_like_upstream() -> None:
    me = str(os.geteuid())
    my_name = pwd.getpwuid(os.geteuid()).pw_name
    my_group = grp.getgrgid(os.getegid()).gr_name
    assert deduce_socket_mode("", "") == "user"
    assert deduce_socket_mode("root", "") == "user"
    assert deduce_socket_mode("0", "nogroup") == "user"
    assert deduce_socket_mode(me, "") == "user"
    assert deduce_socket_mode(my_name, "nogroup") == "user"
    assert deduce_socket_mode("nobody", "") == "group"
    assert deduce_socket_mode("nobody", str(os.getegid())) == "group"
    assert deduce_socket_mode("nobody", my_group) == "group"
    assert deduce_socket_mode("nobody", "nogroup") == "all"
    assert deduce_socket_mode("no-such-user", "no-such-group") == "all"


def test_deduce_for_an_agent_that_is_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """neutron's rule for an unprivileged agent: `root` and `0` still mean owner only."""
    monkeypatch.setattr(os, "geteuid", lambda: 12345)
    monkeypatch.setattr(os, "getegid", lambda: 12346)
    assert deduce_socket_mode("", "") == "user"
    assert deduce_socket_mode("root", "x") == "user"
    assert deduce_socket_mode("12345", "x") == "user"
    assert deduce_socket_mode("nobody", "12346") == "group"
    assert deduce_socket_mode("nobody", "") == "group"
    assert deduce_socket_mode("nobody", "0") == "all"
    mode = AgentConfig(metadata_proxy_user="nobody", metadata_proxy_group="nogroup")
    assert mode.socket_mode() == 0o666
