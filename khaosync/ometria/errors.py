"""What can go wrong talking to Ometria, as types the retry policy, the push stage and the CLI act on.

``transient`` says whether trying again may help; the client retries only those (bounded by
``ometria.retries``; 429s by their own, larger bound). Every one is an ``ExternalSystemError``
(exit 3). Messages name the request (``POST /push``, 100 product records) and what Ometria
said, never the API key: the client scrubs it from anything it quotes.
"""

from __future__ import annotations

from khaosync.errors import ExternalSystemError

TRANSIENT_HTTP_STATUSES = frozenset({500, 502, 503, 504})


class OmetriaError(ExternalSystemError):
    """Base of every Ometria failure. ``attempts`` is how many requests were made for it."""

    transient = False

    def __init__(self, message: str, *, request: str, status: int | None = None):
        super().__init__(message)
        self.request = request
        self.status = status
        self.attempts = 1


class OmetriaAuthError(OmetriaError):
    """403: the key is wrong or revoked. Never retried: every later request would get the same."""

    def __init__(self, request: str):
        super().__init__(
            f"Ometria {request}: HTTP 403, key not authorised (check ometria.api_key / ometria.api_key_env)",
            request=request, status=403,
        )


class OmetriaRequestError(OmetriaError):
    """A 4xx other than 403 and 429: Ometria refused the request as a whole (400 bad body,
    404 unknown path, 413 too large, ...). Sending it again would get the same answer."""

    def __init__(self, status: int, request: str, detail: str = ""):
        self.detail = detail
        suffix = f": {detail}" if detail else ""
        super().__init__(f"Ometria {request}: HTTP {status}{suffix}", request=request, status=status)


class OmetriaServerError(OmetriaError):
    """A 5xx (or another status we do not expect). 5xx are transient: pushes are upserts."""

    def __init__(self, status: int, request: str, detail: str = ""):
        suffix = f": {detail}" if detail else ""
        super().__init__(f"Ometria {request}: HTTP {status}{suffix}", request=request, status=status)

    @property
    def transient(self) -> bool:  # type: ignore[override]
        return self.status in TRANSIENT_HTTP_STATUSES


class OmetriaRateLimitedError(OmetriaError):
    """429 more times in a row than the client allows itself (rate limit or a full queue)."""

    def __init__(self, request: str, times: int):
        super().__init__(f"Ometria {request}: still HTTP 429 (too many requests or queue full) after {times} tries",
                         request=request, status=429)


class OmetriaTimeoutError(OmetriaError):
    """No answer within ``ometria.timeout_s``."""

    transient = True


class OmetriaConnectionError(OmetriaError):
    """Ometria could not be reached, or dropped the connection."""

    transient = True


class OmetriaBadResponseError(OmetriaError):
    """A 2xx answer we cannot read (not JSON, not the documented shape)."""


__all__ = [
    "TRANSIENT_HTTP_STATUSES",
    "OmetriaAuthError",
    "OmetriaBadResponseError",
    "OmetriaConnectionError",
    "OmetriaError",
    "OmetriaRateLimitedError",
    "OmetriaRequestError",
    "OmetriaServerError",
    "OmetriaTimeoutError",
]
