"""`metastack <service> --check`; bad config at start: exit 2 naming the key, nothing started."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

METASTACK = str(Path(sys.executable).with_name("metastack"))
SERVICES = ("api", "agent", "proxy", "netagent")


@dataclass
class Setup:
    """A good config of one service in `folder`, and the paths it would create if started."""

    service: str
    folder: Path

    @property
    def database(self) -> Path:
        return self.folder / "api.sqlite"

    @property
    def agent_socket(self) -> Path:
        return self.folder / "agent.sock"

    @property
    def proxy_socket(self) -> Path:
        return self.folder / "proxy.sock"

    @property
    def state(self) -> Path:
        return self.folder / "state"

    def keys(self) -> dict[str, str]:
        return {
            "api": {
                "database_url": f'"sqlite:///{self.database}"',
                "metadata_proxy_shared_secret": '"s"',
                "control_listen": '"127.0.0.1:0"',
                "metadata_listen": '"127.0.0.1:0"',
                "workers": "1",
            },
            "agent": {
                "metadata_proxy_socket": f'"{self.agent_socket}"',
                "metadata_proxy_shared_secret": '"s"',
            },
            "proxy": {
                "metadata_proxy_socket": f'"{self.agent_socket}"',
                "control_socket": f'"{self.proxy_socket}"',
            },
            "netagent": {
                "state_path": f'"{self.state}"',
                "proxy_control_socket": f'"{self.proxy_socket}"',
                "namespace_prefix": '"ms-never-"',
                "dnsmasq_user": '"root"',
            },
        }[self.service]

    def write(self, extra: str = "", text: str | None = None) -> Path:
        path = self.folder / f"{self.service}.toml"
        lines = [f"[{self.service}]", *(f"{k} = {v}" for k, v in self.keys().items()), extra]
        path.write_text(text if text is not None else "\n".join(lines) + "\n")
        return path

    def created(self) -> list[Path]:
        paths = [self.database, self.agent_socket, self.proxy_socket, self.state]
        return [p for p in paths if p.exists()]


def metastack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("METASTACK_")}
    return subprocess.run(
        [METASTACK, *args],
        capture_output=True,
        text=True,
        timeout=20,
        env={**clean, **(env or {})},
    )


@pytest.mark.parametrize("service", SERVICES)
def test_check_accepts_a_good_config_and_starts_nothing(tmp_path: Path, service: str) -> None:
    setup = Setup(service, tmp_path)
    config = setup.write()
    result = metastack(service, "--config", str(config), "--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"metastack {service}: {config}: OK"
    assert setup.created() == []


BAD = {
    "broken TOML": ("", "[{service}\nx = 1\n", "not valid TOML"),
    "unknown key": ("wrokers = 2", None, "{service}.wrokers: Extra inputs are not permitted"),
    "bad value": ("{key} = 'many'", None, "{service}.{key}: Input should be a valid"),
}
NUMBER_KEYS = {
    "api": "workers",
    "agent": "upstream_timeout",
    "proxy": "max_headers",
    "netagent": "feed_wait",
}


@pytest.mark.parametrize("check", [True, False], ids=["check", "start"])
@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("service", SERVICES)
def test_bad_config_exits_2_naming_the_key(
    tmp_path: Path, service: str, kind: str, check: bool
) -> None:
    setup = Setup(service, tmp_path)
    extra, text, needle = BAD[kind]
    key = NUMBER_KEYS[service]
    config = setup.write(
        extra.format(key=key), None if text is None else text.format(service=service)
    )
    if kind == "bad value":  # the good value of the key goes, the bad one stays
        config.write_text(config.read_text().replace(f"{key} = 1\n", ""))
    result = metastack(service, "--config", str(config), *(["--check"] if check else []))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert needle.format(service=service, key=key) in result.stderr
    assert str(config) in result.stderr
    assert "OK" not in result.stdout
    assert setup.created() == []


def test_check_applies_the_environment(tmp_path: Path) -> None:
    setup = Setup("proxy", tmp_path)
    config = str(setup.write())
    # The README's way to disable the control socket: an empty value is accepted.
    good = metastack(
        "proxy", "--config", config, "--check", env={"METASTACK_PROXY_CONTROL_SOCKET": ""}
    )
    assert good.returncode == 0, good.stderr
    bad = metastack("proxy", "--config", config, "--check", env={"METASTACK_PROXY_BACKLOG": "0"})
    assert bad.returncode == 2
    assert "proxy.backlog: Input should be greater than or equal to 1" in bad.stderr


def test_api_check_includes_the_refusals_at_start(tmp_path: Path) -> None:
    setup = Setup("api", tmp_path)
    config = str(setup.write())
    no_secret = metastack(
        "api", "--config", config, "--check", env={"METASTACK_API_METADATA_PROXY_SHARED_SECRET": ""}
    )
    assert no_secret.returncode == 2
    assert "api.metadata_proxy_shared_secret is empty" in no_secret.stderr
    open_control = metastack(
        "api", "--config", config, "--check", "--control-listen", "0.0.0.0:8774"
    )
    assert open_control.returncode == 2
    assert "api.admin_token is not set" in open_control.stderr
    assert setup.created() == []
