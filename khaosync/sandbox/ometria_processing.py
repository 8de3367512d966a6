"""The Ometria emulator's asynchronous side: what happens to accepted records in the queue.

Reference, transport: "push is asynchronous"; ``OK`` means received, not stored. Processing
applies the upsert, identity and consent rules of the reference in queue order (oldest first)
and logs what fails to the account's error log, where the client only sees it by polling
``/push/_errors`` or by reading back.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from khaosync.sandbox import ometria_store as store
from khaosync.sandbox.ometria_validation import (
    DIRECTIVES,
    NOT_SPECIFIED,
    OPTED_IN,
    OPTED_OUT,
    RecordError,
    creation_error,
    is_blank,
)

# Identifiers two different contacts may not share (reference, identity: "since 2024 ... a
# conflicting identifier ... is silently ignored"). The brief names email; the reference's
# wording could also cover customer_id: add it here to make the sandbox stricter.
CONFLICTING_IDENTIFIERS = ("email",)

# What a blank (null or "") sent for a field does to the stored value. Ometria's "Merge" page:
# without ``@merge``, "passing blank data in a field may or may not result in those field values
# being removed"; with it, "any parameters which are not set will be copied from the existing
# record". The emulator's default is the harder reading, "may not": the stored value stays.
BLANKS_KEPT = "kept"
BLANKS_CLEARED = "cleared"
BLANK_RULES = (BLANKS_KEPT, BLANKS_CLEARED)


@dataclass
class ProcessingOutcome:
    """What one processing run did, for the error log and the stats."""

    processed: int = 0
    stored: int = 0
    errors: list[dict] = field(default_factory=list)
    identity_conflicts: int = 0
    optins_refused: int = 0


def process_entries(conn: sqlite3.Connection, entries: list[tuple[str, str, dict]], now: str,
                    blanks: str = BLANKS_KEPT) -> ProcessingOutcome:
    """Apply queued records, oldest first, inside the caller's transaction."""
    outcome = ProcessingOutcome()
    for request_id, record_type, record in entries:
        outcome.processed += 1
        error = apply_record(conn, record_type, record, now, outcome, blanks)
        if error is None:
            outcome.stored += 1
            continue
        outcome.errors.append(error_entry(error, request_id, record_type, record.get("id"), now))
    return outcome


def error_entry(error: RecordError, request_id: str, record_type: str, record_id: Any, now: str) -> dict:
    """One ``/push/_errors`` entry (the assumed extra fields of the reference included)."""
    return {
        "error_message": error.message,
        "error_path": error.path,
        "request_id": request_id,
        "record_type": record_type,
        "record_id": record_id if isinstance(record_id, str) else None,
        "timestamp": now,
    }


def apply_record(conn: sqlite3.Connection, record_type: str, record: dict, now: str,
                 outcome: ProcessingOutcome, blanks: str = BLANKS_KEPT) -> RecordError | None:
    """Reference, upsert: a new id is created (and needs every required field), an existing
    one has the fields sent merged into it. Custom events are not merged: last write wins."""
    if record_type == "custom_event":
        store.put_record(conn, record_type, record["id"], record, updated=now)
        return None
    collection = record["@collection"] if record_type == "contact" else ""
    stored = store.get_record(conn, record_type, record["id"], collection)
    if stored is None:
        error = creation_error(record_type, record)
        if error is not None:
            return error
    if record_type == "order":
        error = line_reference_error(conn, record)
        if error is not None:
            return error
    clear = blanks == BLANKS_CLEARED and record.get("@merge") is not True
    merged = merge_fields(stored or {"@type": record_type}, record, clear_blanks=clear)
    if record_type == "contact":
        drop_conflicting_identifiers(conn, merged, stored, record, outcome)
        guard_opt_out(conn, merged, stored, record, outcome)
        store.put_record(conn, "contact", record["id"], merged, collection=collection, email=merged.get("email"),
                         updated=now)
        update_profile(conn, merged, record, now)
    else:
        store.put_record(conn, record_type, record["id"], merged, updated=now)
    return None


# -- merge rules -----------------------------------------------------------------------------
def merge_fields(stored: dict, sent: dict, *, clear_blanks: bool = False, top: bool = True) -> dict:
    """Reference, upsert: "the information in the object will be merged in with the fields in
    the current record" (Ometria's Push API page), for contacts, products and orders alike.

    Fields not sent are kept. A blank (null or "") clears the stored value only when
    ``clear_blanks`` (the ``blanks="cleared"`` emulator, without ``@merge``); otherwise the
    stored value (or its absence) stands. An object (``properties``, ``customer``, an address,
    ``channels``) is merged key by key, the harder reading for a sender: a key it stops sending
    stays. An array is replaced whole: "Merge does apply to product attributes ... You must pass
    all relevant attributes" (the "Merge" page), and lines are sent whole (reference, order).
    """
    merged = dict(stored)
    for key, value in sent.items():
        if top and key in DIRECTIVES:
            continue
        if is_blank(value):
            if clear_blanks:
                merged.pop(key, None)
            continue
        if isinstance(value, dict):
            inner = merged.get(key)
            merged[key] = merge_fields(inner if isinstance(inner, dict) else {}, value, clear_blanks=clear_blanks,
                                       top=False)
        else:
            merged[key] = value
    return merged


def keep_stored(merged: dict, stored: dict | None, key: str) -> None:
    """Undo what this push did to ``key``: the stored value (or its absence) stands."""
    if stored is not None and key in stored:
        merged[key] = stored[key]
    else:
        merged.pop(key, None)


def line_reference_error(conn: sqlite3.Connection, record: dict) -> RecordError | None:
    """Reference, order: "`product_id` (must already exist in Ometria: push products first)".

    An order with a line whose product (or, *sandbox rule*, whose ``variant_id``) Ometria does
    not hold is not stored at all. Only the lines sent are checked (a partial update without
    ``lineitems`` keeps the stored ones).
    """
    for index, line in enumerate(record.get("lineitems") or []):
        for key in ("product_id", "variant_id"):
            product_id = line.get(key)
            if product_id is not None and not store.record_exists(conn, "product", product_id):
                return RecordError("Invalid reference: product does not exist", f"root > lineitems > {index} > {key}")
    return None


# -- contacts: identity and consent ----------------------------------------------------------
def drop_conflicting_identifiers(conn: sqlite3.Connection, merged: dict, stored: dict | None, record: dict,
                                 outcome: ProcessingOutcome) -> None:
    """Reference, identity: an email already held by a different contact (any collection) is
    "silently ignored": the contact is stored without it, and no error is logged."""
    for key in CONFLICTING_IDENTIFIERS:
        value = record.get(key)
        if value is None:
            continue
        if key == "email":
            taken = store.email_held_elsewhere(conn, value, record["@collection"], record["id"])
        else:
            taken = _value_held_elsewhere(conn, key, value, record["@collection"], record["id"])
        if taken:
            keep_stored(merged, stored, key)
            outcome.identity_conflicts += 1


def _value_held_elsewhere(conn: sqlite3.Connection, key: str, value: Any, collection: str, contact_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM record WHERE type = 'contact' AND json_extract(doc, '$.' || ?) = ? "
        "AND NOT (collection = ? AND id = ?) LIMIT 1",
        (key, value, collection, contact_id),
    ).fetchone()
    return row is not None


def is_opted_out(conn: sqlite3.Connection, email: str | None, stored: dict | None) -> bool:
    """Opted out: the email's profile unsubscribed (in Ometria or through the API), or the
    stored contact itself says ``EXPLICITLY_OPTEDOUT``."""
    if stored is not None and stored.get("marketing_optin") == OPTED_OUT:
        return True
    if email:
        row = store.profile_row(conn, email)
        return row is not None and row[2] == OPTED_OUT
    return False


def guard_opt_out(conn: sqlite3.Connection, merged: dict, stored: dict | None, record: dict,
                  outcome: ProcessingOutcome) -> None:
    """Reference, consent: "An opted-out listing keeps the profile opted out unless
    `@force_optin: true` is sent". ``NOT_SPECIFIED`` never lifts an opt-out either."""
    wanted = record.get("marketing_optin")
    if wanted not in (OPTED_IN, NOT_SPECIFIED) or not is_opted_out(conn, merged.get("email"), stored):
        return
    if wanted == OPTED_IN and record.get("@force_optin") is True:
        return
    merged["marketing_optin"] = OPTED_OUT
    keep_stored(merged, stored, "timestamp_subscribed")
    if wanted == OPTED_IN:
        outcome.optins_refused += 1


def update_profile(conn: sqlite3.Connection, contact: dict, record: dict | None, now: str) -> None:
    """Profiles merge contacts by email: one per (lower-cased) email, touched by every change
    to a contact holding it; an explicit consent decision sent on the contact moves the
    profile's consent (``record`` None: take the contact's own, as when seeding)."""
    email = contact.get("email")
    if not email:
        return
    store.ensure_profile(conn, email, now)
    sent = contact if record is None else record
    optin = contact.get("marketing_optin")
    if "marketing_optin" not in sent or optin not in (OPTED_IN, OPTED_OUT):
        return
    timestamp_key = "timestamp_unsubscribed" if optin == OPTED_OUT else "timestamp_subscribed"
    store.set_profile_consent(conn, email, optin, contact.get(timestamp_key) or now)


def seed(conn: sqlite3.Connection, record_type: str, doc: dict, now: str) -> None:
    """Plant a record as Ometria already holds it: no validation, no queue, no identity rules."""
    record = {"@type": record_type, **{key: value for key, value in doc.items() if key != "@type"}}
    if "id" not in record:
        raise ValueError(f"seeded {record_type} has no id: {doc!r}")
    if record_type == "contact":
        if not record.get("@collection"):
            raise ValueError(f"seeded contact {record['id']!r} has no @collection")
        store.put_record(conn, "contact", record["id"], record, collection=record["@collection"],
                         email=record.get("email"), updated=now)
        update_profile(conn, record, None, now)
    else:
        store.put_record(conn, record_type, record["id"], record, updated=now)
