"""Profiles and settings.

With no configuration file at all, khaosync runs against the built-in sandbox and every
output says SANDBOX. A real installation is always chosen explicitly: a config file with
``mode: live``. Secrets (the Ometria API key, optional Khaos Control credentials) come from
environment variables or the config file, are held as ``SecretStr`` and never printed.
"""

from __future__ import annotations

import ipaddress
from datetime import date
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from khaosync.errors import ConfigError
from khaosync.yaml_files import describe, read_text_file, read_yaml

DEFAULT_CONFIG_FILE = "khaosync.yaml"
DEFAULT_STATE_PATH = ".khaosync/state.db"
DEFAULT_SANDBOX_PATH = ".khaosync/sandbox"
SANDBOX_OMETRIA_KEY = "sandbox-key"
# In-process sandbox URLs: never resolved, the transport is a WSGI app (see khaosync.connect).
SANDBOX_KHAOS_URL = "https://sandbox.khaosync.invalid/khaos/KhaosKSD.exe/soap/IKosWeb"
SANDBOX_OMETRIA_URL = "https://sandbox.khaosync.invalid/ometria/v2"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    # Only ``localhost`` itself and literal loopback addresses: a name under .localhost may be
    # resolved by any DNS server (api.ometria.com.localhost), so it is not a promise (issue 11.12).
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> str:
    """Refuse plain http:// except to loopback; a secret must never cross a network in clear."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what}: {url!r} is not an http(s) URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(
            f"{what}: plain http:// is refused for non-loopback host {parts.hostname!r}; use https://"
        )
    return url


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KhaosCredentials(Strict):
    """Optional: public clients send none. ``body``: ``Username``/``Password`` first in every
    call's body (assumed); ``session``: ``Login(UserName, UserPassword)`` once, its answer then
    sent in a ``SessionID`` SOAP header (assumed; the site declares ``Login``)."""

    username: str
    mode: Literal["body", "session"] = "body"
    password: SecretStr | None = None
    password_env: str | None = None

    def resolved_password(self) -> SecretStr | None:
        if self.password is not None:
            return self.password
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"khaos.credentials.password_env: environment variable {self.password_env} is not set")
            return SecretStr(value)
        return None


class KhaosSettings(Strict):
    soap_url: str = SANDBOX_KHAOS_URL
    wsdl_url: str | None = Field(default=None, description="defaults to soap_url with /soap/ replaced by /wsdl/")
    verify_tls: bool = True
    timeout_s: float = 60.0
    retries: int = Field(default=4, ge=0, le=10)
    credentials: KhaosCredentials | None = None
    # Per-site differences, all assumptions listed in docs/verify-on-site.md.
    methods: dict[str, str] = Field(default_factory=dict, description="our method name -> the site's")
    company_batch: int = Field(default=200, ge=1, le=1000)
    stock_batch: int = Field(default=50, ge=1, le=500)
    compressed_stock: bool = True
    stock_list_form: Literal["last_updated", "date_type"] = Field(
        default="last_updated",
        description="GetStockList's parameters: (LastUpdated) as the real site, or the connector's "
                    "(DateType, DateValue, StockItemType); `khaos discover` says which the site declares")
    body_namespace: str | None = Field(
        default=None, description="the method elements' namespace; read from the site's WSDL when unset")
    credit_notes_path: str | None = Field(default=None, description="folder of credit note exports")

    @field_validator("soap_url", "wsdl_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v, "khaos URL")

    def resolved_wsdl_url(self) -> str:
        return self.wsdl_url or self.soap_url.replace("/soap/", "/wsdl/")


class OmetriaSettings(Strict):
    base_url: str = "https://api.ometria.com/v2"
    api_key: SecretStr | None = None
    api_key_env: str = "OMETRIA_API_KEY"
    collection: str = "khaos"
    store: str | None = None
    push_rate: float = Field(default=4.0, gt=0, description="requests/s; older docs say 4, current 8")
    read_rate: float = Field(default=4.0, gt=0)
    timeout_s: float = 30.0
    retries: int = Field(default=5, ge=0, le=20)
    # Push and verification (docs/push.md).
    push_in_flight: int = Field(default=8, ge=1, le=64,
                                description="push requests kept in flight, so slow answers do not leave the rate unused")
    read_in_flight: int = Field(default=4, ge=1, le=64,
                                description="read-back GETs kept in flight (still within read_rate), so slow answers "
                                            "do not leave the rate unused")
    verify_delay_s: float = Field(default=0.0, ge=0, le=3600,
                                  description="wait before reading back: Ometria stores pushed records asynchronously")
    verify_sample: int = Field(default=20, ge=1, description="records read back per type after a push (--verify sample)")
    # GET /unsubscribes documents no page size: an answer this long may be cut short, so its
    # window is split (khaosync/ometria/unsubscribes.py); the budget bounds one read (verify on site).
    unsubscribes_full_answer: int = Field(default=500, ge=2, description="an unsubscribes answer this long is split")
    unsubscribes_max_requests: int = Field(default=500, ge=1, description="most requests one unsubscribes read makes")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v, "ometria.base_url").rstrip("/")

    def resolved_api_key(self) -> SecretStr:
        if self.api_key is not None:
            return self.api_key
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ConfigError(f"ometria: no API key (set {self.api_key_env} or ometria.api_key)")
        return SecretStr(value)


class PullSettings(Strict):
    """How far back pull looks (see docs/pull.md)."""

    lookback_hours: float = Field(default=24, ge=0, description="re-read this much before each bookmark")
    history_start: date = Field(default=date(2015, 1, 1), description="where a --full pull starts")
    first_order_code: str = Field(default="SO00001", pattern=r"^[A-Za-z0-9_/-]*[0-9]+$",
                                  description="the sales order code a first (or --full) pull walks from")
    order_code_gap: int = Field(default=50, ge=1, le=100000,
                                description="unknown order codes in a row that end the walk (deleted codes leave gaps)")
    order_status_lookback_days: int = Field(default=60, ge=0, le=3660,
                                            description="completed orders placed this recently are re-read for "
                                                        "late cancellations")
    reexport_open_orders: bool = Field(
        default=False, description="also export every order the status sweep asks about again (one ExportOrders "
                                   "call each), for sites where orders are edited after they are placed")
    stock_status: Literal["all", "changed", "off"] = Field(
        default="all", description="stock levels read each run for every staged item, only changed ones, or none")


class PlanSettings(Strict):
    """How long plans keep their bodies (see docs/diff.md, "Plans in the state file")."""

    retention_days: int = Field(default=30, ge=0, description="superseded and pushed plans older than this are pruned")


class SandboxSettings(Strict):
    path: str = DEFAULT_SANDBOX_PATH


class Profile(Strict):
    """One resolved configuration. ``mode`` sandbox means the in-process emulators."""

    mode: Literal["sandbox", "live"]
    name: str = "sandbox"
    khaos: KhaosSettings = Field(default_factory=KhaosSettings)
    ometria: OmetriaSettings = Field(default_factory=OmetriaSettings)
    mappings: list[str] = Field(default_factory=lambda: ["mappings/default.yaml"])
    state: str = DEFAULT_STATE_PATH
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    pull: PullSettings = Field(default_factory=PullSettings)
    plans: PlanSettings = Field(default_factory=PlanSettings)
    source: str | None = Field(default=None, description="the config file this came from, if any")

    @model_validator(mode="after")
    def _live_needs_real_urls(self) -> "Profile":
        if self.mode == "live":
            for url in (self.khaos.soap_url, self.ometria.base_url):
                if ".invalid" in (urlsplit(url).hostname or ""):
                    raise ValueError(f"mode live: {url} is the sandbox's in-process address; set the site's URL")
        return self

    @property
    def is_sandbox(self) -> bool:
        return self.mode == "sandbox"

    def masked(self) -> dict[str, Any]:
        """A dump safe to print: secrets appear as '***' and only say whether they are set."""
        data = self.model_dump(mode="json")
        data["ometria"]["api_key"] = "***" if self.ometria.api_key is not None else None
        data["ometria"]["api_key_set"] = self.ometria.api_key is not None or bool(os.environ.get(self.ometria.api_key_env))
        creds = data["khaos"].get("credentials")
        if creds:
            creds["password"] = "***" if self.khaos.credentials and self.khaos.credentials.password else None
        return data


def sandbox_profile(state: str | None = None, sandbox_path: str | None = None) -> Profile:
    key = os.environ.get("OMETRIA_API_KEY") or SANDBOX_OMETRIA_KEY
    return Profile(
        mode="sandbox",
        name="sandbox",
        khaos=KhaosSettings(soap_url=SANDBOX_KHAOS_URL),
        ometria=OmetriaSettings(base_url=SANDBOX_OMETRIA_URL, api_key=SecretStr(key), push_rate=8.0),
        state=state or DEFAULT_STATE_PATH,
        sandbox=SandboxSettings(path=sandbox_path or DEFAULT_SANDBOX_PATH),
    )


def load_profile(config_path: str | Path | None = None, state: str | None = None) -> Profile:
    """Resolve the profile: explicit file, else ./khaosync.yaml if present, else the sandbox."""
    path: Path | None
    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
    else:
        path = Path(DEFAULT_CONFIG_FILE) if Path(DEFAULT_CONFIG_FILE).is_file() else None
    if path is None:
        return sandbox_profile(state=state)
    raw = read_yaml(read_text_file(path, "config file"), str(path))
    if "mode" not in raw:
        raise ConfigError(f"{path}: mode: required (sandbox or live); a real profile is always chosen explicitly")
    raw = dict(raw)
    raw["source"] = str(path)
    if state is not None:
        raw["state"] = state
    if raw.get("mode") == "sandbox":
        base = sandbox_profile(state=raw.get("state"), sandbox_path=(raw.get("sandbox") or {}).get("path"))
        merged = base.model_dump(mode="python")
        merged["ometria"]["api_key"] = base.ometria.api_key
        for k, v in raw.items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
        raw = merged
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe(exc, str(path), "configuration", "README.md")) from None
