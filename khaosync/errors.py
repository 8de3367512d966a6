"""Typed errors shared by every stage, and the process exit codes they map to.

Exit codes (documented in README.md):
  0  clean
  1  findings at fail severity
  2  usage, configuration or input error (including "state is locked")
  3  an external system failed after retries
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_EXTERNAL = 3


class KhaosyncError(Exception):
    """Base of every error khaosync raises on purpose. ``exit_code`` drives the CLI."""

    exit_code = EXIT_USAGE


class ConfigError(KhaosyncError):
    """The configuration file or a setting is invalid."""


class StateLockedError(KhaosyncError):
    """Another process holds the state store's lock."""

    def __init__(self, path: str, holder: dict | None):
        self.path = path
        self.holder = holder or {}
        who = ", ".join(f"{k}={v}" for k, v in self.holder.items()) or "unknown holder"
        super().__init__(f"state {path} is locked by another run ({who})")


class ExternalSystemError(KhaosyncError):
    """Khaos Control or Ometria failed, after the retries we allow ourselves."""

    exit_code = EXIT_EXTERNAL


class RecordError(KhaosyncError):
    """One record could not be handled. Carries what an exception row needs.

    Raised inside a stage for a single record; the stage records it and goes on.
    """

    def __init__(self, *, entity: str, key: str | None, stage: str, reason: str, kind: str = "malformed_record"):
        self.entity = entity
        self.key = key
        self.stage = stage
        self.reason = reason
        self.kind = kind
        super().__init__(f"{stage}: {entity} {key or '<no key>'}: {reason}")
