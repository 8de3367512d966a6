"""``khaosync push`` and ``khaosync sync``."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from khaosync.cli.context import app_context
from khaosync.errors import EXIT_FINDINGS, KhaosyncError

VERIFY_MODES = ("sample", "all", "none")


def push_table(result) -> Table:  # result: khaosync.stages.push.PushResult
    """The plan by type and change, and (with --commit) what this run sent and Ometria made of it."""
    title = f"plan {result.plan_id} ({result.plan_status})" + ("" if result.committed else ": dry run, nothing sent")
    table = Table(title=title, title_justify="left")
    columns = ["type", "new", "changed", "void", "to send"]
    if result.committed:
        columns += ["sent", "accepted", "rejected", "failed later", "verified", "mismatched"]
    for col in columns:
        table.add_column(col, justify="left" if col == "type" else "right")
    data = result.as_dict()
    for type_ in data["sent"]:
        changes = result.summary.get(type_, {})
        row = [type_, *(str(changes.get(c, 0)) for c in ("new", "changed", "void")), str(data["pending"][type_])]
        if result.committed:
            row += [str(data[k][type_]) for k in ("sent", "accepted", "rejected", "failed_later", "verified",
                                                   "mismatched")]
        table.add_row(*row)
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


def register(app: typer.Typer) -> None:
    @app.command()
    def push(
        ctx: typer.Context,
        plan: Optional[str] = typer.Option(None, "--plan", help="The plan to push (default: the newest open plan)."),
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

        Example: khaosync push --plan 12 --commit
        """
        from khaosync.connect import Connections
        from khaosync.stages.push import push_plan

        c = app_context(ctx)
        if verify not in VERIFY_MODES:
            raise typer.BadParameter(f"--verify {verify!r}: choose sample, all or none")
        with c.open_store("push", write=commit) as store:
            client = Connections(c.profile).ometria_client() if commit else None
            try:
                with c.terminal.progress("pushing") as progress:
                    result = push_plan(store, c.profile, client, plan, commit=commit, verify=verify,  # type: ignore[arg-type]
                                       progress=progress, owners=_owners(c))
            finally:
                if client is not None:
                    client.close()
        if as_json:
            c.terminal.json(result.as_dict())
        else:
            c.terminal.data(push_table(result))
            if not commit:
                c.terminal.info(f"nothing was sent; to send it: khaosync push --plan {result.plan_id} --commit")
        if result.fail_findings:
            raise typer.Exit(EXIT_FINDINGS)

    @app.command()
    def sync(
        ctx: typer.Context,
        since: Optional[str] = typer.Option(None, help="Pull orders and credit notes changed from this date (YYYY-MM-DD or ISO, UTC); customers and stock follow their bookmarks. Default: the bookmarks."),
        commit: bool = typer.Option(False, "--commit", help="Push for real. Without it: the same path, nothing sent."),
        entity: Optional[list[str]] = typer.Option(None, "--entity", help="products, contacts or orders (repeatable; default all)."),
        verify: str = typer.Option("sample", help="After pushing, read back: sample, all or none."),
        as_json: bool = typer.Option(False, "--json", help="The summary as JSON on stdout."),
    ) -> None:
        """Chain pull, map, diff and push, then the consent flow, for scheduled runs, with one summary.

        --since narrows the orders and credit notes read; the customers and stock they refer to
        always follow their own bookmarks (everything, on a first run), so no order is held back
        for want of its product. Without --commit it is a dry run of the same path: pull and map
        store what they read, diff writes the plan, push only checks and summarises it. Last,
        Ometria's opt-outs are read and planned for KC (consent diff), and written to KC with
        --commit (consent push).

        Example: khaosync sync --since 2026-10-01 --commit
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
        start = _parse_since(since) if since else None
        source = _pull_source(c, "soap", None)
        client = Connections(c.profile).ometria_client() if commit else None
        # The consent flow reads Ometria even on a dry run; it writes to KC only with --commit.
        reader = client or Connections(c.profile).ometria_client()
        with c.open_store("sync --commit" if commit else "sync") as store:
            with c.terminal.progress("sync") as progress:
                result = run_sync(store, c.profile, source, client, since=start, entities=entity or None,
                                  commit=commit, verify=verify, progress=progress, consent_reader=reader,
                                  consent_kc=source.client if commit else None)
        if as_json:
            c.terminal.json(result.as_dict())
        else:
            c.terminal.data(sync_table(result))
            if result.consent is not None:
                consent = result.consent
                c.terminal.info(f"consent: {consent.read.new_unsubscribes} new Ometria unsubscribes, "
                                f"{consent.diff.planned} opt-outs for KC, {consent.diff.conflicts} conflicts"
                                + (f", {consent.push.done} written to KC" if commit else ""))
            if not commit:
                c.terminal.info(f"dry run: nothing was sent; to send plan {result.plan_id}: "
                                f"khaosync push --plan {result.plan_id} --commit (or sync --commit)")
        if result.fail_findings:
            raise typer.Exit(EXIT_FINDINGS)
