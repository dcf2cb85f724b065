"""Pure namespace plans: typed steps compiled into as few `ip -batch` commands as possible.

A plan is applied phase by phase (namespaces, sysctls, bridges, veths, link settings,
routes, firewall rules), so callers list steps in any order; within a phase one
`ip -n NS -batch -` per namespace does all of that namespace's work.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class AddNetns:
    name: str


@dataclass(frozen=True, slots=True)
class DeleteNetns:
    name: str


@dataclass(frozen=True, slots=True)
class Sysctl:
    netns: str
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class AddBridge:
    netns: str
    name: str


@dataclass(frozen=True, slots=True)
class AddVeth:
    """A veth pair created inside `netns` with its peer moved into `peer_netns` at once."""

    netns: str
    name: str
    peer_netns: str
    peer_name: str


@dataclass(frozen=True, slots=True)
class SetMaster:
    netns: str
    link: str
    master: str


@dataclass(frozen=True, slots=True)
class LinkUp:
    netns: str
    link: str


@dataclass(frozen=True, slots=True)
class AddAddress:
    netns: str
    link: str
    cidr: str
    nodad: bool = False


@dataclass(frozen=True, slots=True)
class AddRoute:
    netns: str
    dest: str
    via: str | None = None
    dev: str | None = None


@dataclass(frozen=True, slots=True)
class SetLink:
    """Set a link's MAC address and/or MTU."""

    netns: str
    link: str
    mac: str | None = None
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class DeleteLink:
    netns: str
    link: str


@dataclass(frozen=True, slots=True)
class DeleteAddress:
    netns: str
    link: str
    cidr: str


@dataclass(frozen=True, slots=True)
class DeleteRoute:
    netns: str
    dest: str
    via: str | None = None
    dev: str | None = None


@dataclass(frozen=True, slots=True)
class FirewallRule:
    """One iptables rule (`rule` = the words after `-A CHAIN`) inside a namespace."""

    netns: str
    table: Literal["filter", "nat", "mangle", "raw"]
    chain: str
    rule: tuple[str, ...]
    family: Literal[4, 6] = 4


@dataclass(frozen=True, slots=True)
class ReplaceFirewall:
    """Make the listed tables of a namespace hold exactly `rules`, atomically.

    Compiled to one `iptables-restore` without --noflush: every table named in `tables`
    is flushed and refilled in a single commit, so no packet sees a half-written set.
    """

    netns: str
    rules: tuple[FirewallRule, ...]
    tables: tuple[str, ...] = ("filter", "nat", "mangle")
    family: Literal[4, 6] = 4


Step = (
    AddNetns
    | DeleteNetns
    | Sysctl
    | AddBridge
    | AddVeth
    | SetMaster
    | LinkUp
    | AddAddress
    | AddRoute
    | FirewallRule
    | SetLink
    | DeleteLink
    | DeleteAddress
    | DeleteRoute
    | ReplaceFirewall
)

# Removals come before additions, so a link, address or route can be replaced in one plan.
_PHASES: dict[type, int] = {
    AddNetns: 0,
    Sysctl: 10,
    DeleteRoute: 11,
    DeleteAddress: 12,
    DeleteLink: 13,
    AddBridge: 20,
    AddVeth: 30,
    SetLink: 40,
    SetMaster: 40,
    LinkUp: 40,
    AddAddress: 40,
    AddRoute: 50,
    FirewallRule: 60,
    ReplaceFirewall: 61,
    DeleteNetns: 70,
}


@dataclass(frozen=True, slots=True)
class Command:
    """One process to run: argv plus what to feed its standard input."""

    argv: tuple[str, ...]
    input: str | None = None


def ip_line(step: Step) -> str:
    """The `ip -batch` line of a step that `ip` performs (everything but sysctl/firewall)."""
    match step:
        case AddNetns(name):
            return f"netns add {name}"
        case DeleteNetns(name):
            return f"netns delete {name}"
        case AddBridge(_, name):
            return f"link add {name} type bridge"
        case AddVeth(_, name, peer_netns, peer_name):
            return f"link add {name} type veth peer name {peer_name} netns {peer_netns}"
        case SetMaster(_, link, master):
            return f"link set {link} master {master}"
        case LinkUp(_, link):
            return f"link set {link} up"
        case AddAddress(_, link, cidr, nodad):
            return f"addr add {cidr} dev {link}" + (" nodad" if nodad else "")
        case AddRoute(_, dest, via, dev):
            return (
                f"route add {dest}"
                + (f" via {via}" if via else "")
                + (f" dev {dev}" if dev else "")
            )
        case SetLink(_, link, mac, mtu):
            return (
                f"link set {link}"
                + (f" address {mac}" if mac else "")
                + (f" mtu {mtu}" if mtu else "")
            )
        case DeleteLink(_, link):
            return f"link del {link}"
        case DeleteAddress(_, link, cidr):
            return f"addr del {cidr} dev {link}"
        case DeleteRoute(_, dest, via, dev):
            return (
                f"route del {dest}"
                + (f" via {via}" if via else "")
                + (f" dev {dev}" if dev else "")
            )
    raise ValueError(f"{step!r} is not an ip step")


def _iptables_restore(netns: str, family: int, rules: Sequence[FirewallRule]) -> Command:
    tables: dict[str, list[str]] = {}
    for rule in rules:
        tables.setdefault(rule.table, []).append(f"-A {rule.chain} {' '.join(rule.rule)}")
    text = "".join(
        f"*{table}\n" + "".join(f"{line}\n" for line in lines) + "COMMIT\n"
        for table, lines in tables.items()
    )
    tool = "iptables-restore" if family == 4 else "ip6tables-restore"
    return Command(("ip", "netns", "exec", netns, tool, "--noflush"), text)


def _replace_tables(step: ReplaceFirewall) -> Command:
    lines: dict[str, list[str]] = {table: [] for table in step.tables}
    for rule in step.rules:
        if rule.table not in lines:
            raise ValueError(f"rule for table {rule.table} outside {step.tables}")
        lines[rule.table].append(f"-A {rule.chain} {' '.join(rule.rule)}")
    text = "".join(
        f"*{table}\n" + "".join(f"{line}\n" for line in rules) + "COMMIT\n"
        for table, rules in lines.items()
    )
    tool = "iptables-restore" if step.family == 4 else "ip6tables-restore"
    return Command(("ip", "netns", "exec", step.netns, tool), text)


def compile_plan(steps: Iterable[Step]) -> list[Command]:
    """Turn steps into commands: one per (phase, namespace), in phase order."""
    groups: dict[tuple[int, str, int], list[Step]] = {}
    for step in steps:
        phase = _PHASES[type(step)]
        netns = "" if isinstance(step, AddNetns | DeleteNetns) else step.netns
        family: int = step.family if isinstance(step, FirewallRule | ReplaceFirewall) else 0
        groups.setdefault((phase, netns, family), []).append(step)
    commands: list[Command] = []
    for (phase, netns, family), group in sorted(groups.items(), key=lambda item: item[0][0]):
        if phase == _PHASES[Sysctl]:
            pairs = [f"{s.key}={s.value}" for s in group if isinstance(s, Sysctl)]
            commands.append(Command(("ip", "netns", "exec", netns, "sysctl", "-qw", *pairs)))
        elif phase == _PHASES[FirewallRule]:
            rules = [s for s in group if isinstance(s, FirewallRule)]
            commands.append(_iptables_restore(netns, family, rules))
        elif phase == _PHASES[ReplaceFirewall]:
            commands += [_replace_tables(s) for s in group if isinstance(s, ReplaceFirewall)]
        else:
            argv: tuple[str, ...] = ("ip", "-batch", "-")
            if netns:
                argv = ("ip", "-n", netns, "-batch", "-")
            elif phase == _PHASES[DeleteNetns]:
                argv = ("ip", "-force", "-batch", "-")
            commands.append(Command(argv, "".join(ip_line(s) + "\n" for s in group)))
    return commands


def metadata_redirect_rules(
    netns: str, port: int, mark: str = "0x1/0xffff", in_iface: str = "qr-+"
) -> list[FirewallRule]:
    """Upstream l3-agent rules: redirect 169.254.169.254:80 from router ports to `port`.

    Redirected packets are marked; only marked traffic may reach `port`, and marked
    traffic is never forwarded.
    """
    match = ("-d", "169.254.169.254/32", "-i", in_iface, "-p", "tcp", "--dport", "80")
    marked = ("-m", "mark", "--mark", mark)
    return [
        FirewallRule(netns, "mangle", "PREROUTING", (*match, "-j", "MARK", "--set-xmark", mark)),
        FirewallRule(
            netns, "nat", "PREROUTING", (*match, "-j", "REDIRECT", "--to-ports", str(port))
        ),
        FirewallRule(netns, "filter", "INPUT", (*marked, "-j", "ACCEPT")),
        FirewallRule(netns, "filter", "INPUT", ("-p", "tcp", "--dport", str(port), "-j", "DROP")),
        FirewallRule(netns, "filter", "FORWARD", (*marked, "-j", "DROP")),
    ]
