"""Hostile input at the CLI boundary (issue 14.1, issue 11.7 and 11.8): every command, given
broken paths, files, ports and values, ends with one error line and an exit code that keeps
its meaning (2 usage/input, 3 external; 1 is findings only). Never a traceback, never a hang.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import threading

import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli_workspace import plant  # noqa: E402

from khaosync.cli.app import app
from khaosync.cli.reference import is_group, walk

# Arguments a command needs before it gets to what is hostile; a command missing here (a new
# one) still runs and must still end cleanly.
NEEDS = {
    ("diff",): ["orders"],
    ("report",): ["--month", "2026-10", "--html", "out.html"],
    ("reconcile",): ["--month", "2026-10"],
    ("exceptions", "show"): ["1"],
    ("sandbox", "advance"): ["--days", "1"],
    ("sandbox", "serve"): ["--ometria-key", "k", "--port", "PORT_IN_USE"],
    ("init",): ["--path", "adir"],  # a folder: refused (and no live khaosync.yaml for the next commands)
}
# doctor diagnoses: a broken config is its finding (exit 1, the check says why), not its error.
DIAGNOSES = {("doctor",)}
# Commands that open the state store: with a broken one each must say so and exit 2.
STATE_READERS = {("pull",), ("map",), ("diff",), ("push",), ("sync",), ("reconcile",), ("reconcile", "contacts"),
                 ("health",), ("report",), ("exceptions", "list"), ("exceptions", "show")}

RANDOM_BYTES = bytes(range(256)) * 20
BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
        "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A small sandbox merchant after one dry-run sync: a real state store to break things around."""
    return plant(tmp_path_factory.mktemp("planted"), ["sync"])


@pytest.fixture
def workspace(planted, tmp_path, monkeypatch):
    target = tmp_path / "ws"
    shutil.copytree(planted, target)
    monkeypatch.chdir(target)
    monkeypatch.delenv("OMETRIA_API_KEY", raising=False)
    (target / "adir").mkdir()
    (target / "afile").write_text("not a folder\n")
    (target / "random.db").write_bytes(RANDOM_BYTES)
    (target / "latin1.yaml").write_bytes("mode: sandbox\nname: caf\xe9\n".encode("latin-1"))
    (target / "bomb.yaml").write_text(BOMB + "mode: *h\n")
    return target


@pytest.fixture
def port_in_use():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def leaf_commands() -> list[tuple[str, ...]]:
    root = typer.main.get_command(app)
    found = []
    for path, command in walk(root):
        if not path:
            continue
        if not is_group(command) or path == ("reconcile",):  # reconcile is a group that runs alone too
            found.append(path)
    return found


def assert_clean(result, args, codes=(2,)) -> None:
    """No traceback, a known exit code and, when it failed, an error line saying why."""
    where = " ".join(args)
    assert result.exception is None or isinstance(result.exception, SystemExit), (where, result.exception)
    assert "Traceback" not in result.stdout + result.stderr, where
    assert result.exit_code in codes, (where, result.exit_code, result.stderr[-500:])
    if result.exit_code >= 2:
        assert "error:" in result.stderr.lower(), (where, result.stderr)


def run(args):
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("hostile", [["--state", "random.db"], ["--state", "adir"], ["--config", "latin1.yaml"],
                                     ["--config", "bomb.yaml"], ["--config", "no[/]such[bold].yaml"]],
                         ids=["state-random-bytes", "state-is-a-folder", "config-not-utf8", "config-alias-bomb",
                              "config-markup-path"])
def test_every_command_survives_a_broken_state_or_config(workspace, port_in_use, hostile):
    commands = leaf_commands()
    assert len(commands) >= 15  # the walk found the app's commands
    for path in commands:
        needs = [str(port_in_use) if a == "PORT_IN_USE" else a for a in NEEDS.get(path, [])]
        args = [*hostile, *path, *needs]
        result = run(args)
        if path in DIAGNOSES:
            assert_clean(result, args, codes=(0, 1))
        elif hostile[0] == "--config" or path in STATE_READERS:
            assert_clean(result, args, codes=(2,))
        else:
            assert_clean(result, args, codes=(0, 1, 2))  # the broken thing is not theirs to read
    # Nothing was created in place of the broken state.
    assert (workspace / "random.db").read_bytes() == RANDOM_BYTES
    assert not any((workspace / "adir").iterdir())


@pytest.mark.parametrize("args, says", [
    (["khaos", "discover", "--wsdl", "missing.wsdl"], "missing.wsdl: No such file or directory"),
    (["khaos", "discover", "--wsdl", "adir"], "adir: Is a directory"),
    (["--state", "random.db", "health"], "state random.db is not a khaosync state store"),
    (["--state", "random.db", "exceptions", "list"], "state random.db is not a khaosync state store"),
    (["--state", "random.db", "reconcile", "--month", "2026-10"], "state random.db is not a khaosync state store"),
    (["--state", "adir", "health"], "state adir cannot be opened"),
    (["report", "--month", "2026-10", "--html", "adir"], "adir is a folder"),
    (["report", "--month", "2026-10", "--html", "afile/audit.html"], "afile"),
    (["reconcile", "--month", "2026-10", "--csv", "afile"], "afile: File exists"),
    (["reconcile", "--month", "2026-10", "--csv", "afile/month-end"], "afile/month-end: Not a directory"),
    (["exceptions", "list", "--csv", "adir"], "adir: Is a directory"),
    (["diff", "orders", "--csv", "adir"], "adir: Is a directory"),
    (["sandbox", "serve", "--ometria-key", "k", "--port", "99999"], "65535"),
    (["reconcile", "--month", "0000-01"], "the year must be 1900 to 2999"),
    (["reconcile", "--month", "9999-12"], "the year must be 1900 to 2999"),
    (["report", "--month", "9999-12", "--html", "x.html"], "the year must be 1900 to 2999"),
    (["pull", "--since", "0001-01-01"], "the year must be 1900 to 2999"),
    (["sync", "--since", "0001-01-01"], "the year must be 1900 to 2999"),
    (["exceptions", "show", "99999999999999999999"], "no exception 99999999999999999999"),
    (["--config", "latin1.yaml", "config", "show"], "latin1.yaml: not valid UTF-8 (byte 0xe9 at offset 23, line 2)"),
    (["mappings", "check", "latin1.yaml"], "latin1.yaml: not valid UTF-8"),
    (["--config", "bomb.yaml", "config", "show"], "aliases (*a) are not allowed"),
    (["mappings", "check", "bomb.yaml"], "aliases (*a) are not allowed"),
    (["--config", "odd[/]name[bold].yaml", "config", "show"], "config file odd[/]name[bold].yaml not found"),
    (["--state", "odd[/]x[red].db", "exceptions", "list"], "no state at odd[/]x[red].db"),
])
def test_each_reported_case_is_one_error_line_and_exit_2(workspace, args, says):
    result = run(args)
    assert_clean(result, args, codes=(2,))
    assert says in result.stderr, result.stderr


def test_a_port_in_use_is_a_usage_error(workspace, port_in_use):
    args = ["sandbox", "serve", "--ometria-key", "k", "--port", str(port_in_use)]
    result = run(args)
    assert_clean(result, args)
    assert f"--host 127.0.0.1 --port {port_in_use}: cannot listen there (Address already in use)" in result.stderr


def test_an_ipv6_loopback_host_is_served(workspace):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    sock = socket.socket(socket.AF_INET6)
    try:
        sock.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    sock.listen()
    try:
        # The port is taken, so serve ends at once: it got as far as binding an IPv6 socket.
        args = ["sandbox", "serve", "--host", "::1", "--ometria-key", "k", "--port", str(sock.getsockname()[1])]
        result = run(args)
    finally:
        sock.close()
    assert_clean(result, args)
    assert "--host ::1" in result.stderr and "cannot listen there" in result.stderr
    from khaosync.sandbox.server import SandboxApp, ServedSandbox

    with ServedSandbox(SandboxApp(workspace / ".khaosync" / "sandbox", "k"), host="::1") as served:
        assert served.server.server_address[0] == "::1"


def test_a_state_held_by_another_programs_exclusive_transaction(workspace):
    """Writers say so at once (no 30 s wait, then a traceback); readers still read (WAL)."""
    holder = sqlite3.connect(workspace / ".khaosync" / "state.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("DELETE FROM bookmark")
    try:
        result = run(["pull"])
        assert_clean(result, ["pull"])
        assert "is busy: another program holds a transaction on it" in result.stderr
        reader = run(["exceptions", "list", "--json"])
        assert_clean(reader, ["exceptions", "list"], codes=(0, 1))
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_a_read_only_state_is_refused_for_writing(workspace):
    state = workspace / ".khaosync" / "state.db"
    state.chmod(0o444)
    try:
        result = run(["pull"])
        assert_clean(result, ["pull"])
        assert "read-only" in result.stderr
    finally:
        state.chmod(0o644)


def test_an_unexpected_error_is_one_line_and_the_traceback_is_for_vvv(workspace, monkeypatch):
    import khaosync.stages.health as health

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(health, "check_health", broken)
    result = run(["health", "--no-detect"])
    assert_clean(result, ["health"])
    assert "error: unexpected KeyError: 'a bug' (a khaosync bug: run again with -vvv" in result.stderr
    loud = run(["-vvv", "health", "--no-detect"])
    assert loud.exit_code == 2 and "Traceback" in loud.stderr


def test_rich_markup_in_values_is_printed_as_text(workspace):
    (workspace / "markup.yaml").write_text("version: 1\nproducts:\n  currency: '[/][bold]X'\n")
    result = run(["mappings", "check", "markup.yaml"])
    assert_clean(result, ["mappings", "check"])
    assert "[/][bold]X" in result.stderr


def test_help_states_the_sandbox_minimums():
    from khaosync.cli import sandbox_cmd
    from khaosync.sandbox import generator

    assert (sandbox_cmd.MIN_CUSTOMERS, sandbox_cmd.MIN_ORDERS) == (generator.MIN_CUSTOMERS, generator.MIN_ORDERS)
    result = run(["sandbox", "init", "--help"])
    assert f"at least {generator.MIN_CUSTOMERS}" in result.stdout and f"at least {generator.MIN_ORDERS}" in result.stdout


EVIL = '=HYPERLINK("http://evil.example/","x")@evil.example'


def test_no_csv_cell_starts_a_formula(workspace):
    """Issue 11.10: an ERP email that is a formula stays text in every CSV khaosync writes."""
    import csv

    state = workspace / ".khaosync" / "state.db"
    with sqlite3.connect(state) as conn:
        key, parsed = conn.execute("SELECT key, parsed FROM staged_record WHERE entity = 'company' AND current = 1 "
                                   "ORDER BY key LIMIT 1").fetchone()
        company = json.loads(parsed)
        company["contacts"][0]["email"] = EVIL
        conn.execute("UPDATE staged_record SET parsed = ? WHERE entity = 'company' AND key = ? AND current = 1",
                     (json.dumps(company), key))
        conn.execute("INSERT INTO exception(type, severity, owner, stage, fingerprint, reason, records, first_seen, "
                     "last_seen, first_run, last_run) VALUES ('malformed_record', 'warn', 'crm', 'pull', 'x', ?, ?, "
                     "'2026-11-01', '2026-11-01', 1, 1)", ("+cmd|' /C calc'!A0", '["@SUM(1+1)"]'))
    result = run(["reconcile", "contacts", "--csv", "out"])
    assert_clean(result, ["reconcile", "contacts"], codes=(0, 1))
    rows = list(csv.reader((workspace / "out" / "contacts-records.csv").open(encoding="utf-8")))
    assert ["'" + EVIL] in [[cell] for row in rows for cell in row if EVIL in cell]
    listed = run(["exceptions", "list", "--csv", "-"])
    cells = [cell for row in csv.reader(listed.stdout.splitlines()) for cell in row]
    assert "'+cmd|' /C calc'!A0" in cells and "'@SUM(1+1)" in cells
    for flat in ([cell for row in rows for cell in row], cells):
        assert not [c for c in flat if c[:1] in ("=", "+", "@") or (c[:1] == "-" and not c[1:2].isdigit())]
    # diff --csv: map holds that email (not an address), so its writer is given a change directly.
    import io
    from types import SimpleNamespace

    from khaosync.cli.diff_cmd import write_csv

    change = SimpleNamespace(before="a@example.org", after=EVIL)
    out = io.StringIO()
    write_csv(SimpleNamespace(records=[SimpleNamespace(type="contact", key="7001", change="changed",
                                                       fields={"email": change}, reason="-1 day")]), out)
    assert list(csv.reader(out.getvalue().splitlines()))[1] == [
        "contact", "7001", "changed", "email", "a@example.org", "'" + EVIL, "'-1 day"]


def test_safe_cell_keeps_numbers_and_neutralises_formulas():
    from khaosync.report.csv import safe_cell

    assert [safe_cell(v) for v in ("-12.50", "+3", "1e5", "-", "=1+1", "@x", "\tx", "\rx", "-x", "a=b", None, 4)] == [
        "-12.50", "+3", "1e5", "'-", "'=1+1", "'@x", "'\tx", "'\rx", "'-x", "a=b", None, 4]


# Arguments for a --json run that succeeds (or finds something) on the planted workspace.
JSON_NEEDS = {
    ("diff",): ["orders"], ("reconcile",): ["--month", "2026-10"], ("exceptions", "show"): ["1"],
    ("runs", "show"): ["1"], ("sandbox", "advance"): ["--days", "1"], ("plans", "show"): ["PLAN"],
    ("mappings", "check"): [], ("sandbox", "init"): ["--customers", "25", "--orders", "100", "--force"],
    ("push",): ["--plan", "PLAN"],
}


def test_every_json_output_says_whether_it_is_the_sandbox(workspace):
    """Issue 14.10: a machine reader always knows which world the figures are from."""
    root = typer.main.get_command(app)
    plan = json.loads(run(["plans", "list", "--json"]).stdout)["plans"][-1]["id"]
    checked = []
    for path in leaf_commands():
        command = dict(walk(root))[path]
        if not any("--json" in p.opts for p in command.params):
            continue
        args = [*path, *(plan if a == "PLAN" else a for a in JSON_NEEDS.get(path, [])), "--json"]
        result = run(args)
        assert_clean(result, args, codes=(0, 1))
        data = json.loads(result.stdout)
        # config show prints the profile itself, whose `sandbox` is its sandbox section.
        flag = "sandbox_profile" if path == ("config", "show") else "sandbox"
        assert isinstance(data, dict) and data.get(flag) is True, (args, str(data)[:200])
        checked.append(path)
    assert ("exceptions", "list") in checked and ("doctor",) in checked and len(checked) >= 18
