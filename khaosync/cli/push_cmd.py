"""``khaosync push`` and ``khaosync sync``."""

from __future__ import annotations

from typing import Optional

import typer
from rich import box
from rich.table import Table

from khaosync.cli.context import app_context
from khaosync.errors import EXIT_FINDINGS, ConfigError, KhaosyncError

VERIFY_MODES = ("sample", "all", "none")
FAIL_ON = ("new", "any", "never")


def _fail_counts(store, run_id: int) -> tuple[int, int]:
    """(fail-severity exceptions this run opened, fail-severity exceptions open now). A run's push
    is a later run of its own, so "this run" is every run from ``run_id`` on."""
    new = store.conn.execute("SELECT count(*) FROM exception WHERE severity = 'fail' AND resolved_at IS NULL "
                             "AND first_run >= ?", (run_id,)).fetchone()[0]
    open_ = store.conn.execute("SELECT count(*) FROM exception WHERE severity = 'fail' AND resolved_at IS NULL"
                               ).fetchone()[0]
    return new, open_


PUSH_ROWS = (("new", "new"), ("changed", "changed"), ("void", "void"), ("to send", "pending"))
COMMIT_ROWS = (("sent", "sent"), ("accepted", "accepted"), ("rejected", "rejected"),
               ("failed later", "failed_later"), ("verified", "verified"), ("mismatched", "mismatched"))


def push_table(result) -> Table:  # result: khaosync.stages.push.PushResult
    """The plan by change, and (with --commit) what this run sent and Ometria made of it: one row
    per measure, one column per record type, so it fits 80 columns however many measures."""
    title = f"plan {result.plan_id} ({result.plan_status})" + ("" if result.committed else ": dry run, nothing sent")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  header_style="bold")
    data = result.as_dict()
    types = list(data["sent"])
    table.add_column("", no_wrap=True)
    for type_ in types:
        table.add_column(type_, justify="right", no_wrap=True)
    for label, key in PUSH_ROWS + (COMMIT_ROWS if result.committed else ()):
        if key in ("new", "changed", "void"):
            values = [result.summary.get(t, {}).get(key, 0) for t in types]
        else:
            values = [data[key][t] for t in types]
        table.add_row(label, *(str(v) for v in values))
    return table


def _owners(c) -> dict[str, str]:  # c: AppContext
    """The mapping file's exception owners; a push needs no mapping otherwise, so one that does
    not load costs only a warning (``khaosync mappings check`` says what is wrong with it)."""
    try:
        from khaosync.mapping.schema import load_mapping

        return dict(load_mapping(c.profile.mappings).owners)
    except (ImportError, FileNotFoundError):
        return {}
    except KhaosyncError as exc:
        c.terminal.warn(f"exception owners: the mapping did not load ({exc}); default owners used")
        return {}


def describe_plan(plan) -> str:  # plan: khaosync.store.plans.Plan
    """Which plan, made when, by which diff, how many records: said before anything is sent."""
    made = plan.created_at[:16].replace("T", " ")
    by = f" by `{plan.made_by}`" if plan.made_by else ""
    partial = f", partial: {len(plan.narrowed_to or [])} key(s)" if plan.partial else ""
    return f"plan {plan.id}: made {made} UTC{by}, {plan.records} record(s) to push{partial}"


def _chosen_plan(c, store, plan_id: str | None):
    """The plan push will send, said on stderr; a newer narrowed plan is pointed out, never taken."""
    from khaosync.store import plans

    chosen_id = plan_id or plans.default_plan_id(store.conn)
    chosen = plans.get_plan(store.conn, chosen_id) if chosen_id else None
    if chosen is None:
        return None  # push_plan says why
    if plan_id is None:
        wider = plans.wider_open_reviews(store.conn, chosen)
        if wider:
            review = wider[-1]
            raise ConfigError(
                f"the newest plan {chosen.id} (`{chosen.made_by or 'diff'}`: {', '.join(chosen.scope)}) is narrower "
                f"than the open review {review.id} (`{review.made_by or 'diff'}`: {', '.join(review.scope)}); "
                f"name the one to push: --plan {chosen.id} or --plan {review.id}")
    c.terminal.info(describe_plan(chosen))
    if plan_id is None:
        for narrowed in plans.newer_narrowed(store.conn, chosen):
            c.terminal.warn(f"newer partial plan {narrowed.id} (`{narrowed.made_by}`) is not sent without "
                            f"--plan {narrowed.id}")
    return chosen


def register(app: typer.Typer) -> None:
    @app.command()
    def push(
        ctx: typer.Context,
        plan: Optional[str] = typer.Option(None, "--plan", metavar="ID",
                                           help="The plan to push, e.g. p7-20261127-0231 (khaosync plans list). "
                                           "Default: the newest open full review; a partial plan (diff --key) is "
                                           "sent only when named."),
        commit: bool = typer.Option(False, "--commit", help="Really send it. Without this, only show what would be sent."),
        verify: str = typer.Option("sample", "--verify",
                                   help="After the push, read back: sample (20 per type), all, or none."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout (docs/push.md)."),
    ) -> None:
        """Send a reviewed plan to Ometria (only with --commit).

        Without --commit it prints the plan's summary and sends nothing. With it, each batch is
        journaled before it is sent and the ledger keeps what Ometria accepted; a run that was
        killed is completed by the next one. A plan whose records changed since it was made is
        refused: run diff again. Exit 1 when the push raised fail-severity exceptions (records
        refused or read back different), 3 when Ometria failed after retries.

        Example: khaosync push --plan p7-20261127-0231 --commit
        """
        from khaosync.connect import Connections
        from khaosync.stages.push import push_plan

        c = app_context(ctx)
        if verify not in VERIFY_MODES:
            raise typer.BadParameter(f"--verify {verify!r}: choose sample, all or none")
        with c.open_store("push", write=commit) as store:
            chosen = _chosen_plan(c, store, plan)
            client = Connections(c.profile).ometria_client() if commit else None
            try:
                with c.terminal.progress("push") as progress:
                    result = push_plan(store, c.profile, client, plan, commit=commit, verify=verify,  # type: ignore[arg-type]
                                       progress=progress, owners=_owners(c))
            finally:
                if client is not None:
                    client.close()
        if as_json:
            c.terminal.json({"sandbox": c.profile.is_sandbox, **result.as_dict(),
                             "plan_detail": chosen.as_dict() if chosen else None})
        else:
            c.terminal.data(push_table(result))
            if not commit:
                c.terminal.info(f"nothing was sent; to send it: khaosync push --plan {result.plan_id} --commit")
        if result.fail_findings:
            if not as_json:
                c.terminal.verdict(f"push {result.plan_id}: {result.fail_findings} finding(s) at fail severity: "
                                   "khaosync exceptions list --open", failed=True)
            raise typer.Exit(EXIT_FINDINGS)

    @app.command()
    def sync(
        ctx: typer.Context,
        since: Optional[str] = typer.Option(None, help="Narrows what is read from Khaos Control: orders and credit "
                                            "notes changed from this date (YYYY-MM-DD or ISO, UTC). Customers and "
                                            "stock follow their own bookmarks; diff and push still cover every "
                                            "mapped record. Default: the bookmarks."),
        commit: bool = typer.Option(False, "--commit", help="Push for real. Without it: the same path, nothing sent."),
        entity: Optional[list[str]] = typer.Option(None, "--entity", help="products, contacts or orders (repeatable; default all)."),
        verify: str = typer.Option("sample", help="After pushing, read back: sample, all or none."),
        as_json: bool = typer.Option(False, "--json", help="The summary as JSON on stdout."),
        fail_on: str = typer.Option("new", "--fail-on", metavar="new|any|never",
                                    help="Exit 1 when this run found new fail-severity exceptions (new, the "
                                    "default), while any is open (any), or never (never)."),
    ) -> None:
        """Chain pull, map, diff and push, then the consent flow, for scheduled runs, with one summary.

        --since narrows the orders and credit notes read; the customers and stock they refer to
        always follow their own bookmarks (everything, on a first run), so no order is held back
        for want of its product. Without --commit it is a dry run of the same path: pull and map
        store what they read, diff writes the plan, push only checks and summarises it. Last,
        Ometria's opt-outs are read and planned for KC (consent diff), and written to KC with
        --commit (consent push).

        --fail-on new (the default) keeps cron quiet about an exception it already reported:
        exit 1 means this run found something new at fail severity.

        Example: khaosync -q sync --since 2026-10-01 --commit
        """
        from khaosync.cli.commands import _parse_since, _pull_source
        from khaosync.cli.render import sync_table
        from khaosync.connect import Connections
        from khaosync.stages.sync import ORDER
        from khaosync.stages.sync import sync as run_sync

        c = app_context(ctx)
        for name in entity or []:
            if name not in ORDER:
                raise typer.BadParameter(f"--entity {name!r}: choose from {', '.join(ORDER)}")
        if verify not in ("sample", "all", "none"):
            raise typer.BadParameter(f"--verify {verify!r}: choose sample, all or none")
        if fail_on not in FAIL_ON:
            raise typer.BadParameter(f"--fail-on {fail_on!r}: choose new, any or never")
        start = _parse_since(since) if since else None
        source = _pull_source(c, "soap", None)
        client = Connections(c.profile).ometria_client() if commit else None
        # The consent flow reads Ometria even on a dry run; it writes to KC only with --commit.
        reader = client or Connections(c.profile).ometria_client()
        with c.open_store("sync --commit" if commit else "sync") as store:
            with c.terminal.progress("") as progress:
                result = run_sync(store, c.profile, source, client, since=start, entities=entity or None,
                                  commit=commit, verify=verify, progress=progress, consent_reader=reader,
                                  consent_kc=source.client if commit else None)
            new_fail, open_fail = _fail_counts(store, result.run_id)
        if as_json:
            c.terminal.json({**result.as_dict(), "new_fail_exceptions": new_fail, "open_fail_exceptions": open_fail,
                             "fail_on": fail_on})
        else:
            c.terminal.data(sync_table(result))
            if result.consent is not None:
                consent = result.consent
                c.terminal.info(f"consent: {consent.read.new_unsubscribes} new Ometria unsubscribes, "
                                f"{consent.diff.planned} opt-outs for KC, {consent.diff.conflicts} conflicts"
                                + (f", {consent.push.done} written to KC" if commit else ""))
            outside = result.left_outside_window()
            if outside:
                parts = [f"{outside['orders']} orders placed before it not pulled" if outside["orders"] else "",
                         f"{outside['credit_notes']} credit notes of such orders not checked"
                         if outside["credit_notes"] else ""]
                c.terminal.info("left out by the --since window: " + ", ".join(p for p in parts if p))
            if not commit:
                c.terminal.info(f"dry run: nothing was sent; to send plan {result.plan_id}: "
                                f"khaosync push --plan {result.plan_id} --commit (or sync --commit)")
        failed = (fail_on == "new" and new_fail > 0) or (fail_on == "any" and open_fail > 0)
        if not as_json:
            c.terminal.verdict(f"sync run {result.run_id}: {'FAIL' if failed else 'OK'} ({new_fail} new "
                               f"exception(s) at fail severity, {open_fail} open; --fail-on {fail_on})", failed)
        if failed:
            raise typer.Exit(EXIT_FINDINGS)
