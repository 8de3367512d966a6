"""The contract between the emulator's transport and its methods: a validated call.

``khaos_emulator.py`` turns a SOAP request into a ``Request`` (checking the method, its
parameters and their XSD types against the site's published signatures, khaos_wsdl.py);
``khaos_methods.py`` reads values from it. ``SoapFault`` is how either side refuses: the
transport answers it as an HTTP 500 SOAP fault, the way a Delphi SOAP server does.

Values follow XSD, as an rpc/encoded server reads them:

- ``xs:dateTime``: ``YYYY-MM-DDThh:mm:ss``, optional fraction, optional zone (``Z`` or
  ``+hh:mm``). KC works in London local time: a value without a zone is London local (what
  KC's own clients send); a value with one is converted to London local wall time; a fraction
  is dropped (KC keeps whole seconds, and "changed after 10:00:00.5" selects the same records
  as "after 10:00:00" when times are whole seconds). **(assumed)**, on the verify-on-site list.
- ``xs:boolean``: ``true``, ``false``, ``1``, ``0`` and nothing else (not KC's ``-1``).
- ``xs:int``: an optional sign and ASCII digits, within 32 bits.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from khaosync.khaos.convert import LONDON, ConversionError, kc_bool

_XSD_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})?\Z", re.ASCII)
_XSD_INT = re.compile(r"[+-]?\d+\Z", re.ASCII)
_XSD_BOOLEAN = {"true": True, "1": True, "false": False, "0": False}
INT32 = (-2**31, 2**31 - 1)


class SoapFault(Exception):
    """Answered as an HTTP 500 SOAP fault."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
        self.method: str | None = None  # set once the request has named a known method


def client_fault(message: str) -> SoapFault:
    return SoapFault("SOAP-ENV:Client", message)


def server_fault(message: str) -> SoapFault:
    return SoapFault("SOAP-ENV:Server", message)


# -- parameter values ------------------------------------------------------------------

def parse_kc_datetime(name: str, text: str) -> datetime:
    """An ``xs:dateTime`` as a naive London local datetime (see the module docstring)."""
    match = _XSD_DATETIME.match(text.strip())
    try:
        if not match:
            raise ValueError(text)
        year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
        value = datetime(year, month, day, hour, minute, second)
        zone = match.group(8)
        if zone:
            offset = timedelta(0) if zone == "Z" else (
                (1 if zone[0] == "+" else -1) * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
            value = value.replace(tzinfo=timezone(offset)).astimezone(LONDON).replace(tzinfo=None)
        return value
    except ValueError:
        raise client_fault(f"{name}: '{text}' is not a valid date and time") from None


def parse_int(name: str, text: str) -> int:
    # int() would also take "1_000" and non-ASCII digits; a strict site does not.
    stripped = text.strip()
    if not _XSD_INT.match(stripped) or not INT32[0] <= int(stripped) <= INT32[1]:
        raise client_fault(f"{name}: '{text}' is not a valid integer")
    return int(stripped)


def parse_boolean(name: str, text: str) -> bool:
    """``xs:boolean``: ``true``/``false``/``1``/``0``."""
    value = _XSD_BOOLEAN.get(text.strip())
    if value is None:
        raise client_fault(f"{name}: '{text}' is not a valid boolean (true, false, 1 or 0)")
    return value


def parse_flag(name: str, text: str) -> bool:
    """A KC flag sent as an int (``-1``/``0``)."""
    try:
        value = kc_bool(text)
    except ConversionError:
        value = None
    if value is None:
        raise client_fault(f"{name}: '{text}' is not a valid boolean (-1 or 0)")
    return value


def check_value(name: str, xsd_type: str, text: str) -> None:
    """Refuse a value its declared type cannot hold (strings hold anything)."""
    if xsd_type == "int":
        parse_int(name, text)
    elif xsd_type == "dateTime":
        parse_kc_datetime(name, text)
    elif xsd_type == "boolean":
        parse_boolean(name, text)


class Request:
    """A validated SOAP call: the method, its parameters as text (by their canonical name:
    ``StockCodes`` arrives as ``StockCode``), and the XSD type each was declared with."""

    def __init__(self, method: str, params: dict[str, str], types: dict[str, str] | None = None,
                 form: str = "site"):
        self.method = method
        self.params = params
        self.types = types or {}
        self.form = form  # which accepted parameter list the call used (GetStockList has two)

    def text(self, name: str, default: str | None = None) -> str | None:
        return self.params.get(name, default)

    def has(self, name: str) -> bool:
        return name in self.params

    def when(self, name: str) -> datetime:
        return parse_kc_datetime(name, self.params[name])

    def number(self, name: str) -> int:
        return parse_int(name, self.params[name])

    def boolean(self, name: str, default: bool) -> bool:
        """An ``xs:boolean`` parameter, ``default`` when it was not sent."""
        return parse_boolean(name, self.params[name]) if name in self.params else default

    def flag(self, name: str, default: bool) -> bool:
        """A yes/no parameter: ``xs:boolean`` forms when declared so, else KC's ``-1``/``0``."""
        if name not in self.params:
            return default
        if self.types.get(name) == "boolean":
            return parse_boolean(name, self.params[name])
        return parse_flag(name, self.params[name])


__all__ = [
    "Request", "SoapFault", "check_value", "client_fault", "parse_boolean", "parse_flag", "parse_int",
    "parse_kc_datetime", "server_fault",
]
