"""The contract between the emulator's transport and its methods: a validated call.

``khaos_emulator.py`` turns a SOAP request into a ``Request`` (checking the method, its
parameters and their types against the site's published signatures); ``khaos_methods.py``
reads values from it. ``SoapFault`` is how either side refuses: the transport answers it as
an HTTP 500 SOAP fault, the way a Delphi SOAP server does.
"""

from __future__ import annotations

import re
from datetime import datetime

from khaosync.khaos.convert import KC_FORMAT, ConversionError, kc_bool

_KC_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\Z", re.ASCII)
_KC_INT = re.compile(r"-?\d+\Z", re.ASCII)


class SoapFault(Exception):
    """Answered as an HTTP 500 SOAP fault."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
        self.method: str | None = None  # set once the request has named a known method


def client_fault(message: str) -> SoapFault:
    return SoapFault("soap:Client", message)


# -- parameter values ------------------------------------------------------------------

def parse_kc_datetime(name: str, text: str) -> datetime:
    """KC local time, exactly ``YYYY-MM-DDTHH:MM:SS``; anything else is the client's fault.

    The pattern comes first because strptime alone takes ``2026-1-5T9:00:00`` and non-ASCII digits.
    """
    try:
        if not _KC_DATETIME.match(text):
            raise ValueError(text)
        return datetime.strptime(text, KC_FORMAT)
    except ValueError:
        raise client_fault(f"{name}: '{text}' is not a valid date and time") from None


def parse_int(name: str, text: str) -> int:
    # int() would also take "1_000" and non-ASCII digits; a strict site does not.
    if not _KC_INT.match(text.strip()):
        raise client_fault(f"{name}: '{text}' is not a valid integer")
    return int(text.strip())


def parse_flag(name: str, text: str) -> bool:
    try:
        value = kc_bool(text)
    except ConversionError:
        value = None
    if value is None:
        raise client_fault(f"{name}: '{text}' is not a valid boolean (-1 or 0)")
    return value


class Request:
    """A validated SOAP call: the method and its parameters as text."""

    def __init__(self, method: str, params: dict[str, str]):
        self.method = method
        self.params = params

    def text(self, name: str, default: str | None = None) -> str | None:
        return self.params.get(name, default)

    def has(self, name: str) -> bool:
        return name in self.params

    def when(self, name: str) -> datetime:
        return parse_kc_datetime(name, self.params[name])

    def number(self, name: str) -> int:
        return parse_int(name, self.params[name])

    def flag(self, name: str, default: bool) -> bool:
        return parse_flag(name, self.params[name]) if name in self.params else default



__all__ = ["Request", "SoapFault", "client_fault", "parse_flag", "parse_int", "parse_kc_datetime"]
