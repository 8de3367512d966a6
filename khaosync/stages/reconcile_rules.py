"""The reconcile and health rules file: thresholds per metric, severities per record issue,
and what the daily health check calls late, stalled or old (docs/reconcile.md).

The default is ``mappings/reconcile.yaml``; with no such file where khaosync runs (a cron
job's working folder) the built-in defaults below apply, and they are the same values (a test
keeps the two equal). A bad file fails with a ``ConfigError`` naming the file, the key path and
the reason: ``rules.yaml: metrics.net_revenue.fail: a threshold is an amount (0.01) or a
percentage ("0.5%"), got 'lots'``.

Thresholds. A metric's status comes from its *unexplained* difference (the difference left
once orders that are not yet due in Ometria are set aside): ``fail`` when it is more than the
``fail`` threshold, else ``warn`` when more than the ``warn`` threshold, else ``ok``. A
threshold is an amount in the metric's own unit (orders, units, pounds) or a percentage of the
ERP figure (``"0.5%"``); ``0`` means any difference at all; ``null`` switches that level off.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from khaosync.errors import ConfigError
from khaosync.yaml_files import describe, read_text_file, read_yaml

DEFAULT_RULES_PATH = "mappings/reconcile.yaml"

Severity = Literal["info", "warn", "fail"]
Status = Literal["ok", "warn", "fail"]

METRICS = ("orders", "valid_orders", "gross_revenue", "refunds", "net_revenue", "customers", "units")
"""The month's metrics, in the order tables show them (docs/reconcile.md defines each)."""

ORDER_ISSUES = (
    "missing_in_ometria", "not_in_erp", "duplicate", "duplicate_voided", "status_mismatch", "total_mismatch",
    "refund_missing", "refund_mismatch", "customer_mismatch", "currency_mismatch", "timestamp_mismatch",
    "units_mismatch", "store_mismatch", "not_yet_due", "cancelled_not_sent", "erp_malformed",
)
CONTACT_ISSUES = (
    "missing_in_ometria", "not_in_erp", "email_mismatch", "email_withheld", "name_mismatch", "customer_mismatch",
    "consent_gap", "unsubscribed_in_ometria", "store_mismatch", "erp_malformed",
)


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Threshold(_Rules):
    """An amount, or a share of the ERP figure (``percent``)."""

    value: Decimal
    percent: bool = False

    @classmethod
    def parse(cls, raw: Any) -> "Threshold":
        if isinstance(raw, Threshold):
            return raw
        if isinstance(raw, bool) or raw is None:
            raise ValueError(f"a threshold is an amount (0.01) or a percentage (\"0.5%\"), got {raw!r}")
        text = str(raw).strip()
        percent = text.endswith("%")
        try:
            value = Decimal(text[:-1].strip() if percent else text)
        except InvalidOperation:
            raise ValueError(f"a threshold is an amount (0.01) or a percentage (\"0.5%\"), got {raw!r}") from None
        if not value.is_finite() or value < 0:
            raise ValueError(f"a threshold must be zero or more, got {raw!r}")
        return cls(value=value, percent=percent)

    def exceeded_by(self, difference: Decimal, base: Decimal) -> bool:
        """Is ``difference`` (against the ERP figure ``base``) more than this threshold?"""
        size = abs(difference)
        if size == 0:
            return False
        if not self.percent:
            return size > self.value
        if base == 0:
            return True  # any difference from nothing is more than any share of nothing
        return size * 100 / abs(base) > self.value

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


def _threshold(raw: Any) -> Threshold | None:
    return None if raw is None else Threshold.parse(raw)


class MetricRule(_Rules):
    warn: Threshold | None = None
    fail: Threshold | None = Field(default_factory=lambda: Threshold(value=Decimal(0)))

    @field_validator("warn", "fail", mode="before")
    @classmethod
    def _parse(cls, raw: Any) -> Threshold | None:
        return _threshold(raw)

    def status(self, difference: Decimal, base: Decimal) -> Status:
        if self.fail is not None and self.fail.exceeded_by(difference, base):
            return "fail"
        if self.warn is not None and self.warn.exceeded_by(difference, base):
            return "warn"
        return "ok"


class IssueRule(_Rules):
    """How bad one kind of record difference is, and (optionally) who owns it on this site."""

    severity: Severity
    owner: str | None = None


def _default_metrics() -> dict[str, MetricRule]:
    return {name: MetricRule() for name in METRICS}


# Severity of each record-level difference by default (docs/reconcile.md says why).
ORDER_ISSUE_SEVERITY: dict[str, Severity] = {
    "missing_in_ometria": "fail", "not_in_erp": "warn", "duplicate": "fail", "duplicate_voided": "info",
    "status_mismatch": "fail", "total_mismatch": "fail", "refund_missing": "fail", "refund_mismatch": "fail",
    "customer_mismatch": "fail", "currency_mismatch": "fail", "timestamp_mismatch": "warn",
    "units_mismatch": "fail", "store_mismatch": "warn", "not_yet_due": "info", "cancelled_not_sent": "info",
    "erp_malformed": "info",
}
CONTACT_ISSUE_SEVERITY: dict[str, Severity] = {
    "missing_in_ometria": "warn", "not_in_erp": "info", "email_mismatch": "warn", "email_withheld": "info",
    "name_mismatch": "warn", "customer_mismatch": "fail", "consent_gap": "fail", "unsubscribed_in_ometria": "warn",
    "store_mismatch": "warn", "erp_malformed": "info",
}


def _issue_rules(defaults: dict[str, Severity]) -> dict[str, IssueRule]:
    return {name: IssueRule(severity=severity) for name, severity in defaults.items()}


class OrderRules(_Rules):
    metrics: dict[str, MetricRule] = Field(default_factory=_default_metrics)
    issues: dict[str, IssueRule] = Field(default_factory=lambda: _issue_rules(ORDER_ISSUE_SEVERITY))

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: dict[str, MetricRule]) -> dict[str, MetricRule]:
        unknown = sorted(set(v) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; known: {', '.join(METRICS)}")
        return {**_default_metrics(), **v}

    @field_validator("issues")
    @classmethod
    def _known_issues(cls, v: dict[str, IssueRule]) -> dict[str, IssueRule]:
        return _merge_issues(v, ORDER_ISSUE_SEVERITY)


class ContactRules(_Rules):
    issues: dict[str, IssueRule] = Field(default_factory=lambda: _issue_rules(CONTACT_ISSUE_SEVERITY))

    @field_validator("issues")
    @classmethod
    def _known_issues(cls, v: dict[str, IssueRule]) -> dict[str, IssueRule]:
        return _merge_issues(v, CONTACT_ISSUE_SEVERITY)


def _merge_issues(given: dict[str, IssueRule], defaults: dict[str, Severity]) -> dict[str, IssueRule]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown issue {unknown[0]!r}; known: {', '.join(sorted(defaults))}")
    return {**_issue_rules(defaults), **given}


class AgeRule(_Rules):
    """Hours after which something is late: ``warn`` then ``fail`` (null: that level off)."""

    warn_hours: float | None = Field(None, ge=0)
    fail_hours: float | None = Field(None, ge=0)

    def status(self, hours: float | None) -> Status:
        """``None`` hours means "never happened": as late as can be."""
        if self.fail_hours is not None and (hours is None or hours > self.fail_hours):
            return "fail"
        if self.warn_hours is not None and (hours is None or hours > self.warn_hours):
            return "warn"
        return "ok"


class CountRule(_Rules):
    """A count at or above ``warn`` / ``fail`` raises that status (null: that level off)."""

    warn: int | None = Field(None, ge=1)
    fail: int | None = Field(None, ge=1)

    def status(self, count: int) -> Status:
        if self.fail is not None and count >= self.fail:
            return "fail"
        if self.warn is not None and count >= self.warn:
            return "warn"
        return "ok"


class ExceptionAgeRule(_Rules):
    """Open exceptions: a fail-severity one turns health red after ``fail_severity_hours``; a
    warn-severity one turns it yellow after ``warn_severity_hours`` (time to triage it)."""

    fail_severity_hours: float = Field(0, ge=0)
    warn_severity_hours: float | None = Field(24 * 7, ge=0)


class LagRule(AgeRule):
    """Bookmark lag: only for entities that change every day (a catalogue may rest for weeks,
    and its high-water mark with it); the others are shown, never judged."""

    entities: list[Literal["customers", "stock", "orders", "credit-notes"]] = Field(
        default_factory=lambda: ["customers", "orders"])


class HealthRules(_Rules):
    last_pull: AgeRule = Field(default_factory=lambda: AgeRule(warn_hours=26, fail_hours=50))
    last_push: AgeRule = Field(default_factory=lambda: AgeRule(warn_hours=26, fail_hours=50))
    bookmark_lag: LagRule = Field(default_factory=lambda: LagRule(warn_hours=26, fail_hours=72))
    stalled_batch_minutes: float = Field(15, gt=0, description="a batch journaled longer ago than this, unanswered")
    stuck_run_hours: float = Field(6, gt=0, description="a run still 'running' after this long was killed")
    failed_records: CountRule = Field(default_factory=lambda: CountRule(warn=1))
    unattributed_push_errors: CountRule = Field(default_factory=lambda: CountRule(fail=1))
    exceptions: ExceptionAgeRule = Field(default_factory=ExceptionAgeRule)


class ReconcileRules(_Rules):
    """One site's reconcile and health rules (``mappings/reconcile.yaml``)."""

    version: Literal[1] = 1
    orders: OrderRules = Field(default_factory=OrderRules)
    contacts: ContactRules = Field(default_factory=ContactRules)
    health: HealthRules = Field(default_factory=HealthRules)
    source: str = Field("built-in defaults", description="where these rules came from (set by the loader)")

    def metric(self, name: str) -> MetricRule:
        return self.orders.metrics.get(name, MetricRule())

    def order_issue(self, name: str) -> IssueRule:
        return self.orders.issues.get(name, IssueRule(severity="warn"))

    def contact_issue(self, name: str) -> IssueRule:
        return self.contacts.issues.get(name, IssueRule(severity="warn"))


# -- loading ----------------------------------------------------------------------------------


def parse_rules(text: str, source: str = "<rules>") -> ReconcileRules:
    """Validate a rules file's text; errors name ``source``, the key path and the reason."""
    data = read_yaml(text, source)
    if "source" in data:
        raise ConfigError(f"{source}: source: unknown key (docs/reconcile.md lists the keys a rules file takes)")
    try:
        return ReconcileRules.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ConfigError(describe(exc, source, "reconcile rules", "docs/reconcile.md")) from None


def load_rules(path: str | Path | None = None) -> ReconcileRules:
    """The rules at ``path``; without one, ``mappings/reconcile.yaml`` if it exists, else the
    built-in defaults. A path given explicitly must exist."""
    if path is None:
        default = Path(DEFAULT_RULES_PATH)
        if not default.is_file():
            return ReconcileRules()
        path = default
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"rules file {p} not found")
    return parse_rules(read_text_file(p, "rules file"), str(p))
