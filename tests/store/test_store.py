import sqlite3
import subprocess
import sys
import textwrap

import pytest

from khaosync.errors import ConfigError, StateLockedError
from khaosync.store import open_store
from khaosync.store.schema import SCHEMA_VERSION


def test_new_store_is_migrated_and_in_wal(tmp_path):
    with open_store(tmp_path / "s" / "state.db") as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"run", "staged_record", "record_alias", "bookmark", "exception"} <= tables


def test_reopening_does_not_migrate_again(tmp_path):
    path = tmp_path / "state.db"
    with open_store(path) as store:
        run = store.start_run("pull", "sandbox")
    with open_store(path) as store:
        assert store.conn.execute("SELECT count(*) FROM run").fetchone()[0] == 1
        assert store.conn.execute("SELECT id FROM run").fetchone()[0] == run


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer than this khaosync"):
        open_store(path)


def test_failed_migration_leaves_the_old_version(tmp_path, monkeypatch):
    from khaosync.store import schema

    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS + [("broken", "CREATE TABLE x (a);\nNOT VALID SQL;")])
    monkeypatch.setattr("khaosync.store.db.MIGRATIONS", schema.MIGRATIONS)
    monkeypatch.setattr("khaosync.store.db.SCHEMA_VERSION", len(schema.MIGRATIONS))
    with pytest.raises(sqlite3.Error):
        open_store(tmp_path / "state.db")
    conn = sqlite3.connect(tmp_path / "state.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'x'").fetchone()[0] == 0


def test_second_writer_is_told_who_holds_the_lock(tmp_path):
    path = tmp_path / "state.db"
    with open_store(path, command="pull --full"):
        with pytest.raises(StateLockedError) as info:
            open_store(path, command="push")
    assert "pull --full" in str(info.value) and "pid=" in str(info.value)
    with open_store(path):  # released on close
        pass


def test_lock_held_by_another_process(tmp_path):
    path = tmp_path / "state.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from khaosync.store import open_store
            s = open_store({str(path)!r}, command="sync --commit")
            print("locked", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StateLockedError, match="sync --commit"):
            open_store(path)
    finally:
        holder.kill()
        holder.wait()
    with open_store(path):  # a dead holder leaves no stale lock
        pass


def test_reader_does_not_need_the_lock_but_needs_a_store(tmp_path):
    path = tmp_path / "state.db"
    with pytest.raises(ConfigError, match="no state"):
        open_store(path, write=False)
    with open_store(path):
        with open_store(path, write=False) as reader:
            assert reader.schema_version == SCHEMA_VERSION


def test_exception_is_one_row_per_finding_and_resolves_when_unseen(tmp_path):
    with open_store(tmp_path / "state.db") as store:
        r1 = store.start_run("pull", "sandbox")
        a = store.record_exception(run_id=r1, type="malformed_record", severity="warn", owner="ecommerce",
                                   stage="pull", reason="bad email", records=["company:12"], entity="company")
        b = store.record_exception(run_id=r1, type="malformed_record", severity="warn", owner="ecommerce",
                                   stage="pull", reason="bad email", records=["company:13"], entity="company")
        r2 = store.start_run("pull", "sandbox")
        again = store.record_exception(run_id=r2, type="malformed_record", severity="warn", owner="ecommerce",
                                       stage="pull", reason="bad email (still)", records=["company:12"], entity="company")
        assert again == a and b != a
        assert store.resolve_unseen_exceptions(r2, "pull", ["malformed_record"], entity="company") == 1
        rows = {r.id: r for r in store.exceptions()}
        assert rows[a].status == "open" and rows[a].reason == "bad email (still)"
        assert rows[b].status == "resolved"
        assert [r.id for r in store.exceptions(open_only=True)] == [a]


def test_transaction_rolls_back_on_error(tmp_path):
    with open_store(tmp_path / "state.db") as store:
        with pytest.raises(RuntimeError):
            with store.transaction() as c:
                c.execute("INSERT INTO run(command, profile, started_at) VALUES ('x', 'y', 'z')")
                raise RuntimeError("boom")
        assert store.conn.execute("SELECT count(*) FROM run").fetchone()[0] == 0


def test_upgrade_from_an_older_schema_keeps_data(tmp_path, monkeypatch):
    from khaosync.store import schema

    path = tmp_path / "state.db"
    monkeypatch.setattr("khaosync.store.db.MIGRATIONS", schema.MIGRATIONS[:1])
    monkeypatch.setattr("khaosync.store.db.SCHEMA_VERSION", 1)
    with open_store(path) as store:
        run = store.start_run("pull", "sandbox")
        assert store.schema_version == 1
    monkeypatch.undo()
    with open_store(path) as store:
        assert store.schema_version == SCHEMA_VERSION > 1
        assert store.conn.execute("SELECT id FROM run").fetchone()[0] == run
        assert store.conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == 0
