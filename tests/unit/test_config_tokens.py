"""The control API's token: required off loopback, read from a file, never shown."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from metastack.agent.config import load_agent_config
from metastack.api.server import startup_problem
from metastack.config import ApiConfig, is_loopback, load_api_config
from metastack.errors import ConfigError
from metastack.netagent.config import load_netagent_config

TOKEN = "tok-5e1f2a9c7b"
SECRET = "sec-0d3b8e6a41"
LOADERS: dict[str, Callable[..., Any]] = {
    "api": load_api_config,
    "agent": load_agent_config,
    "netagent": load_netagent_config,
}


def api(**fields: Any) -> ApiConfig:
    return ApiConfig.model_validate({"metadata_proxy_shared_secret": SECRET, **fields})


@pytest.mark.parametrize("section", sorted(LOADERS))
def test_token_file_is_read_with_its_newline_stripped(tmp_path: Path, section: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config_file = tmp_path / "m.toml"
    config_file.write_text(f'[{section}]\nadmin_token_file = "{token_file}"\n')
    config = LOADERS[section](config_file, {})
    assert config.admin_token == TOKEN
    from_env = LOADERS[section](
        None, {f"METASTACK_{section.upper()}_ADMIN_TOKEN_FILE": str(token_file)}
    )
    assert from_env.admin_token == TOKEN


@pytest.mark.parametrize("section", sorted(LOADERS))
def test_token_and_token_file_together_are_refused(tmp_path: Path, section: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    environ = {
        f"METASTACK_{section.upper()}_ADMIN_TOKEN": TOKEN,
        f"METASTACK_{section.upper()}_ADMIN_TOKEN_FILE": str(token_file),
    }
    with pytest.raises(ConfigError) as caught:
        LOADERS[section](None, environ)
    assert f"{section}.admin_token_file: admin_token is set too" in str(caught.value)
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "cannot read"), ("\n", "is empty"), (f"{TOKEN}\nmore\n", "more than one line")],
)
def test_unusable_token_file_names_the_key(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_api_config(None, {"METASTACK_API_ADMIN_TOKEN_FILE": str(token_file)})
    assert str(caught.value).startswith("api.admin_token_file: ")
    assert str(token_file) in str(caught.value)
    assert reason in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_secrets_stay_out_of_repr_and_error_messages(tmp_path: Path) -> None:
    config = api(admin_token=TOKEN)
    for text in (repr(config), str(config)):
        assert TOKEN not in text
        assert SECRET not in text
    agent = load_agent_config(
        None,
        {
            "METASTACK_AGENT_ADMIN_TOKEN": TOKEN,
            "METASTACK_AGENT_METADATA_PROXY_SHARED_SECRET": SECRET,
        },
    )
    assert TOKEN not in repr(agent) and SECRET not in repr(agent)
    netagent = load_netagent_config(None, {"METASTACK_NETAGENT_ADMIN_TOKEN": TOKEN})
    assert TOKEN not in repr(netagent)
    # a bad token, and a bad key beside a good token: the message names keys, not values
    with pytest.raises(ConfigError) as caught:
        load_api_config(None, {"METASTACK_API_ADMIN_TOKEN": TOKEN + "\r\nX-Evil: 1"})
    assert "api.admin_token: must not contain line breaks" in str(caught.value)
    assert TOKEN not in str(caught.value)
    path = tmp_path / "m.toml"
    path.write_text(f'[api]\nadmin_token = "{TOKEN}"\nworkers = "{TOKEN}"\n')
    with pytest.raises(ConfigError) as caught:
        load_api_config(path)
    assert "api.workers" in str(caught.value)
    assert TOKEN not in str(caught.value)
    # pydantic's own error text, for code that builds a config directly
    with pytest.raises(ValidationError) as invalid:
        ApiConfig(admin_token=TOKEN + "\n", metadata_proxy_shared_secret=SECRET + "\n")
    assert TOKEN not in str(invalid.value) and SECRET not in str(invalid.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.8.7", "[::1]", "localhost"])
def test_loopback_needs_no_token(host: str) -> None:
    assert startup_problem(api(control_listen=f"{host}:8774")) is None


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:8774", ":8774", "[::]:8774", "10.1.2.3:8774", "controller:8774"]
)
def test_any_other_address_needs_a_token(listen: str) -> None:
    problem = startup_problem(api(control_listen=listen))
    assert problem is not None
    assert problem.startswith("api.admin_token is not set")
    assert "admin_token_file" in problem
    assert startup_problem(api(control_listen=listen, admin_token=TOKEN)) is None
    # an empty token is no token
    assert startup_problem(api(control_listen=listen, admin_token="")) is not None
    # a metadata-only process does not serve the control API at all
    assert startup_problem(api(control_listen=listen, enabled_apis=["metadata"])) is None


def test_defaults_listen_on_loopback_and_pass() -> None:
    config = api()
    assert config.control_listen == "127.0.0.1:8774"
    assert config.admin_token is None
    assert startup_problem(config) is None
    assert is_loopback("::1") and not is_loopback("::") and not is_loopback("example.org")
