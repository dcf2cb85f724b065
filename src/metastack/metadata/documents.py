"""All documents of one instance, resolved from request paths and memoized."""

from __future__ import annotations

from typing import Final

from metastack.metadata.ec2 import ec2_tree, hostname
from metastack.metadata.model import Instance
from metastack.metadata.network_data import network_data
from metastack.metadata.openstack import (
    dump_json,
    meta_data_json,
    vendor_data_json,
    version_listing,
)
from metastack.metadata.results import (
    APPLICATION_JSON,
    MISSING,
    TEXT_PLAIN,
    Document,
    PasswordFile,
    RenderOptions,
    Result,
    VendorData2,
)
from metastack.metadata.tree import Node, NotInTree, RequestAddress, find, render
from metastack.metadata.versions import (
    EC2_VERSION_LIST,
    GRIZZLY,
    HAVANA,
    NEWTON_TWO,
    ec2_version,
    normalize_path,
    openstack_since,
    openstack_version,
    openstack_version_list,
)

# Memo bounds: guests may send any number of distinct (and very long) paths.
_MEMO_MAX_ENTRIES: Final = 4096
_MEMO_MAX_PATH: Final = 512

EC2_VERSION_LIST_DOCUMENT: Final = Document(TEXT_PLAIN, EC2_VERSION_LIST)


class _ByRequestAddress:
    """Memo entry for `local-ipv4` when it falls back to the request address."""

    __slots__ = ()


_BY_REQUEST_ADDRESS: Final = _ByRequestAddress()

_Entry = Result | _ByRequestAddress


class Documents:
    """Every document of one instance, looked up by request path.

    Built once per instance snapshot; each distinct path is resolved on first
    lookup and then answered from a dict.
    """

    __slots__ = (
        "_by_normalized",
        "_by_path",
        "_ec2_trees",
        "_instance",
        "_network_data",
        "_options",
    )

    def __init__(self, instance: Instance, options: RenderOptions) -> None:
        self._instance = instance
        self._options = options
        self._by_path: dict[str, _Entry] = {}
        self._by_normalized: dict[str, _Entry] = {}
        self._ec2_trees: dict[str, dict[str, Node]] = {}
        self._network_data: Document | None = None

    @property
    def instance(self) -> Instance:
        """The snapshot these documents are rendered from."""
        return self._instance

    def lookup(self, path: str, request_address: str | None = None) -> Result:
        """The result for a request path as received (not normalised, no query string).

        `request_address` is the guest's address as the request reports it; it is
        only used for EC2 `local-ipv4` when the instance has no fixed IPv4 address.
        """
        entry = self._by_path.get(path)
        if entry is None:
            entry = self._resolve(path)
            if len(path) <= _MEMO_MAX_PATH and len(self._by_path) < _MEMO_MAX_ENTRIES:
                self._by_path[path] = entry
        if isinstance(entry, _ByRequestAddress):
            # The address comes from a request header: never let its encoding fail a lookup.
            body = str(request_address).encode("utf-8", "backslashreplace")
            return Document(TEXT_PLAIN, body, cacheable=False)
        return entry

    def _resolve(self, path: str) -> _Entry:
        normalized = normalize_path(path)
        entry = self._by_normalized.get(normalized)
        if entry is None:
            entry = self._resolve_normalized(normalized)
            if len(normalized) <= _MEMO_MAX_PATH and len(self._by_normalized) < _MEMO_MAX_ENTRIES:
                self._by_normalized[normalized] = entry
        return entry

    def _resolve_normalized(self, normalized: str) -> _Entry:
        tokens = normalized.split("/")[1:]
        head = tokens[0]
        if head == "openstack":
            return self._openstack(tokens[1:])
        # An empty first token comes from "/" or from the "//..." quirk.
        if head == "":
            return EC2_VERSION_LIST_DOCUMENT
        rest = tokens[1:] if head == "ec2" else tokens
        if not rest:
            return EC2_VERSION_LIST_DOCUMENT
        return self._ec2(rest)

    def _ec2(self, tokens: list[str]) -> _Entry:
        version = ec2_version(tokens[0])
        if version is None:
            return MISSING
        tree = self._ec2_trees.get(version)
        if tree is None:
            tree = ec2_tree(self._instance, version, self._options.dhcp_domain)
            self._ec2_trees[version] = tree
        node = find(tree, tokens[1:])
        if isinstance(node, NotInTree):
            return MISSING
        if isinstance(node, RequestAddress):
            return _BY_REQUEST_ADDRESS
        return Document(TEXT_PLAIN, render(node))

    def _openstack(self, tokens: list[str]) -> _Entry:
        if not tokens:
            return Document(TEXT_PLAIN, openstack_version_list(self._options.today))
        version = openstack_version(tokens[0])
        if version is None:
            # Includes /openstack/content/...: we never have injected network templates.
            return MISSING
        name = "/".join(tokens[1:]) or "version"
        instance = self._instance
        options = self._options
        if name == "version":
            return Document(TEXT_PLAIN, version_listing(instance, version))
        if name == "meta_data.json":
            body, needs_seed = meta_data_json(
                instance, version, hostname(instance, options.dhcp_domain)
            )
            return Document(APPLICATION_JSON, body, needs_seed=needs_seed)
        if name == "user_data":
            if instance.user_data is None:
                return MISSING
            return Document(TEXT_PLAIN, instance.user_data)
        if name == "network_data.json":
            # Served in every version and as text/plain, as nova does.
            return self._network_data_document()
        if name == "password":
            return PasswordFile(instance.password) if openstack_since(version, GRIZZLY) else MISSING
        if name == "vendor_data.json":
            if not (openstack_since(version, HAVANA) and options.static_vendordata_enabled):
                return MISSING
            return Document(APPLICATION_JSON, vendor_data_json(options.vendordata_static))
        if name == "vendor_data2.json":
            if not openstack_since(version, NEWTON_TWO):
                return MISSING
            return VendorData2(self._static_vendordata())
        return MISSING

    def _network_data_document(self) -> Document:
        if self._network_data is None:
            self._network_data = Document(TEXT_PLAIN, dump_json(network_data(self._instance)))
        return self._network_data

    def _static_vendordata(self) -> object | None:
        if not self._options.static_vendordata_enabled:
            return None
        # With StaticJSON on but no file configured, nova's static provider yields {}.
        static = self._options.vendordata_static
        return {} if static is None else static


def build_documents(instance: Instance, options: RenderOptions) -> Documents:
    """The lookup object for one instance snapshot; cache it until the instance changes."""
    return Documents(instance, options)
