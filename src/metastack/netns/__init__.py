"""Namespaces, links, addresses, NAT: the only code that touches the kernel's networking."""
