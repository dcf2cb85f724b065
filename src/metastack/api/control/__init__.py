"""Control API: JSON REST under /v1/ for projects, networks, subnets, routers, ports, instances."""

from metastack.api.control.app import make_control_app

__all__ = ["make_control_app"]
