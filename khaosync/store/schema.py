"""Versioned schema migrations. Append a new entry; never edit a shipped one.

Each migration runs in its own transaction and bumps ``PRAGMA user_version``.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[str, str]] = [
    (
        "runs, staged ERP records with history, bookmarks, exceptions",
        """
        CREATE TABLE run (
            id          INTEGER PRIMARY KEY,
            command     TEXT NOT NULL,
            profile     TEXT NOT NULL,
            started_at  TEXT NOT NULL,
            finished_at TEXT,
            status      TEXT NOT NULL DEFAULT 'running',  -- running | ok | failed
            summary     TEXT                               -- JSON
        );

        -- Every version of every ERP record pull has seen; the current one has current = 1.
        CREATE TABLE staged_record (
            entity       TEXT NOT NULL,     -- company | stock_item | sales_order | credit_note
            key          TEXT NOT NULL,     -- the stable KC id (COMPANY_ID, StockID, SOrderID, ...)
            version      INTEGER NOT NULL,
            content_hash TEXT NOT NULL,     -- sha256 of the canonical parsed record
            raw          BLOB NOT NULL,     -- exactly what the ERP sent for this record
            parsed       TEXT,              -- canonical JSON, NULL when it could not be parsed
            run_id       INTEGER NOT NULL REFERENCES run(id),
            seen_at      TEXT NOT NULL,
            current      INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (entity, key, version)
        );
        CREATE UNIQUE INDEX staged_current ON staged_record(entity, key) WHERE current = 1;

        -- Codes that change while the stable id stays (stock codes, URNs, invoice codes).
        CREATE TABLE record_alias (
            entity      TEXT NOT NULL,
            key         TEXT NOT NULL,
            alias_kind  TEXT NOT NULL,      -- stock_code | company_code | invoice_code
            alias       TEXT NOT NULL,
            first_version INTEGER NOT NULL,
            PRIMARY KEY (entity, alias_kind, alias, key)
        );

        -- What could not be staged as a record version: a document that did not parse and whose
        -- pieces carry no key, a second copy of an id in one answer. Kept byte for byte.
        CREATE TABLE rejected_payload (
            id          INTEGER PRIMARY KEY,
            run_id      INTEGER NOT NULL REFERENCES run(id),
            entity      TEXT NOT NULL,
            key         TEXT,
            reason      TEXT NOT NULL,
            raw         BLOB NOT NULL,
            received_at TEXT NOT NULL
        );

        CREATE TABLE bookmark (
            entity     TEXT PRIMARY KEY,
            position   TEXT NOT NULL,       -- ISO UTC datetime covered up to
            run_id     INTEGER NOT NULL REFERENCES run(id),
            updated_at TEXT NOT NULL
        );

        CREATE TABLE exception (
            id          INTEGER PRIMARY KEY,
            type        TEXT NOT NULL,      -- stable snake_case: malformed_record, identifier_conflict, ...
            severity    TEXT NOT NULL CHECK (severity IN ('info', 'warn', 'fail')),
            owner       TEXT NOT NULL,
            stage       TEXT NOT NULL,
            entity      TEXT,
            record_key  TEXT,
            fingerprint TEXT NOT NULL UNIQUE,  -- type + stage + records: the same finding is one row
            reason      TEXT NOT NULL,
            records     TEXT NOT NULL,      -- JSON list of the record keys involved
            detail      TEXT,               -- JSON
            first_seen  TEXT NOT NULL,
            last_seen   TEXT NOT NULL,
            first_run   INTEGER NOT NULL REFERENCES run(id),
            last_run    INTEGER NOT NULL REFERENCES run(id),
            resolved_at TEXT
        );
        CREATE INDEX exception_open ON exception(resolved_at, owner, type);
        """,
    ),
]

SCHEMA_VERSION = len(MIGRATIONS)
