"""dnsmasq's hosts file, options file and command line (pure rendering)."""

from __future__ import annotations

from pathlib import Path

from metastack.netns.dnsmasq import (
    DhcpHost,
    DhcpOption,
    DhcpRange,
    DnsmasqConfig,
    DnsmasqFiles,
    command_line,
    render_hosts,
    render_opts,
    write_if_changed,
)

CONFIG = DnsmasqConfig(
    netns="ms-t-qdhcp-n1",
    interface="ns-44444444-44",
    ranges=(DhcpRange("subnet-s1", "10.0.0.0/24"), DhcpRange("subnet-s2", "10.1.0.0/16")),
    hosts=(DhcpHost("fa:16:3e:00:00:05", "host-10-0-0-5", "10.0.0.5"),),
    options=(
        DhcpOption(
            "subnet-s1",
            "option:classless-static-route",
            ("169.254.169.254/32", "10.0.0.2", "0.0.0.0/0", "10.0.0.1"),
        ),
        DhcpOption("subnet-s1", "249", ("169.254.169.254/32", "10.0.0.2", "0.0.0.0/0", "10.0.0.1")),
        DhcpOption("subnet-s1", "option:router", ("10.0.0.1",)),
        DhcpOption("subnet-s2", "option:router"),
        DhcpOption("subnet-s1", "option:mtu", ("1450",)),
    ),
    lease_duration=600,
)
FILES = DnsmasqFiles(Path("/var/lib/metastack/dhcp/n1"))


def test_hosts_file() -> None:
    assert render_hosts(CONFIG) == "fa:16:3e:00:00:05,host-10-0-0-5,10.0.0.5\n"


def test_opts_file() -> None:
    assert render_opts(CONFIG) == (
        "tag:subnet-s1,option:classless-static-route,"
        "169.254.169.254/32,10.0.0.2,0.0.0.0/0,10.0.0.1\n"
        "tag:subnet-s1,249,169.254.169.254/32,10.0.0.2,0.0.0.0/0,10.0.0.1\n"
        "tag:subnet-s1,option:router,10.0.0.1\n"
        "tag:subnet-s2,option:router\n"
        "tag:subnet-s1,option:mtu,1450\n"
    )


def test_command_line() -> None:
    argv = command_line(CONFIG, FILES, "/usr/sbin/dnsmasq", user="nobody")
    assert argv[0] == "/usr/sbin/dnsmasq"
    assert "--port=0" in argv  # DHCP only
    assert "--interface=ns-44444444-44" in argv
    assert "--pid-file=/var/lib/metastack/dhcp/n1/pid" in argv
    assert "--dhcp-hostsfile=/var/lib/metastack/dhcp/n1/host" in argv
    assert "--dhcp-optsfile=/var/lib/metastack/dhcp/n1/opts" in argv
    assert "--user=nobody" in argv
    assert [a for a in argv if a.startswith("--dhcp-range=")] == [
        "--dhcp-range=set:subnet-s1,10.0.0.0,static,255.255.255.0,600s",
        "--dhcp-range=set:subnet-s2,10.1.0.0,static,255.255.0.0,600s",
    ]


def test_hosts_and_options_do_not_change_the_command_line() -> None:
    # Lease changes are a SIGHUP, never a restart.
    other = DnsmasqConfig(CONFIG.netns, CONFIG.interface, CONFIG.ranges, (), (), 600)
    assert command_line(other, FILES) == command_line(CONFIG, FILES)


def test_write_if_changed(tmp_path: Path) -> None:
    path = tmp_path / "d" / "host"
    assert write_if_changed(path, "a\n")
    assert not write_if_changed(path, "a\n")
    assert write_if_changed(path, "b\n")
    assert path.read_text() == "b\n"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
