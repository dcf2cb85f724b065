"""Proxy settings and listener specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from metastack.errors import ConfigError
from metastack.proxy.config import ListenerConfig, load_proxy_config, parse_listener


def test_parse_listener() -> None:
    spec = parse_listener("netns=qdhcp-1,bind=[FE80::a9fe:a9fe]:80,network=n1,interface=tap0")
    assert spec == ListenerConfig(
        netns="qdhcp-1", host="fe80::a9fe:a9fe", port=80, network_id="n1", interface="tap0"
    )
    assert parse_listener("bind=:9697,router=r1").host == "0.0.0.0"


@pytest.mark.parametrize(
    "text",
    [
        "bind=169.254.169.254:80",
        "bind=169.254.169.254:80,network=a,router=b",
        "netns=../x,network=a",
        "network=a b",
        "bind=example.com:80,network=a",
        "color=blue,network=a",
    ],
)
def test_parse_listener_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listener(text)


def test_env_overrides() -> None:
    config = load_proxy_config(
        environ={
            "METASTACK_PROXY_LISTENERS": '[{"netns": "qrouter-1", "port": 9697,'
            ' "host": "0.0.0.0", "router_id": "r1"}]',
            "METASTACK_PROXY_UPSTREAM_TIMEOUT": "3.5",
        }
    )
    assert config.upstream_timeout == 3.5
    assert config.listeners[0].key == ("qrouter-1", "0.0.0.0", 9697)
    with pytest.raises(ConfigError):
        load_proxy_config(environ={"METASTACK_PROXY_NOPE": "1"})


def test_removed_long_poll_timeout_is_still_accepted(tmp_path: Path) -> None:
    # An old config that sets it must still start the proxy (which warns that it is ignored).
    assert load_proxy_config().long_poll_timeout is None
    path = tmp_path / "proxy.toml"
    path.write_text("[proxy]\nlong_poll_timeout = 330\n")
    assert load_proxy_config(path).long_poll_timeout == 330
    config = load_proxy_config(environ={"METASTACK_PROXY_LONG_POLL_TIMEOUT": "90"})
    assert config.long_poll_timeout == 90
    with pytest.raises(ConfigError, match="long_poll_timeout"):
        load_proxy_config(environ={"METASTACK_PROXY_LONG_POLL_TIMEOUT": "-1"})
