"""Error answers byte for byte as nova's metadata API gives them: WebOb's error pages.

nova raises `webob.exc.HTTP<Status>(explanation=...)` and WebOb renders the page in the
form the client's Accept header prefers of `text/html` and `application/json` (in that
order on a tie), plain text when neither is acceptable or no Accept header was sent.
Through neutron's agent (python-requests sends `Accept: */*`) a guest always gets the
HTML page; clients look only at the status, but the bytes are part of the contract.
"""

from __future__ import annotations

import html
import json
import re
from typing import Final

TITLES: Final[dict[int, str]] = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Request Entity Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
# WebOb's explanation of each status, used when nova raises the exception without one.
DEFAULT_EXPLANATIONS: Final[dict[int, str]] = {
    400: "The server could not comply with the request since it is either malformed or "
    "otherwise incorrect.",
    403: "Access was denied to this resource.",
    404: "The resource could not be found.",
    405: "The method is not allowed for this resource.",
    409: "There was a conflict when trying to complete your request.",
    413: "The request is larger than the server is willing or able to process.",
    500: "The server has either erred or is incapable of performing the requested operation.",
    502: "Bad gateway.",
    503: "The server is currently unavailable. Please try again at a later time.",
    504: "The gateway has timed out.",
}
HTML_TYPE: Final = b"text/html; charset=UTF-8"
JSON_TYPE: Final = b"application/json"
TEXT_TYPE: Final = b"text/plain; charset=UTF-8"
_OFFERS: Final = ("text/html", "application/json")
_BR = re.compile(r"<br.*?>", re.I | re.S)
_TAG = re.compile(r"<.*?>", re.S)


def _ranges(accept: str) -> list[tuple[str, float]] | None:
    """(media range, q) of an Accept header; None when it does not parse."""
    found = []
    for item in accept.split(","):
        if not item.strip():
            continue
        media, *params = (part.strip() for part in item.split(";"))
        if media.count("/") != 1 or " " in media:
            return None
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    return None
        found.append((media.lower(), q))
    return found


def _quality(offer: str, ranges: list[tuple[str, float]]) -> float:
    """q of the most specific range that matches `offer` (0 when none does)."""
    kind = offer.split("/")[0]
    for wanted in (offer, f"{kind}/*", "*/*"):
        for media, q in ranges:
            if media == wanted:
                return q
    return 0.0


def negotiate(accept: str | None) -> str:
    """ "html", "json" or "text": the form WebOb picks for this Accept header."""
    if not accept:
        return "text"
    ranges = _ranges(accept)
    if ranges is None:  # WebOb takes an invalid header as accepting anything
        return "html"
    scored = [(offer, _quality(offer, ranges)) for offer in _OFFERS]
    acceptable = sorted((o for o in scored if o[1] > 0), key=lambda o: -o[1])
    if not acceptable:
        return "text"
    return "html" if acceptable[0][0] == "text/html" else "json"


def error_page(
    status: int, accept: str | None, explanation: str | None = None
) -> tuple[bytes, bytes]:
    """(content type, body) of WebOb's page for `status`; `explanation` None: WebOb's own."""
    title = TITLES.get(status, "Unknown")
    line = f"{status} {title}"
    text = DEFAULT_EXPLANATIONS.get(status, "") if explanation is None else explanation
    form = negotiate(accept)
    if form == "html":
        body = f"{html.escape(text, quote=True)}<br /><br />\n\n\n"
        page = (
            f"<html>\n <head>\n  <title>{line}</title>\n </head>\n <body>\n"
            f"  <h1>{line}</h1>\n  {body}\n </body>\n</html>"
        )
        return HTML_TYPE, page.encode()
    raw = f"{text}<br /><br />\n\n\n"
    if form == "json":
        document = {"message": raw, "code": line, "title": title}
        return JSON_TYPE, json.dumps(document).encode()
    plain = _TAG.sub("", _BR.sub("\n", raw.replace("\n", " ").replace("\r", "")))
    return TEXT_TYPE, f"{line}\n\n{plain}".encode()
