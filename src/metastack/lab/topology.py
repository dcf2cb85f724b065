"""A lab of namespaces named `ms-<run>-...`, built from plans and removed exactly.

One fabric namespace holds a Linux bridge per network; every other namespace (guest,
DHCP, router) gets a veth created inside the fabric with its peer placed directly in
that namespace, so nothing is ever created in the root namespace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from metastack.netns.apply import apply, delete_netns
from metastack.netns.plan import (
    AddAddress,
    AddBridge,
    AddNetns,
    AddRoute,
    AddVeth,
    LinkUp,
    SetMaster,
    Step,
    Sysctl,
    metadata_redirect_rules,
)

METADATA_V4 = "169.254.169.254"
METADATA_V6 = "fe80::a9fe:a9fe"
ROUTER_PROXY_PORT = 9697


@dataclass(frozen=True, slots=True)
class Network:
    name: str
    cidr: ipaddress.IPv4Network
    bridge: str

    def host(self, index: int) -> str:
        """The index-th address of the network (1 = gateway by convention)."""
        return str(self.cidr.network_address + index)


@dataclass(frozen=True, slots=True)
class Guest:
    netns: str
    network: Network
    address: str
    interface: str = "eth0"


@dataclass(frozen=True, slots=True)
class DhcpNamespace:
    netns: str
    network: Network
    address: str
    interface: str


@dataclass(frozen=True, slots=True)
class RouterNamespace:
    netns: str
    # network name -> (interface, gateway address)
    ports: dict[str, tuple[str, str]]


@dataclass
class Lab:
    """Builder and cleanup registry: plan with network()/dhcp()/router()/guest(), then apply().

    Use as a context manager; cleanup() removes every namespace and file this lab made,
    also those of a half-applied plan, and may be called any number of times.
    """

    run_id: str
    ipv6: bool = False
    etc_netns: Path = Path("/etc/netns")
    networks: dict[str, Network] = field(default_factory=dict)
    _pending: list[Step] = field(default_factory=list)
    _netns: list[str] = field(default_factory=list)
    _files: list[Path] = field(default_factory=list)
    _ports: int = 0
    _counts: dict[str, int] = field(default_factory=dict)
    _made_etc_netns: bool = False

    @property
    def prefix(self) -> str:
        return f"ms-{self.run_id}-"

    @property
    def fabric(self) -> str:
        return f"{self.prefix}fabric"

    def _name(self, kind: str) -> str:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        return f"{self.prefix}{kind}{self._counts[kind]}"

    def _add_netns(self, name: str) -> None:
        self._netns.append(name)
        self._pending += [AddNetns(name), LinkUp(name, "lo")]
        if self.ipv6:
            # Tentative addresses cannot be used as a source: skip DAD inside the lab.
            self._pending += [
                Sysctl(name, "net.ipv6.conf.all.accept_dad", "0"),
                Sysctl(name, "net.ipv6.conf.default.accept_dad", "0"),
            ]

    def _plug(self, netns: str, interface: str, network: Network) -> None:
        if not self._netns or self._netns[0] != self.fabric:
            raise RuntimeError("add a network first")
        self._ports += 1
        port = f"p{self._ports}"
        self._pending += [
            AddVeth(self.fabric, port, netns, interface),
            SetMaster(self.fabric, port, network.bridge),
            LinkUp(self.fabric, port),
            LinkUp(netns, interface),
        ]

    def network(self, name: str, cidr: str) -> Network:
        """Plan a network: a bridge in the fabric namespace (created with the first one)."""
        if not self._netns:
            self._add_netns(self.fabric)
        net = Network(name, ipaddress.IPv4Network(cidr), f"br{len(self.networks) + 1}")
        self.networks[name] = net
        self._pending += [AddBridge(self.fabric, net.bridge), LinkUp(self.fabric, net.bridge)]
        return net

    def dhcp(self, network: Network, host: int = 2) -> DhcpNamespace:
        """Plan a DHCP namespace `qdhcp-N` with 169.254.169.254/32 and a subnet address."""
        netns = self._name("qdhcp-")
        self._add_netns(netns)
        ns = DhcpNamespace(netns, network, network.host(host), "tap0")
        self._plug(netns, ns.interface, network)
        self._pending += [
            AddAddress(netns, ns.interface, f"{ns.address}/{network.cidr.prefixlen}"),
            AddAddress(netns, ns.interface, f"{METADATA_V4}/32"),
        ]
        if self.ipv6:
            self._pending.append(AddAddress(netns, ns.interface, f"{METADATA_V6}/128", True))
        return ns

    def router(self, networks: list[Network], port: int = ROUTER_PROXY_PORT) -> RouterNamespace:
        """Plan a router namespace: gateway .1 on a `qr-` port per network, metadata NAT."""
        netns = self._name("qrouter-")
        self._add_netns(netns)
        ports: dict[str, tuple[str, str]] = {}
        for i, net in enumerate(networks):
            iface = f"qr-{i}"
            self._plug(netns, iface, net)
            self._pending.append(AddAddress(netns, iface, f"{net.host(1)}/{net.cidr.prefixlen}"))
            ports[net.name] = (iface, net.host(1))
        self._pending += metadata_redirect_rules(netns, port)
        return RouterNamespace(netns, ports)

    def guest(
        self,
        network: Network,
        host: int,
        metadata_via: DhcpNamespace | Literal["gateway"] | None = "gateway",
    ) -> Guest:
        """Plan a guest namespace with `eth0` on the network and a default route via .1.

        `metadata_via` a DHCP namespace adds the 169.254.169.254/32 route DHCP option 121
        would give; "gateway" leaves metadata to the router's redirect.
        """
        netns = self._name("g")
        self._add_netns(netns)
        guest = Guest(netns, network, network.host(host))
        self._plug(netns, guest.interface, network)
        self._pending += [
            AddAddress(netns, guest.interface, f"{guest.address}/{network.cidr.prefixlen}"),
            AddRoute(netns, "default", via=network.host(1)),
        ]
        if isinstance(metadata_via, DhcpNamespace):
            self._pending.append(AddRoute(netns, f"{METADATA_V4}/32", via=metadata_via.address))
        resolv = self.etc_netns / netns / "resolv.conf"
        if not self.etc_netns.exists():
            self._made_etc_netns = True
        self._files.append(resolv)
        resolv.parent.mkdir(parents=True, exist_ok=True)
        # Name lookups inside a guest fail at once and never leave it.
        resolv.write_text("nameserver 127.0.0.1\n")
        return guest

    def namespace(self, kind: str = "ns") -> str:
        """Plan a bare namespace (loopback up only), e.g. for listener benchmarks."""
        netns = self._name(kind)
        self._add_netns(netns)
        return netns

    def planned(self) -> list[Step]:
        """Steps planned and not yet applied."""
        return list(self._pending)

    def apply(self) -> None:
        """Create everything planned since the last apply()."""
        steps, self._pending = self._pending, []
        apply(steps)

    @property
    def namespaces(self) -> list[str]:
        """Every namespace this lab has planned or created, in order."""
        return list(self._netns)

    def cleanup(self) -> None:
        """Remove every namespace and file this lab made; safe to repeat."""
        self._pending = []
        for path in self._files:
            path.unlink(missing_ok=True)
            if path.parent.is_dir() and not any(path.parent.iterdir()):
                shutil.rmtree(path.parent, ignore_errors=True)
        self._files = []
        if self._made_etc_netns:
            with contextlib.suppress(OSError):  # another lab may still use it
                self.etc_netns.rmdir()
        # Guests first, fabric last: removing a guest namespace removes its veth pair.
        delete_netns(reversed(self._netns))
        self._netns = []

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
