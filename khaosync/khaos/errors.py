"""What can go wrong talking to Khaos Control, as types the retry policy and the CLI act on.

``transient`` says whether trying again may help; the client retries only those. Messages
name the method and what the site said, never a credential.
"""

from __future__ import annotations

from khaosync.errors import ExternalSystemError

# HTTP statuses that mean "the site or a proxy in front of it is busy or restarting".
TRANSIENT_HTTP_STATUSES = frozenset({500, 502, 503, 504})


class KhaosError(ExternalSystemError):
    """Base of every Khaos Control failure. ``attempts`` is set once retries are spent."""

    transient = False

    def __init__(self, message: str, *, method: str | None = None):
        super().__init__(message)
        self.method = method
        self.attempts = 1


class SoapFaultError(KhaosError):
    """The site answered with a SOAP Fault. ``soap:Server`` faults may pass; ``soap:Client`` ones will not."""

    def __init__(self, fault_code: str, fault_string: str, method: str):
        self.fault_code = fault_code
        self.fault_string = fault_string
        super().__init__(f"Khaos Control {method}: SOAP fault {fault_code}: {fault_string}", method=method)

    @property
    def transient(self) -> bool:  # type: ignore[override]
        # "soap:Server", "SOAP-ENV:Server", "Server.Userexception": the prefix is the site's choice.
        return self.fault_code.rpartition(":")[2].startswith("Server")


class KhaosHttpError(KhaosError):
    """A non-200 answer that is not a SOAP Fault (a 500 here means the body was not one)."""

    def __init__(self, status: int, method: str, detail: str = ""):
        self.status = status
        self.detail = detail
        suffix = f": {detail}" if detail else ""
        super().__init__(f"Khaos Control {method}: HTTP {status}{suffix}", method=method)

    @property
    def transient(self) -> bool:  # type: ignore[override]
        return self.status in TRANSIENT_HTTP_STATUSES


class KhaosTimeoutError(KhaosError):
    """No answer within ``khaos.timeout_s``."""

    transient = True


class KhaosConnectionError(KhaosError):
    """The site could not be reached, or dropped the connection."""

    transient = True


class KhaosBadResponseError(KhaosError):
    """An answer we cannot read: not a SOAP envelope, no ``<return>``, bad base64 or zip, a broken list."""


__all__ = [
    "KhaosBadResponseError", "KhaosConnectionError", "KhaosError", "KhaosHttpError", "KhaosTimeoutError",
    "SoapFaultError", "TRANSIENT_HTTP_STATUSES",
]
