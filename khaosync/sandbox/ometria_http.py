"""Plain-WSGI plumbing for the Ometria emulator: requests, responses, query parameters.

The rules about parameters are the reference's ("Read-back endpoints": ``limit`` max 250,
``offset``, ``orderby=timestamp_update``) plus *(sandbox rules)*: an unknown or repeated
parameter is a 400, so a client cannot believe it filtered on something Ometria ignores.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Iterable
from urllib.parse import parse_qsl

from khaosync.sandbox.ometria_store import to_utc
from khaosync.sandbox.ometria_validation import datetime_zoned

DEFAULT_LIMIT = 100
MAX_LIMIT = 250
_DIGITS = re.compile(r"^\d{1,9}$")


@dataclass
class Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def status_line(self) -> str:
        return f"{self.status} {HTTPStatus(self.status).phrase}"

    def wsgi_headers(self) -> list[tuple[str, str]]:
        return [*self.headers, ("Content-Length", str(len(self.body)))]


def json_response(status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(status, body, [("Content-Type", "application/json"), *headers])


def error_response(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return json_response(status, {"status": "ERROR", "error": message}, headers)


class HttpError(Exception):
    """A request refused as a whole. ``client_fault`` ones count in ``stats()["rejected_requests"]``."""

    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = (), *, client_fault: bool = True,
                 counter: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)
        self.client_fault = client_fault
        self.counter = counter  # a ``stats()`` counter of its own, if any

    def response(self) -> Response:
        return error_response(self.status, self.message, self.headers)


@dataclass
class Request:
    method: str
    path: str  # the full path, e.g. /ometria/v2/push
    query_string: str
    environ: dict

    @classmethod
    def from_environ(cls, environ: dict) -> "Request":
        path = (environ.get("SCRIPT_NAME") or "") + (environ.get("PATH_INFO") or "")
        return cls(environ.get("REQUEST_METHOD", "GET").upper(), path or "/", environ.get("QUERY_STRING", ""), environ)

    def header(self, name: str) -> str | None:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        return self.environ.get(key)

    def read_body(self, max_bytes: int) -> bytes:
        """The body, whole; its length must be declared (411) and not above ``max_bytes`` (413);
        fewer bytes than declared (the sender died) is a 400 counted as incomplete."""
        declared = (self.header("Content-Length") or "").strip()
        if not declared.isdigit():
            raise HttpError(411, "Length Required: send a Content-Length header")
        length = int(declared)
        if length > max_bytes:
            raise HttpError(413, f"Payload Too Large: at most {max_bytes} bytes per request")
        body = self.environ["wsgi.input"].read(length) if length else b""
        if len(body) < length:
            # The sender went away mid-request (a killed process): nothing to parse, and not a
            # malformed request of the client's making, so counted apart (``incomplete_requests``).
            raise HttpError(400, "Incomplete body: the connection closed before Content-Length bytes arrived",
                            client_fault=False, counter="incomplete_requests")
        return body

    def params(self, allowed: Iterable[str]) -> "Params":
        return Params.parse(self.query_string, frozenset(allowed))


@dataclass
class Params:
    """Query parameters of a read, already checked against the endpoint's allowed names."""

    values: dict[str, str]

    @classmethod
    def parse(cls, query_string: str, allowed: frozenset[str]) -> "Params":
        values: dict[str, str] = {}
        try:
            pairs = parse_qsl(query_string, keep_blank_values=True, strict_parsing=bool(query_string))
        except ValueError:
            raise HttpError(400, "Invalid query string") from None
        for name, value in pairs:
            if name not in allowed:
                raise HttpError(400, f"Unknown parameter: {name}")
            if name in values:
                raise HttpError(400, f"Repeated parameter: {name}")
            values[name] = value
        return cls(values)

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def paging(self) -> tuple[int, int]:
        """Reference: every read takes ``limit`` (max 250) and ``offset``; default limit 100."""
        limit = self._natural("limit", DEFAULT_LIMIT)
        if not 1 <= limit <= MAX_LIMIT:
            raise HttpError(400, f"Invalid parameter limit: must be between 1 and {MAX_LIMIT}")
        return limit, self._natural("offset", 0)

    def by_update(self) -> bool:
        """Reference: "results come in internal id order unless `orderby=timestamp_update`"."""
        value = self.values.get("orderby")
        if value is None:
            return False
        if value != "timestamp_update":
            raise HttpError(400, "Invalid parameter orderby: only timestamp_update is supported")
        return True

    def flag(self, name: str) -> bool | None:
        value = self.values.get(name)
        if value is None:
            return None
        if value not in ("true", "false"):
            raise HttpError(400, f"Invalid parameter {name}: expected true or false")
        return value == "true"

    def instant(self, name: str) -> str | None:
        """A datetime parameter (ISO 8601 with a zone, like the records), as comparable UTC."""
        value = self.values.get(name)
        if value is None:
            return None
        if datetime_zoned(value, name) is not None:
            raise HttpError(400, f"Invalid parameter {name}: expected ISO 8601 with a time zone")
        return to_utc(value)

    def _natural(self, name: str, default: int) -> int:
        value = self.values.get(name)
        if value is None:
            return default
        if not _DIGITS.match(value):
            raise HttpError(400, f"Invalid parameter {name}: expected a whole number")
        return int(value)
