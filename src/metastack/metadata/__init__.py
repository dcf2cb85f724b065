"""Pure metadata rendering: an instance snapshot in, EC2 and OpenStack documents out."""

from metastack.metadata.documents import Documents, build_documents
from metastack.metadata.openstack import render_vendor_data2, vendordata_request_body
from metastack.metadata.results import (
    APPLICATION_JSON,
    MISSING,
    SEED_PLACEHOLDER,
    TEXT_HTML,
    TEXT_PLAIN,
    Document,
    Missing,
    PasswordFile,
    RenderOptions,
    Result,
    VendorData2,
)
from metastack.metadata.versions import (
    EC2_VERSION_LIST,
    EC2_VERSIONS,
    OPENSTACK_VERSIONS,
    is_version_root,
    normalize_path,
)

__all__ = [
    "APPLICATION_JSON",
    "EC2_VERSIONS",
    "EC2_VERSION_LIST",
    "MISSING",
    "OPENSTACK_VERSIONS",
    "SEED_PLACEHOLDER",
    "TEXT_HTML",
    "TEXT_PLAIN",
    "Document",
    "Documents",
    "Missing",
    "PasswordFile",
    "RenderOptions",
    "Result",
    "VendorData2",
    "build_documents",
    "is_version_root",
    "normalize_path",
    "render_vendor_data2",
    "vendordata_request_body",
]
