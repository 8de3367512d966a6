"""Exception types: their stable names, default severity and default owner.

Every finding khaosync records has one of these types. The mapping file (issue 4) can
change owners per site; these are the defaults an operator starts from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExceptionType:
    name: str
    severity: str  # info | warn | fail
    owner: str     # ecommerce | crm | finance | integration
    meaning: str


TYPES: dict[str, ExceptionType] = {t.name: t for t in [
    ExceptionType("malformed_record", "warn", "ecommerce",
                  "an ERP record that cannot be read or breaks a rule (bad email, unknown currency, negative quantity, broken XML)"),
    ExceptionType("duplicate_in_response", "warn", "integration",
                  "the ERP returned the same record id twice in one answer; the first copy was kept"),
    ExceptionType("total_mismatch", "fail", "finance",
                  "an order's lines and delivery do not add up to the ERP's own total, to the penny"),
    ExceptionType("identifier_conflict", "warn", "crm", "one email on several ERP contacts, or held by another Ometria contact"),
    ExceptionType("split_consignment_duplicate", "fail", "ecommerce", "more than one Ometria order for one ERP sales order"),
    ExceptionType("product_mismatch", "warn", "ecommerce", "an order line's product unknown, renamed or incomplete"),
    ExceptionType("refund_gap", "fail", "finance", "a processed credit note not reflected in Ometria"),
    ExceptionType("consent_gap", "warn", "crm", "opted out on one side and opted in on the other"),
    ExceptionType("missing_purchase_history", "warn", "crm", "an Ometria contact's purchases do not match the ERP"),
    ExceptionType("stalled_batch", "fail", "integration", "a journaled push never acknowledged, or push errors not attributed"),
    ExceptionType("push_rejected", "fail", "integration",
                  "Ometria refused a record we pushed (at once, or later when it processed it); kept in the "
                  "failed-record index and retried"),
    ExceptionType("push_verification_mismatch", "fail", "integration",
                  "a record read back from Ometria after a push differs from what it accepted, or is missing"),
    ExceptionType("stale_field", "warn", "integration",
                  "a field khaosync stopped sending (a coupon removed, tracking cleared, a property dropped) that "
                  "Ometria still holds after accepting a blank for it: the API cannot clear it, so it is cleared "
                  "in Ometria by hand (or by Ometria support)"),
    ExceptionType("record_too_large", "warn", "integration",
                  "a mapped record over Ometria's 60 KB record limit: held, never sent"),
    ExceptionType("unmapped_value", "warn", "integration",
                  "an ERP code the mapping file does not list (an invoice stage id): handled as docs/mappings.md says"),
    ExceptionType("refund_exceeds_order", "fail", "finance",
                  "a credit note refunds more than the order line (or the order) it is raised against: held"),
    ExceptionType("unknown_customer", "warn", "crm",
                  "an order whose customer Khaos Control never exported (or exported unreadable)"),
    ExceptionType("conflicting_exports", "warn", "integration",
                  "one record in two export files with different content: the one KC changed last is kept "
                  "(by its own change time; by file name when it has none)"),
    ExceptionType("unmatched_order_status", "warn", "integration",
                  "an order status in an export folder whose sales order is not there"),
    ExceptionType("ometria_only_order", "info", "ecommerce",
                  "an order Ometria holds that no KC sales order explains (a storefront order that never reached "
                  "the ERP); counted in Ometria's revenue, not in the ERP's"),
]}


def severity_of(type_name: str) -> str:
    return TYPES[type_name].severity if type_name in TYPES else "warn"


def owner_of(type_name: str, owners: dict[str, str] | None = None) -> str:
    """The owner of a finding: the mapping file's ``owners`` first, then the default."""
    if owners and type_name in owners:
        return owners[type_name]
    return TYPES[type_name].owner if type_name in TYPES else "integration"
