"""Versioned schema migrations. Append a new entry; never edit a shipped one.

Each migration runs in its own transaction and bumps ``PRAGMA user_version``.
"""

from __future__ import annotations

_LEDGER_VIEW = """\
        -- One table and a subquery (no join), so a query joining the view still uses its indexes.
        CREATE VIEW ledger AS
            SELECT l.type, l.id, l.content_hash,
                   coalesce(l.body, (SELECT o.body FROM outbound_record o WHERE o.type = l.type AND o.id = l.id)) AS body,
                   l.batch_id, l.request_id, l.accepted_at, l.verified_at
            FROM ledger_entry l;

        CREATE TRIGGER outbound_insert_keeps_ledger_body BEFORE INSERT ON outbound_record
        WHEN EXISTS (SELECT 1 FROM ledger_entry WHERE type = new.type AND id = new.id AND body IS NULL)
        BEGIN  -- an upsert or INSERT OR REPLACE over the row the ledger shares
            UPDATE ledger_entry SET body = (SELECT o.body FROM outbound_record o WHERE o.type = new.type AND o.id = new.id)
                WHERE type = new.type AND id = new.id AND body IS NULL
                AND (SELECT o.body FROM outbound_record o WHERE o.type = new.type AND o.id = new.id) IS NOT new.body;
        END;
        CREATE TRIGGER outbound_update_keeps_ledger_body BEFORE UPDATE ON outbound_record
        WHEN old.body IS NOT new.body OR old.type IS NOT new.type OR old.id IS NOT new.id
        BEGIN
            UPDATE ledger_entry SET body = old.body WHERE type = old.type AND id = old.id AND body IS NULL;
        END;
        CREATE TRIGGER outbound_delete_keeps_ledger_body BEFORE DELETE ON outbound_record
        BEGIN
            UPDATE ledger_entry SET body = old.body WHERE type = old.type AND id = old.id AND body IS NULL;
        END;

        CREATE TRIGGER ledger_insert INSTEAD OF INSERT ON ledger
        BEGIN
            SELECT RAISE(ABORT, 'NOT NULL constraint failed: ledger.body') WHERE new.body IS NULL;
            INSERT INTO ledger_entry(type, id, content_hash, body, batch_id, request_id, accepted_at, verified_at)
                VALUES (new.type, new.id, new.content_hash,
                        nullif(new.body, (SELECT o.body FROM outbound_record o WHERE o.type = new.type AND o.id = new.id)),
                        new.batch_id, new.request_id, new.accepted_at, new.verified_at);
        END;
        CREATE TRIGGER ledger_update INSTEAD OF UPDATE ON ledger
        BEGIN
            SELECT RAISE(ABORT, 'NOT NULL constraint failed: ledger.body') WHERE new.body IS NULL;
            UPDATE ledger_entry SET type = new.type, id = new.id, content_hash = new.content_hash,
                body = CASE WHEN new.body IS old.body AND new.type IS old.type AND new.id IS old.id THEN body
                            ELSE nullif(new.body, (SELECT o.body FROM outbound_record o
                                                   WHERE o.type = new.type AND o.id = new.id)) END,
                batch_id = new.batch_id, request_id = new.request_id, accepted_at = new.accepted_at,
                verified_at = new.verified_at
                WHERE type = old.type AND id = old.id;
        END;
        CREATE TRIGGER ledger_delete INSTEAD OF DELETE ON ledger
        BEGIN
            DELETE FROM ledger_entry WHERE type = old.type AND id = old.id;
        END;
"""
"""The ``ledger`` view over ``ledger_entry`` and the triggers that keep a shared body (migration 8;
made again when migration 11 rebuilds ``ledger_entry``)."""

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
        CREATE INDEX exception_record ON exception(entity, record_key);
        """,
    ),
    (
        "outbound Ometria records, plans, the push journal, the ledger and the failed-record index",
        """
        -- What map made: exactly the bytes push will send, and which ERP versions made them.
        CREATE TABLE outbound_record (
            type         TEXT NOT NULL,     -- contact | order | product
            id           TEXT NOT NULL,     -- the Ometria id (never personal data)
            content_hash TEXT NOT NULL,     -- sha256 of body
            body         BLOB NOT NULL,     -- canonical JSON, what push sends byte for byte
            lineage      TEXT NOT NULL,     -- JSON [{"entity", "key", "version"}]
            state        TEXT NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'held')),
            hold_reason  TEXT,              -- why a held record is not sent (its exception says more)
            run_id       INTEGER NOT NULL REFERENCES run(id),
            mapped_at    TEXT NOT NULL,
            PRIMARY KEY (type, id)
        );

        -- A reviewed set of records and their hashes; push sends exactly these or refuses.
        CREATE TABLE plan (
            id         TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            run_id     INTEGER REFERENCES run(id),
            scope      TEXT NOT NULL,       -- JSON list of record types the diff covered
            counts     TEXT NOT NULL,       -- JSON {new, changed, unchanged, void}
            status     TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'pushed', 'superseded'))
        );
        CREATE TABLE plan_record (
            plan_id      TEXT NOT NULL REFERENCES plan(id),
            type         TEXT NOT NULL,
            id           TEXT NOT NULL,
            change       TEXT NOT NULL CHECK (change IN ('new', 'changed', 'void')),
            content_hash TEXT NOT NULL,
            body         BLOB NOT NULL,     -- for void records, the voiding version made by diff
            PRIMARY KEY (plan_id, type, id)
        );

        -- The journal: a batch is written here before it is sent, and marked after.
        CREATE TABLE push_batch (
            id          INTEGER PRIMARY KEY,
            plan_id     TEXT REFERENCES plan(id),
            type        TEXT NOT NULL,
            records     TEXT NOT NULL,      -- JSON [[id, content_hash], ...], at most 100
            state       TEXT NOT NULL CHECK (state IN ('journaled', 'accepted', 'failed')),
            request_id  TEXT,
            accepted    INTEGER,
            rejected    INTEGER,
            created_at  TEXT NOT NULL,
            answered_at TEXT,
            error       TEXT
        );
        CREATE INDEX push_batch_state ON push_batch(state);

        -- What Ometria accepted from us, per record: the last body and when.
        CREATE TABLE ledger (
            type         TEXT NOT NULL,
            id           TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            body         BLOB NOT NULL,
            batch_id     INTEGER REFERENCES push_batch(id),
            request_id   TEXT,
            accepted_at  TEXT NOT NULL,
            verified_at  TEXT,              -- read back from Ometria and found equal
            PRIMARY KEY (type, id)
        );

        -- Records Ometria refused (or that errored later); retried on the next run.
        CREATE TABLE failed_record (
            type          TEXT NOT NULL,
            id            TEXT NOT NULL,
            content_hash  TEXT NOT NULL,
            error_message TEXT NOT NULL,
            error_path    TEXT,
            attempts      INTEGER NOT NULL DEFAULT 1,
            first_failed  TEXT NOT NULL,
            last_failed   TEXT NOT NULL,
            PRIMARY KEY (type, id)
        );
        """,
    ),
    (
        "consent back-flow: Ometria's consent changes, KC consent first-seen times, the ImportCompany journal",
        """
        -- Consent changes read from Ometria: GET /unsubscribes, and our contacts' marketing_optin
        -- read back where it differs from what we sent. '' (not NULL) where a part is unknown,
        -- so the same event read twice is one row.
        CREATE TABLE consent_event (
            id         INTEGER PRIMARY KEY,
            source     TEXT NOT NULL CHECK (source IN ('unsubscribes', 'contact')),
            email      TEXT NOT NULL,      -- lower-cased; '' when none
            contact_id TEXT NOT NULL,      -- our collection's contact id; '' for unsubscribes
            profile_id TEXT NOT NULL,
            optin      TEXT NOT NULL CHECK (optin IN ('EXPLICITLY_OPTEDOUT', 'EXPLICITLY_OPTEDIN')),
            type       TEXT NOT NULL,      -- Ometria's unsubscribe type, or marketing_optin
            reason     TEXT,
            at         TEXT NOT NULL,      -- Ometria's time of the change, UTC ISO; '' when it gave none
            raw        TEXT NOT NULL,      -- the event exactly as read (JSON)
            run_id     INTEGER REFERENCES run(id),
            read_at    TEXT NOT NULL,
            UNIQUE (source, email, contact_id, optin, type, at)
        );
        CREATE INDEX consent_event_email ON consent_event(email);
        CREATE INDEX consent_event_contact ON consent_event(contact_id);

        -- KC keeps no consent times: when khaosync first saw each value (company MAILING_STATUS,
        -- contact EMAILSUBSCRIBE). since is NULL when the value was there at the first pull and
        -- KC gave no date for it.
        CREATE TABLE kc_consent_seen (
            entity  TEXT NOT NULL CHECK (entity IN ('company', 'contact')),
            key     TEXT NOT NULL,
            value   TEXT NOT NULL,         -- JSON of the value
            since   TEXT,
            version INTEGER NOT NULL,      -- the company's staged version it was seen in
            PRIMARY KEY (entity, key)
        );

        -- The write-back journal: an ImportCompany document is written here before it is sent.
        CREATE TABLE consent_batch (
            id          INTEGER PRIMARY KEY,
            document    TEXT NOT NULL,     -- the COMPANYS document, exactly as sent
            urns        TEXT NOT NULL,     -- JSON list of the URNs it carries
            state       TEXT NOT NULL CHECK (state IN ('journaled', 'confirmed', 'failed')),
            confirmed   TEXT,              -- JSON list of the URNs KC confirmed
            created_at  TEXT NOT NULL,
            answered_at TEXT,
            error       TEXT
        );
        -- One planned opt-out per KC contact and Ometria change: planned by consent diff, sent by
        -- consent push, done when KC confirmed its URN.
        CREATE TABLE consent_change (
            id             INTEGER PRIMARY KEY,
            contact_id     TEXT NOT NULL,
            company_id     TEXT NOT NULL,
            urn            TEXT NOT NULL,
            email          TEXT NOT NULL,
            mailing_status INTEGER,        -- the company status to set; NULL: leave it as KC holds it
            event_id       INTEGER NOT NULL REFERENCES consent_event(id),
            state          TEXT NOT NULL CHECK (state IN ('planned', 'journaled', 'done', 'failed', 'superseded')),
            batch_id       INTEGER REFERENCES consent_batch(id),
            attempts       INTEGER NOT NULL DEFAULT 0,
            planned_at     TEXT NOT NULL,
            done_at        TEXT,
            error          TEXT,
            UNIQUE (contact_id, event_id)
        );
        CREATE INDEX consent_change_state ON consent_change(state);

        -- Contacts Ometria has erased (GDPR anonymisation): never sent again, so no push re-creates
        -- them. No personal data here: the contact id and what showed the erasure.
        CREATE TABLE consent_erased (
            contact_id  TEXT PRIMARY KEY,
            evidence    TEXT NOT NULL,
            run_id      INTEGER REFERENCES run(id),
            detected_at TEXT NOT NULL
        );
        """,
    ),
    (
        "plans say how they were made and whether a diff narrowed them (issue 14.2)",
        """
        -- The command that made the plan (``diff orders --live``, ``sync``), so push can say it.
        ALTER TABLE plan ADD COLUMN made_by TEXT;
        -- JSON list of the record ids a ``diff --key`` narrowed it to; NULL for a full review.
        -- A narrowed plan supersedes nothing and push sends it only when named (``--plan``).
        ALTER TABLE plan ADD COLUMN narrowed_to TEXT;
        """,
    ),
    (
        "plan bodies stored once by content hash, pruned plans, indexes for the hot lookups",
        """
        -- A body planned by several plans (a type's plan and the sync plan that merges it, the
        -- same unchanged void night after night) is stored once.
        CREATE TABLE plan_body (
            content_hash TEXT PRIMARY KEY,  -- sha256 of body
            body         BLOB NOT NULL
        );
        INSERT OR IGNORE INTO plan_body(content_hash, body) SELECT content_hash, body FROM plan_record;
        CREATE TABLE plan_record_by_hash (
            plan_id      TEXT NOT NULL REFERENCES plan(id),
            type         TEXT NOT NULL,
            id           TEXT NOT NULL,
            change       TEXT NOT NULL CHECK (change IN ('new', 'changed', 'void')),
            content_hash TEXT NOT NULL,     -- the body in plan_body
            PRIMARY KEY (plan_id, type, id)
        );
        INSERT INTO plan_record_by_hash(plan_id, type, id, change, content_hash)
            SELECT plan_id, type, id, change, content_hash FROM plan_record;
        DROP TABLE plan_record;
        ALTER TABLE plan_record_by_hash RENAME TO plan_record;
        CREATE INDEX plan_record_hash ON plan_record(content_hash);
        -- Set when the plan's records were pruned (after plans.retention_days); the push journal
        -- (push_batch.records) keeps which version of a record went when.
        ALTER TABLE plan ADD COLUMN pruned_at TEXT;
        CREATE INDEX plan_status ON plan(status, created_at);

        CREATE INDEX ledger_request ON ledger(request_id) WHERE request_id IS NOT NULL;
        CREATE INDEX push_batch_plan ON push_batch(plan_id);
        CREATE INDEX push_batch_request ON push_batch(request_id) WHERE request_id IS NOT NULL;
        -- What one run staged: how an incremental map finds what changed.
        CREATE INDEX staged_run ON staged_record(run_id, entity);
        CREATE INDEX exception_stage ON exception(stage, resolved_at, entity);
        """,
    ),
    (
        "what map read for each record (reverse lineage), its marks and shared-email decisions",
        """
        -- Every (entity, key) map looked up for a record, found or not: a changed input names the
        -- records to map again. Keys are staged keys, or derived ones ("contact" 7086 for a
        -- company's contact, "stock_item.stock_code" for an alias).
        CREATE TABLE map_read (
            entity TEXT NOT NULL,
            key    TEXT NOT NULL,
            type   TEXT NOT NULL,            -- the outbound record that read it
            id     TEXT NOT NULL,
            PRIMARY KEY (entity, key, type, id)
        ) WITHOUT ROWID;
        CREATE INDEX map_read_record ON map_read(type, id);
        -- Per CLI entity: the staged runs a completed map had seen, and the mapping it used.
        CREATE TABLE map_mark (
            entity     TEXT PRIMARY KEY,     -- products | contacts | orders
            staged_run INTEGER NOT NULL,
            mapping    TEXT NOT NULL,        -- sha256 of the mapping rules
            run_id     INTEGER NOT NULL
        );
        -- Shared-email decisions as the last map of each CLI entity made them.
        CREATE TABLE map_shared (
            entity     TEXT NOT NULL,
            contact_id INTEGER NOT NULL,
            decision   TEXT NOT NULL,        -- withheld | opt_out
            PRIMARY KEY (entity, contact_id)
        ) WITHOUT ROWID;
        CREATE INDEX record_alias_record ON record_alias(entity, key);
        """,
    ),
    (
        "orders a pull --since left outside its window, so later checks leave them out too",
        """
        -- A first `sync --since DATE` walks every order code but stages only orders placed from
        -- DATE: the ones before it are kept here (no body: khaosync is not responsible for
        -- them), so their credit notes and their copies in Ometria are left out of the checks,
        -- and counted, instead of flooding the register. Staging an order removes it.
        CREATE TABLE order_outside_window (
            key            TEXT PRIMARY KEY,     -- SORDER_ID
            sorder_code    TEXT NOT NULL,
            associated_ref TEXT NOT NULL,
            order_date     TEXT,                 -- UTC ISO
            run_id         INTEGER REFERENCES run(id)
        );
        CREATE INDEX order_outside_window_ref ON order_outside_window(associated_ref);
        """,
    ),
    (
        "a state file that stays small: raw kept deflated, a ledger body the outbound record holds stored once",
        """
        -- How raw is kept: NULL, exactly the bytes as sent; 'zlib', those bytes deflated (read back
        -- byte for byte by khaosync.store.staging). Existing rows are deflated here, where it saves.
        ALTER TABLE staged_record ADD COLUMN raw_encoding TEXT CHECK (raw_encoding IS NULL OR raw_encoding = 'zlib');
        UPDATE staged_record SET raw = khaosync_deflate(raw), raw_encoding = 'zlib'
            WHERE raw_encoding IS NULL AND length(khaosync_deflate(raw)) < length(raw);

        -- The ledger's body is, nearly always, byte for byte the outbound record's body: the entry
        -- keeps it only when it differs (body NULL: the same bytes as outbound_record's). Triggers
        -- on outbound_record copy a shared body into the entry before the outbound body changes or
        -- goes, so an accepted body is never lost. ``ledger`` is a view with the body filled in:
        -- every reader, and a plain INSERT/UPDATE/DELETE, sees the table it always saw.
        CREATE TABLE ledger_entry (
            type         TEXT NOT NULL,
            id           TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            body         BLOB,              -- NULL: byte for byte outbound_record's body (type, id)
            batch_id     INTEGER REFERENCES push_batch(id),
            request_id   TEXT,
            accepted_at  TEXT NOT NULL,
            verified_at  TEXT,              -- read back from Ometria and found equal
            PRIMARY KEY (type, id)
        );
        INSERT INTO ledger_entry(type, id, content_hash, body, batch_id, request_id, accepted_at, verified_at)
            SELECT l.type, l.id, l.content_hash,
                   nullif(l.body, (SELECT o.body FROM outbound_record o WHERE o.type = l.type AND o.id = l.id)),
                   l.batch_id, l.request_id, l.accepted_at, l.verified_at
            FROM ledger l;
        DROP TABLE ledger;
        CREATE INDEX ledger_request ON ledger_entry(request_id) WHERE request_id IS NOT NULL;
""" + _LEDGER_VIEW + """\
        """,
    ),
    (
        "what map read, with its entity and record type names as small codes",
        """
        -- The names map_read uses ("stock_item", "stock_item.stock_code", "order"), once each: a
        -- code in a row instead of the name, in the table and again in its index.
        CREATE TABLE map_read_name (
            code INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE
        );
        INSERT INTO map_read_name(name) SELECT entity FROM map_read UNION SELECT type FROM map_read;
        CREATE TABLE map_read_coded (
            entity INTEGER NOT NULL,         -- map_read_name.code of what was looked up
            key    TEXT NOT NULL,
            type   INTEGER NOT NULL,         -- map_read_name.code of the outbound record that read it
            id     TEXT NOT NULL,
            PRIMARY KEY (entity, key, type, id)
        ) WITHOUT ROWID;
        INSERT INTO map_read_coded(entity, key, type, id)
            SELECT e.code, r.key, t.code, r.id FROM map_read r
            JOIN map_read_name e ON e.name = r.entity JOIN map_read_name t ON t.name = r.type;
        DROP TABLE map_read;
        ALTER TABLE map_read_coded RENAME TO map_read;
        CREATE INDEX map_read_record ON map_read(type, id);
        """,
    ),
    (
        "the contacts map looks customers up in; sales orders by customer and credit notes by order",
        """
        -- Every staged company's contacts, one row per (contact, company listing it), kept in
        -- step with staging by map (store/contact_index.py): a night costs its changed companies.
        CREATE TABLE contact_index (
            contact_id      INTEGER NOT NULL,
            company_key     TEXT NOT NULL,       -- the staged company's key (lowest key wins a contact)
            company_id      INTEGER,
            company_version INTEGER NOT NULL,
            email           TEXT,
            email_key       TEXT,                -- normalised email when Ometria accepts it, else NULL
            firstname       TEXT,
            lastname        TEXT,
            inactive        INTEGER NOT NULL,
            mailing_status  INTEGER,
            email_subscribe INTEGER,
            PRIMARY KEY (contact_id, company_key)
        ) WITHOUT ROWID;
        CREATE INDEX contact_index_email ON contact_index(email_key) WHERE email_key IS NOT NULL;
        CREATE INDEX contact_index_company ON contact_index(company_key);
        -- The shared-email check's holders of an email, as it compares them (lower(trim())).
        CREATE INDEX contact_index_loose ON contact_index(lower(trim(email)));
        CREATE INDEX staged_company_login ON staged_record(lower(trim(json_extract(parsed, '$.web_user'))))
            WHERE entity = 'company' AND current = 1;
        -- A shared email's survivor is the contact whose company ordered last: its orders by company.
        CREATE INDEX staged_order_company ON staged_record(json_extract(parsed, '$.company_id'))
            WHERE entity = 'sales_order' AND current = 1;
        -- A sales order's credit notes, for the orders a night maps again.
        CREATE INDEX staged_credit_order ON staged_record(json_extract(parsed, '$.sorder_id'))
            WHERE entity = 'credit_note' AND current = 1;
        """,
    ),
    (
        "a whole diff reads two small indexes in id order, not the tables of bodies",
        """
        -- diff merges outbound_record and the ledger by (type, id), comparing content hashes: one
        -- index holds what it reads of an outbound record, and the ledger's entries are kept in
        -- their key's order (WITHOUT ROWID: the table is its own index, and the separate key
        -- index goes). The view and its triggers are made again over the rebuilt table.
        DROP VIEW ledger;
        DROP TRIGGER outbound_insert_keeps_ledger_body;
        DROP TRIGGER outbound_update_keeps_ledger_body;
        DROP TRIGGER outbound_delete_keeps_ledger_body;
        CREATE TABLE ledger_entry_keyed (
            type         TEXT NOT NULL,
            id           TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            body         BLOB,              -- NULL: byte for byte outbound_record's body (type, id)
            batch_id     INTEGER REFERENCES push_batch(id),
            request_id   TEXT,
            accepted_at  TEXT NOT NULL,
            verified_at  TEXT,              -- read back from Ometria and found equal
            PRIMARY KEY (type, id)
        ) WITHOUT ROWID;
        INSERT INTO ledger_entry_keyed(type, id, content_hash, body, batch_id, request_id, accepted_at, verified_at)
            SELECT type, id, content_hash, body, batch_id, request_id, accepted_at, verified_at FROM ledger_entry;
        DROP TABLE ledger_entry;
        ALTER TABLE ledger_entry_keyed RENAME TO ledger_entry;
        CREATE INDEX ledger_request ON ledger_entry(request_id) WHERE request_id IS NOT NULL;
""" + _LEDGER_VIEW + """\
        CREATE INDEX outbound_diff ON outbound_record(type, id, content_hash, state, hold_reason);
        """,
    ),
    (
        "outbound bodies and lineage packed (zstd with a dictionary of their shapes) behind an outbound_record view",
        """
        -- What map made, its body and lineage packed (khaosync.store.packing: zstd primed with a
        -- fixed dictionary of the records' key names); ``encoding`` NULL: kept as they are.
        -- ``outbound_record`` is a view that unpacks them: every reader sees the bytes push sends.
        CREATE TABLE outbound_entry (
            type         TEXT NOT NULL,     -- contact | order | product
            id           TEXT NOT NULL,     -- the Ometria id (never personal data)
            content_hash TEXT NOT NULL,     -- sha256 of the body (as sent, not as packed)
            body         BLOB NOT NULL,     -- packed: canonical JSON, what push sends byte for byte
            lineage      BLOB NOT NULL,     -- packed: JSON [{"entity", "key", "version"}]
            encoding     TEXT CHECK (encoding IS NULL OR encoding = 'zstd-d1'),
            state        TEXT NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'held')),
            hold_reason  TEXT,
            run_id       INTEGER NOT NULL REFERENCES run(id),
            mapped_at    TEXT NOT NULL,
            PRIMARY KEY (type, id)
        );
        INSERT INTO outbound_entry(type, id, content_hash, body, lineage, encoding, state, hold_reason, run_id,
                                   mapped_at)
            SELECT type, id, content_hash, khaosync_pack(body), khaosync_pack(lineage), 'zstd-d1', state,
                   hold_reason, run_id, mapped_at
            FROM outbound_record ORDER BY type, id;
        DROP TABLE outbound_record;     -- and the triggers that kept the ledger's bodies: again below
        CREATE VIEW outbound_record AS
            SELECT type, id, content_hash, khaosync_unpack(body, encoding) AS body,
                   khaosync_unpack_text(lineage, encoding) AS lineage, state, hold_reason, run_id, mapped_at
            FROM outbound_entry;

        -- A ledger entry with no body shares the outbound record's (schema 9): before that body
        -- changes or goes, the entry gets it, unpacked. (The ledger view reads outbound_record.)
        CREATE TRIGGER outbound_insert_keeps_ledger_body BEFORE INSERT ON outbound_entry
        WHEN EXISTS (SELECT 1 FROM ledger_entry WHERE type = new.type AND id = new.id AND body IS NULL)
        BEGIN  -- an upsert or INSERT OR REPLACE over the row the ledger shares
            UPDATE ledger_entry SET body = (SELECT khaosync_unpack(o.body, o.encoding) FROM outbound_entry o
                                            WHERE o.type = new.type AND o.id = new.id)
                WHERE type = new.type AND id = new.id AND body IS NULL
                AND EXISTS (SELECT 1 FROM outbound_entry o WHERE o.type = new.type AND o.id = new.id
                            AND (o.body IS NOT new.body OR o.encoding IS NOT new.encoding));
        END;
        CREATE TRIGGER outbound_update_keeps_ledger_body BEFORE UPDATE ON outbound_entry
        WHEN old.body IS NOT new.body OR old.encoding IS NOT new.encoding OR old.type IS NOT new.type
             OR old.id IS NOT new.id
        BEGIN
            UPDATE ledger_entry SET body = khaosync_unpack(old.body, old.encoding)
                WHERE type = old.type AND id = old.id AND body IS NULL;
        END;
        CREATE TRIGGER outbound_delete_keeps_ledger_body BEFORE DELETE ON outbound_entry
        BEGIN
            UPDATE ledger_entry SET body = khaosync_unpack(old.body, old.encoding)
                WHERE type = old.type AND id = old.id AND body IS NULL;
        END;

        -- Plain INSERT/UPDATE/DELETE on the view (a script, a sqlite3 shell with the functions)
        -- pack as khaosync does.
        CREATE TRIGGER outbound_record_insert INSTEAD OF INSERT ON outbound_record
        BEGIN
            INSERT INTO outbound_entry(type, id, content_hash, body, lineage, encoding, state, hold_reason, run_id,
                                       mapped_at)
                VALUES (new.type, new.id, new.content_hash, khaosync_pack(new.body), khaosync_pack(new.lineage),
                        'zstd-d1', coalesce(new.state, 'ready'), new.hold_reason, new.run_id, new.mapped_at);
        END;
        CREATE TRIGGER outbound_record_update INSTEAD OF UPDATE ON outbound_record
        BEGIN
            UPDATE outbound_entry SET type = new.type, id = new.id, content_hash = new.content_hash,
                body = CASE WHEN new.body IS old.body AND new.lineage IS old.lineage THEN body
                            ELSE khaosync_pack(new.body) END,
                lineage = CASE WHEN new.body IS old.body AND new.lineage IS old.lineage THEN lineage
                               ELSE khaosync_pack(new.lineage) END,
                encoding = CASE WHEN new.body IS old.body AND new.lineage IS old.lineage THEN encoding
                                ELSE 'zstd-d1' END,
                state = new.state, hold_reason = new.hold_reason, run_id = new.run_id, mapped_at = new.mapped_at
                WHERE type = old.type AND id = old.id;
        END;
        CREATE TRIGGER outbound_record_delete INSTEAD OF DELETE ON outbound_record
        BEGIN
            DELETE FROM outbound_entry WHERE type = old.type AND id = old.id;
        END;
        -- What a whole diff reads of an outbound record (schema 11's index, on the table it moved to).
        CREATE INDEX outbound_diff ON outbound_entry(type, id, content_hash, state, hold_reason);
        """,
    ),
    (
        "staged parsed JSON kept without its null members",
        """
        -- json_extract of an absent member is NULL as of a null one, and every nullable field of
        -- the ERP models defaults to null: the same record in fewer bytes (khaosync.store.staging).
        -- content_hash stays the hash of the whole canonical text.
        UPDATE staged_record SET parsed = khaosync_strip_nulls(parsed) WHERE instr(parsed, 'null') > 0;
        """,
    ),
]

SCHEMA_VERSION = len(MIGRATIONS)
