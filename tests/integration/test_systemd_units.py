"""deploy/systemd: every unit passes `systemd-analyze verify` (its ExecStart pointed at this
environment's metastack), is Type=notify with Restart=always, and holds only the
capabilities its service needs."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
INSTALLED = "/opt/metastack/bin/metastack"
SERVICES = ("api", "agent", "proxy", "netagent")
NAMESPACES = {"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"}


def read(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / f"metastack-{name}.service").read_text())
    return parser


def caps(unit: configparser.RawConfigParser, key: str) -> set[str]:
    return set(unit["Service"].get(key, "").split())


@pytest.mark.parametrize("name", SERVICES)
def test_unit_verifies(tmp_path: Path, name: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (scripts/setup installs systemd)")
    metastack = Path(sys.executable).with_name("metastack")
    text = (UNITS / f"metastack-{name}.service").read_text()
    assert f"ExecStart={INSTALLED} {name} --config " in text
    copy = tmp_path / f"metastack-{name}.service"
    copy.write_text(text.replace(INSTALLED, str(metastack)))
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    # Bad values are only warned about (exit status 0): any output is a failure.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")

    broken = tmp_path / "broken" / copy.name
    broken.parent.mkdir()
    broken.write_text(text.replace(INSTALLED, str(tmp_path / "absent")))
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "absent" in done.stderr  # the check has teeth


@pytest.mark.parametrize("name", SERVICES)
def test_unit_shape(name: str) -> None:
    service = read(name)["Service"]
    assert service["Type"] == "notify"
    assert service["Restart"] == "always"
    assert "WatchdogSec" in service
    assert service["ExecStart"].split()[1:3] == [name, "--config"]


def test_capabilities_are_only_what_each_needs() -> None:
    api, agent, proxy, netagent = (read(name) for name in SERVICES)
    for unit in (api, agent):
        assert caps(unit, "CapabilityBoundingSet") == set()
        assert caps(unit, "AmbientCapabilities") == set()
        assert unit["Service"]["NoNewPrivileges"] == "yes"
    assert caps(proxy, "CapabilityBoundingSet") == NAMESPACES
    assert caps(proxy, "AmbientCapabilities") == NAMESPACES
    bound = caps(netagent, "CapabilityBoundingSet")
    assert NAMESPACES | {"CAP_NET_RAW", "CAP_SETUID", "CAP_SETGID"} <= bound
    assert "CAP_SYS_MODULE" not in bound and "CAP_SYS_PTRACE" not in bound
    # dnsmasq keeps serving while the netagent restarts.
    assert netagent["Service"]["KillMode"] == "process"


def test_proxy_and_agent_meet_on_the_socket() -> None:
    """Same user: `deduce` gives the socket mode 0644, owned by that user, which the proxy
    (the owner) may connect to."""
    agent, proxy = read("agent")["Service"], read("proxy")["Service"]
    assert agent["User"] == proxy["User"] != "root"
    from metastack.agent.config import AgentConfig

    assert AgentConfig().socket_mode() == 0o644
