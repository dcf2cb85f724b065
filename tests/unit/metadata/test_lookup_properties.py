"""Property tests: lookup never raises and never shows another instance's data."""

from __future__ import annotations

import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metastack.metadata import (
    Document,
    Missing,
    PasswordFile,
    RenderOptions,
    VendorData2,
    build_documents,
)
from metastack.metadata.model import DeviceTag

SEGMENTS = st.sampled_from(
    [
        "",
        ".",
        "..",
        "ec2",
        "openstack",
        "latest",
        "1.0",
        "2009-04-04",
        "2013-04-04",
        "meta-data",
        "user-data",
        "meta_data.json",
        "network_data.json",
        "vendor_data.json",
        "vendor_data2.json",
        "password",
        "user_data",
        "version",
        "content",
        "0000",
        "public-keys",
        "0",
        "_name",
        "openssh-key",
        "placement",
        "availability-zone",
        "block-device-mapping",
        "security-groups",
        "local-ipv4",
        "hostname",
        "ami",
    ]
)
PATHS = st.one_of(
    st.lists(SEGMENTS, max_size=6).map("/".join),
    st.lists(SEGMENTS, max_size=6).map(lambda parts: "/" + "/".join(parts)),
    st.lists(SEGMENTS, max_size=6).map(lambda parts: "//" + "/".join(parts) + "/"),
    st.text(max_size=200),
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=50).map(lambda s: "/" + s),
)


def _instances(make_instance, make_vif):
    first = make_instance(
        uuid="aaaaaaaa-0000-4000-8000-000000000001",
        name="first-name",
        hostname="first-host",
        key_name="first-key",
        public_key="ssh-ed25519 FIRSTKEY",
        user_data=b"first-user-data",
        password="first-password",
        security_groups=("first-sg",),
        vifs=(make_vif(port_id="first-port"),),
        device_tags=(DeviceTag(type="disk", tags=("first-tag",)),),
    )
    second = make_instance(
        uuid="bbbbbbbb-0000-4000-8000-000000000002",
        name="second-name",
        hostname="second-host",
        key_name="second-key",
        public_key="ssh-ed25519 SECONDKEY",
        user_data=b"second-user-data",
        password="second-password",
        security_groups=("second-sg",),
        vifs=(),
    )
    return first, second


def _text(result: object) -> bytes:
    if isinstance(result, Document):
        return result.materialize(b"SEED")
    if isinstance(result, PasswordFile):
        return result.password.encode()
    if isinstance(result, VendorData2):
        return repr(result.static).encode()
    assert isinstance(result, Missing)
    return b""


# The fixtures only hand out pure factory functions, so sharing them across examples is safe.
@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=PATHS, address=st.sampled_from([None, "", "10.0.0.9", "fe80::1"]))
def test_lookup_never_raises_and_never_leaks(
    make_instance, make_vif, path: str, address: str | None
) -> None:
    first, second = _instances(make_instance, make_vif)
    options = RenderOptions(today=datetime.date(2026, 1, 1))
    for mine, other in ((first, second), (second, first)):
        docs = build_documents(mine, options)
        result = docs.lookup(path, address)
        assert isinstance(result, Document | Missing | PasswordFile | VendorData2)
        assert docs.lookup(path, address) == result
        body = _text(result)
        other_tag = other.uuid.split("-")[0].encode()
        for secret in (other_tag, other.name.encode(), other.password.encode()):
            assert secret not in body
