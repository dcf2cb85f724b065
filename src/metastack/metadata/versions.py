"""Metadata versions, their ordering, and nova's path normalisation."""

from __future__ import annotations

import datetime
import posixpath
from typing import Final

EC2_VERSIONS: Final = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
)

FOLSOM: Final = "2012-08-10"
GRIZZLY: Final = "2013-04-04"
HAVANA: Final = "2013-10-17"
LIBERTY: Final = "2015-10-15"
NEWTON_ONE: Final = "2016-06-30"
NEWTON_TWO: Final = "2016-10-06"
OCATA: Final = "2017-02-22"
ROCKY: Final = "2018-08-27"
VICTORIA: Final = "2020-10-14"
EPOXY: Final = "2025-04-04"

OPENSTACK_VERSIONS: Final = (
    FOLSOM,
    GRIZZLY,
    HAVANA,
    LIBERTY,
    NEWTON_ONE,
    NEWTON_TWO,
    OCATA,
    ROCKY,
    VICTORIA,
    EPOXY,
)

LATEST: Final = "latest"

EC2_VERSION_LIST: Final = "\n".join((*EC2_VERSIONS, LATEST)).encode("ascii")

_EC2_INDEX: Final = {v: i for i, v in enumerate(EC2_VERSIONS)}
_OPENSTACK_INDEX: Final = {v: i for i, v in enumerate(OPENSTACK_VERSIONS)}


def normalize_path(path: str) -> str:
    """Normalise a request path the way nova does before splitting it into tokens.

    The path gets a leading `/` if it lacks one and is `posixpath.normpath`-ed, so
    trailing slashes, `.` and `..` vanish. A path starting with exactly `//` keeps
    both slashes (POSIX allows that), which nova answers with the EC2 version list.
    """
    if not path.startswith("/"):
        path = "/" + path
    return posixpath.normpath(path)


def is_version_root(path: str) -> bool:
    """Whether nova answers this path with the EC2 version list before any authentication."""
    return posixpath.normpath(path) == "/"


def ec2_version(token: str) -> str | None:
    """The EC2 version a path token names (`latest` resolved), or None if unknown."""
    if token == LATEST:
        return EC2_VERSIONS[-1]
    return token if token in _EC2_INDEX else None


def openstack_version(token: str) -> str | None:
    """The OpenStack version a path token names (`latest` resolved), or None if unknown."""
    if token == LATEST:
        return OPENSTACK_VERSIONS[-1]
    return token if token in _OPENSTACK_INDEX else None


def ec2_since(version: str, since: str) -> bool:
    """Whether a known EC2 `version` is `since` or later."""
    return _EC2_INDEX[version] >= _EC2_INDEX[since]


def openstack_since(version: str, since: str) -> bool:
    """Whether a known OpenStack `version` is `since` or later."""
    return _OPENSTACK_INDEX[version] >= _OPENSTACK_INDEX[since]


def openstack_version_list(today: datetime.date) -> bytes:
    """Body of `GET /openstack`: versions dated on or before `today`, then `latest`."""
    cutoff = today.isoformat()
    shown = [v for v in OPENSTACK_VERSIONS if v <= cutoff]
    return "\n".join((*shown, LATEST)).encode("ascii")
