"""Topology builder for demo, tests and benchmarks: guests, DHCP and router namespaces."""

from metastack.lab.topology import DhcpNamespace, Guest, Lab, Network, RouterNamespace

__all__ = ["DhcpNamespace", "Guest", "Lab", "Network", "RouterNamespace"]
