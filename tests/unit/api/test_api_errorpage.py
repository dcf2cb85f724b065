"""The metadata API's error pages equal WebOb's (the bytes below are WebOb 1.8.11's, as
nova 34 renders `webob.exc.HTTP*` exceptions; the interop tier compares with nova live)."""

from __future__ import annotations

import pytest

from metastack.api.errorpage import error_page, negotiate

NOT_FOUND_HTML = (
    b"<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n"
    b"  <h1>404 Not Found</h1>\n  The resource could not be found.<br /><br />\n\n\n\n"
    b" </body>\n</html>"
)
NOT_FOUND_TEXT = b"404 Not Found\n\nThe resource could not be found.\n\n   "
NOT_FOUND_JSON = (
    b'{"message": "The resource could not be found.<br /><br />\\n\\n\\n", '
    b'"code": "404 Not Found", "title": "Not Found"}'
)


@pytest.mark.parametrize(
    ("accept", "form"),
    [
        (None, "text"),
        ("", "text"),
        ("*/*", "html"),
        ("text/plain", "text"),
        ("text/*", "html"),
        ("application/json", "json"),
        ("text/html;q=0.5, application/json", "json"),
        ("application/json;q=0, */*;q=0.1", "html"),
        ("text/html, application/json", "html"),
        ("garbage", "html"),
    ],
)
def test_negotiate_as_webob(accept: str | None, form: str) -> None:
    assert negotiate(accept) == form


def test_not_found_in_each_form() -> None:
    assert error_page(404, "*/*") == (b"text/html; charset=UTF-8", NOT_FOUND_HTML)
    assert error_page(404, None) == (b"text/plain; charset=UTF-8", NOT_FOUND_TEXT)
    assert error_page(404, "application/json") == (b"application/json", NOT_FOUND_JSON)


def test_explanation_is_escaped_in_html_and_stripped_in_text() -> None:
    _, page = error_page(400, "*/*", 'a <b> & "c"')
    assert b"<h1>400 Bad Request</h1>\n  a &lt;b&gt; &amp; &quot;c&quot;<br /><br />\n" in page
    assert error_page(400, None, 'a <b> & "c"')[1] == b'400 Bad Request\n\na  & "c"\n\n   '
    assert error_page(400, "application/json", 'a <b> & "c"')[1] == (
        b'{"message": "a <b> & \\"c\\"<br /><br />\\n\\n\\n", "code": "400 Bad Request", '
        b'"title": "Bad Request"}'
    )


@pytest.mark.parametrize(
    ("status", "explanation", "text"),
    [
        (403, "Invalid proxy request signature.", b"403 Forbidden\n\nInvalid proxy request "
         b"signature.\n\n   "),
        (409, None, b"409 Conflict\n\nThere was a conflict when trying to complete your "
         b"request.\n\n   "),
        (500, "An unknown error has occurred. Please try your request again.",
         b"500 Internal Server Error\n\nAn unknown error has occurred. Please try your "
         b"request again.\n\n   "),
        (503, None, b"503 Service Unavailable\n\nThe server is currently unavailable. "
         b"Please try again at a later time.\n\n   "),
    ],
)  # fmt: skip
def test_other_statuses(status: int, explanation: str | None, text: bytes) -> None:
    assert error_page(status, "text/plain", explanation)[1] == text
