"""The EC2-style tree: walking it by path tokens and printing nodes as nova does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias


class RequestAddress:
    """Placeholder leaf for `local-ipv4` when the instance has no fixed IPv4 address.

    nova then serves the address the request came from, so the leaf cannot be
    rendered ahead of time.
    """

    __slots__ = ()


REQUEST_ADDRESS = RequestAddress()

Leaf: TypeAlias = str | bytes | int | RequestAddress | None
Node: TypeAlias = Leaf | list[str] | Mapping[str, "Node"]


class NotInTree:
    """Marker for a path that does not lead to a node."""

    __slots__ = ()


NOT_IN_TREE = NotInTree()


def find(node: Node, tokens: Sequence[str]) -> Node | NotInTree:
    """Follow `tokens` down from `node`.

    Only mappings have children: a token under a leaf or a list is not in the
    tree (nova raises TypeError there and answers 500; we answer 404).
    """
    for token in tokens:
        if not isinstance(node, Mapping):
            return NOT_IN_TREE
        child = node.get(token, NOT_IN_TREE)
        if isinstance(child, NotInTree):
            return child
        node = child
    return node


def render_listing(mapping: Mapping[str, Node]) -> str:
    """One line per key in sorted order; sub-mappings as `key/` or their `_name`."""
    lines = []
    for key in sorted(mapping):
        if key == "_name":
            continue
        child = mapping[key]
        if isinstance(child, Mapping):
            lines.append(str(child["_name"]) if "_name" in child else key + "/")
        else:
            lines.append(key)
    return "\n".join(lines)


def render(node: Node, request_address: str | None = None) -> bytes:
    """The response body for a node, following nova's `ec2_md_print`."""
    if isinstance(node, bytes):
        return node
    if isinstance(node, str):
        return node.encode("utf-8")
    if isinstance(node, Mapping):
        return render_listing(node).encode("utf-8")
    if isinstance(node, list):
        return "\n".join(node).encode("utf-8")
    if isinstance(node, RequestAddress):
        node = request_address
    return str(node).encode("utf-8")
