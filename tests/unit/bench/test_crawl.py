"""The boot-storm generator's crawl and its event loop, against a local HTTP server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from metastack.bench.crawl import run_storm

LISTING = "instance-id\nplacement/\npublic-keys/\nhostname"


class _Tree(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path
        status, body = 200, "x"
        if path == "/openstack":
            body = "2016-06-30\n2018-08-27\nlatest"
        elif path.endswith("/meta_data.json"):
            body = '{"uuid": "u", "files": [{"path": "/etc/f", "content_path": "/content/0000"}]}'
        elif path.endswith("/meta-data/"):
            body = LISTING
        elif path.endswith("/placement/"):
            body = "availability-zone"
        elif path.endswith("/public-keys/"):
            body = "0=mykey"
        elif path in ("/2021-03-23/meta-data/instance-id", "/2021-03-23/user-data"):
            status = 404
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Tree)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[0], httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def _tree(version: str) -> list[str]:
    root = f"/{version}/meta-data/"
    return [
        root,
        root + "placement/",
        root + "placement/availability-zone",
        root + "public-keys/",
        root + "public-keys/0/openssh-key",
        root + "instance-id",
        root + "hostname",
    ]


EXPECTED = [
    "/openstack",
    "/openstack",
    "/openstack/2018-08-27/meta_data.json",
    "/openstack/2018-08-27/user_data",
    "/openstack/2018-08-27/vendor_data.json",
    "/openstack/2018-08-27/vendor_data2.json",
    "/openstack/2018-08-27/network_data.json",
    "/openstack/content/0000",
    *_tree("latest"),
    "/2009-04-04/meta-data/instance-id",
    "/2021-03-23/meta-data/instance-id",
    "/2018-09-24/meta-data/instance-id",
    "/2018-09-24/user-data",
    *_tree("2018-09-24"),
]


def test_every_guest_crawls_in_cloud_inits_order(server: tuple[str, int]) -> None:
    storm = run_storm([None] * 20, timeout=5.0, deadline=30.0, target=server)
    assert len(storm.guests) == 20
    for guest in storm.guests:
        assert guest.paths == EXPECTED
        assert guest.failed == 0, [s.error for s in guest.samples if s.error]
        assert guest.done_at >= storm.started
        assert all(s.end >= s.start >= storm.started for s in guest.samples)
    statuses = {s.path: s.status for s in storm.guests[0].samples}
    assert statuses["/2021-03-23/meta-data/instance-id"] == 404


def test_a_silent_server_is_a_timeout_and_the_storm_ends() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # accepts by the kernel, never answered
    try:
        storm = run_storm([None] * 3, timeout=0.1, deadline=30.0, target=listener.getsockname())
    finally:
        listener.close()
    assert storm.ended - storm.started < 10
    for guest in storm.guests:
        assert guest.samples, "every guest tried"
        assert {s.error for s in guest.samples} == {"timeout"}


def test_a_refused_connection_is_counted_by_its_errno() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    target = probe.getsockname()
    probe.close()  # nothing listens there now
    storm = run_storm([None] * 2, timeout=1.0, deadline=10.0, target=target)
    errors = {s.error for g in storm.guests for s in g.samples}
    assert errors == {"ECONNREFUSED"}


def test_the_deadline_ends_an_unfinished_storm() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        storm = run_storm([None] * 2, timeout=60.0, deadline=0.5, target=listener.getsockname())
    finally:
        listener.close()
    assert storm.ended - storm.started < 5
    assert all(not g.done_at for g in storm.guests)
