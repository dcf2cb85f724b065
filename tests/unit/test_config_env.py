"""Environment overrides: the raw text for scalars (empty allowed), JSON for lists and tables."""

from __future__ import annotations

import pytest

from metastack.agent.config import load_agent_config
from metastack.config import load_api_config
from metastack.errors import ConfigError
from metastack.netagent.config import load_netagent_config
from metastack.proxy.config import load_proxy_config


def test_an_empty_string_is_a_string() -> None:
    # The README's way to disable the proxy's control socket.
    config = load_proxy_config(None, {"METASTACK_PROXY_CONTROL_SOCKET": ""})
    assert config.control_socket == ""
    assert load_netagent_config(None, {"METASTACK_NETAGENT_FABRIC_NETNS": ""}).fabric_netns == ""
    assert load_api_config(None, {"METASTACK_API_DHCP_DOMAIN": ""}).dhcp_domain == ""


def test_scalars_are_the_raw_text() -> None:
    config = load_api_config(
        None,
        {
            "METASTACK_API_CONTROL_LISTEN": "[::1]:8774",  # starts like JSON; still text
            "METASTACK_API_METADATA_PROXY_SHARED_SECRET": '{"not": "json"}',
            "METASTACK_API_WORKERS": "3",
            "METASTACK_API_SERVICE_METADATA_PROXY": "false",
        },
    )
    assert config.control_listen == "[::1]:8774"
    assert config.metadata_proxy_shared_secret == '{"not": "json"}'
    assert config.workers == 3
    assert config.service_metadata_proxy is False
    agent = load_agent_config(None, {"METASTACK_AGENT_UPSTREAM_TIMEOUT": "2.5"})
    assert agent.upstream_timeout == 2.5


def test_lists_and_tables_are_json() -> None:
    config = load_api_config(
        None,
        {
            "METASTACK_API_ENABLED_APIS": '["control"]',
            "METASTACK_API_VENDORDATA": '{"providers": ["DynamicJSON"]}',
        },
    )
    assert config.enabled_apis == ["control"]
    assert config.vendordata.providers == ["DynamicJSON"]
    listeners = '[{"netns": "qdhcp-1", "network_id": "n1"}]'
    proxy = load_proxy_config(None, {"METASTACK_PROXY_LISTENERS": listeners})
    assert [(item.netns, item.network_id) for item in proxy.listeners] == [("qdhcp-1", "n1")]


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("METASTACK_API_ENABLED_APIS", "control", "api.enabled_apis is a list or table"),
        ("METASTACK_API_ENABLED_APIS", "", "expected JSON"),
        ("METASTACK_API_VENDORDATA", "{", "api.vendordata is a list or table"),
        ("METASTACK_API_WORKERS", "", "api.workers"),
        ("METASTACK_API_WORKERS", "two", "api.workers"),
        ("METASTACK_API_NOPE", "1", "unknown option api.nope"),
    ],
)
def test_bad_values_name_the_variable_or_key(variable: str, value: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_api_config(None, {variable: value})
    assert needle in str(caught.value)
