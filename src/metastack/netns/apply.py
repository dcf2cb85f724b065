"""Execute namespace plans with iproute2 and iptables through the exec chokepoint."""

from __future__ import annotations

import os
from collections.abc import Iterable

from metastack.netns import exec as netns_exec
from metastack.netns.plan import Command, DeleteNetns, Step, compile_plan


def apply(steps: Iterable[Step]) -> list[Command]:
    """Run a plan; stop at the first failing command (NetnsError). Returns what ran."""
    commands = compile_plan(steps)
    for command in commands:
        netns_exec.run(command.argv, input=command.input)
    return commands


# Where `ip netns add` mounts named namespaces (iproute2's NETNS_RUN_DIR).
NETNS_DIR = "/run/netns"


def list_netns() -> list[str]:
    """Names of the namespaces under /run/netns, the names `ip netns list` shows.

    Read from the folder: `ip netns list` also asks the kernel for each one's id, a
    round trip per namespace that a host with hundreds of guests pays on every pass.
    """
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def delete_netns(names: Iterable[str]) -> None:
    """Delete namespaces, ignoring those already gone; NetnsError if any remains."""
    wanted = set(names)
    if not wanted:
        return
    present = wanted & set(list_netns())
    if not present:
        return
    for command in compile_plan(DeleteNetns(name) for name in sorted(present)):
        netns_exec.run(command.argv, input=command.input, check=False)
    left = present & set(list_netns())
    if left:
        raise netns_exec.NetnsError(f"namespaces not deleted: {', '.join(sorted(left))}")
