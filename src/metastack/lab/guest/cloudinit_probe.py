"""Run cloud-init's OpenStack and EC2 datasources from inside a guest and print what they read.

Run with the distribution's Python (`/usr/bin/python3`), which has cloud-init; this file
imports nothing from metastack. Only datasource code runs (no boot stage), with every
path cloud-init writes under a temporary directory. DMI detection is overridden: the
OpenStack datasource is told it runs on OpenStack, the EC2 datasource that it runs on a
non-AWS platform (IMDSv1, as on a Nova guest). Prints one JSON object per datasource,
e.g. `{"datasource": "openstack", "ok": true, "instance_id": ..., "requests": 37}`.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import logging
import sys
import tempfile
import time
from typing import Any

DEFAULT_URL = "http://169.254.169.254"


class RequestLog:
    """Counts every HTTP request cloud-init sends (requests.Session.send is its one exit)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, int | None]] = []

    def install(self) -> None:
        """Wrap requests.Session.send so each request is recorded with its status."""
        sessions: Any = importlib.import_module("requests.sessions")
        original = sessions.Session.send
        log = self

        def send(session: Any, request: Any, **kwargs: Any) -> Any:
            status: int | None = None
            try:
                response = original(session, request, **kwargs)
                status = int(response.status_code)
                return response
            finally:
                log.requests.append((str(request.method), str(request.url), status))

        sessions.Session.send = send

    def since(self, start: int) -> list[tuple[str, str, int | None]]:
        """Requests recorded after the first `start` ones."""
        return self.requests[start:]


def _capture_logs(level: int) -> io.StringIO:
    # cloudinit.log resets logging when imported: add the handler after that import.
    importlib.import_module("cloudinit.log")
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("cloudinit").setLevel(level)
    return buffer


def _sys_cfg(url: str, max_wait: int, timeout: int, retries: int) -> dict[str, Any]:
    common = {"metadata_urls": [url], "timeout": timeout, "retries": retries}
    return {
        "datasource_list": ["OpenStack", "Ec2"],
        "datasource": {
            # OpenStack makes one attempt (max_wait -1), as cloud-init's default does.
            "OpenStack": dict(common),
            "Ec2": {**common, "max_wait": max_wait, "strict_id": "warn"},
        },
    }


def _make(kind: str, sys_cfg: dict[str, Any], workdir: str) -> Any:
    helpers: Any = importlib.import_module("cloudinit.helpers")
    distros: Any = importlib.import_module("cloudinit.distros")
    paths = helpers.Paths({"cloud_dir": f"{workdir}/cloud", "run_dir": f"{workdir}/run"})
    distro = distros.fetch("debian")("debian", {}, paths)
    if kind == "openstack":
        module: Any = importlib.import_module("cloudinit.sources.DataSourceOpenStack")
        module.detect_openstack = lambda accept_oracle=False: True
        return module.DataSourceOpenStack(sys_cfg, distro, paths)
    module = importlib.import_module("cloudinit.sources.DataSourceEc2")
    unknown = module.CloudNames.UNKNOWN

    class NovaGuestEc2(module.DataSourceEc2):  # type: ignore[misc]
        def _get_cloud_name(self) -> str:
            return str(unknown)

    return NovaGuestEc2(sys_cfg, distro, paths)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def probe(
    kind: str,
    url: str,
    requests: RequestLog,
    logs: io.StringIO,
    with_urls: bool = False,
    **limits: int,
) -> dict[str, Any]:
    """Run one datasource's get_data() and report what it read."""
    started_at, first = time.monotonic(), len(requests.requests)
    mark = logs.tell()
    result: dict[str, Any] = {"datasource": kind, "url": url, "ok": False}
    with tempfile.TemporaryDirectory(prefix="ms-probe-") as workdir:
        try:
            source = _make(kind, _sys_cfg(url, **limits), workdir)
            result["ok"] = bool(source.get_data())
            if result["ok"]:
                hostname = source.get_hostname()
                result.update(
                    instance_id=source.get_instance_id(),
                    local_hostname=getattr(hostname, "hostname", hostname),
                    public_keys=sorted(source.get_public_ssh_keys()),
                    userdata=_text(source.get_userdata_raw()),
                    availability_zone=source.availability_zone,
                    metadata_address=source.metadata_address,
                )
        except Exception as exc:  # the probe reports, the caller decides
            result["error"] = f"{type(exc).__name__}: {exc}"
    done = requests.since(first)
    result["requests"] = len(done)
    result["failed_requests"] = [r for r in done if r[2] is None or r[2] >= 400]
    if with_urls:
        result["urls"] = [r[1] for r in done]
    result["seconds"] = round(time.monotonic() - started_at, 3)
    if not result["ok"]:
        result["log"] = logs.getvalue()[mark:][-6000:]
    return result


def main(argv: list[str] | None = None) -> int:
    """Probe each requested datasource in turn; exit 0 only when every one accepted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasource",
        action="append",
        choices=["openstack", "ec2"],
        help="Datasource to run (repeatable; default both).",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="Metadata base URL.")
    parser.add_argument("--max-wait", type=int, default=120, help="EC2 readiness wait (s).")
    parser.add_argument("--timeout", type=int, default=10, help="Per-request timeout (s).")
    parser.add_argument("--retries", type=int, default=5, help="Retries of a failed read.")
    parser.add_argument("--debug", action="store_true", help="Log at DEBUG in the report.")
    parser.add_argument("--urls", action="store_true", help="List every requested URL.")
    args = parser.parse_args(argv)
    logs = _capture_logs(logging.DEBUG if args.debug else logging.INFO)
    requests = RequestLog()
    requests.install()
    ok = True
    for kind in args.datasource or ["openstack", "ec2"]:
        result = probe(
            kind,
            args.url,
            requests,
            logs,
            with_urls=args.urls,
            max_wait=args.max_wait,
            timeout=args.timeout,
            retries=args.retries,
        )
        ok = ok and result["ok"]
        print(json.dumps(result), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
