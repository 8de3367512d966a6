"""``khaosync consent diff|push``: Ometria's opt-outs written back to Khaos Control."""

from __future__ import annotations

import typer
from rich.table import Table

from khaosync.cli.context import app_context
from khaosync.errors import EXIT_FINDINGS

consent_app = typer.Typer(help="Consent back-flow: Ometria's unsubscribes written to Khaos Control.",
                          no_args_is_help=True)

ACTIONS = ("opt_out_in_kc", "conflict", "no_kc_match", "erased", "written", "kc_wins", "agree")


def _when(text: str | None) -> str:
    return text[:16].replace("T", " ") if text else "undated"


def diff_table(result, show_all: bool) -> Table:  # result: khaosync.stages.consent.ConsentDiff
    """One row per person, fitting 80 columns: who, KC's side, Ometria's side, what happens."""
    table = Table(title="consent: KC beside Ometria", title_justify="left", box=None, header_style="bold underline")
    table.add_column("contact")
    table.add_column("KC")
    table.add_column("Ometria")
    table.add_column("action", no_wrap=True)
    short = {"EXPLICITLY_OPTEDIN": "in", "EXPLICITLY_OPTEDOUT": "out", None: "none"}
    for r in result.rows:
        if r.action == "agree" and not show_all:
            continue
        who = (f"{r.contact_id} (company {r.company_id})" if r.contact_id else "no KC contact") + f"\n{r.email}"
        kc = f"{short.get(r.kc, r.kc)} {_when(r.kc_at)}" + (f"\n{r.kc_source}" if r.kc_source else "")
        ometria = f"{short.get(r.ometria, r.ometria)} {_when(r.ometria_at)}\n{r.ometria_source.split(':', 1)[-1]}"
        action = r.action + (f"\nMAILING_STATUS {r.mailing_status}" if r.mailing_status is not None else "")
        table.add_row(who, kc, ometria, action)
    return table


def push_table(result, documents) -> Table:  # ConsentPushResult, [(urn, [Change])]
    title = "consent push" + ("" if result.committed else ": dry run, nothing sent")
    table = Table(title=title, title_justify="left")
    for col in ("URN", "company", "contacts", "MAILING_STATUS"):
        table.add_column(col)
    for urn, changes in documents:
        status = next((str(c.mailing_status) for c in changes if c.mailing_status is not None), "unchanged")
        table.add_row(urn, changes[0].company_id, ", ".join(c.contact_id for c in changes), status)
    return table


@consent_app.command("diff")
def diff(
    ctx: typer.Context,
    show_all: bool = typer.Option(False, "--all", help="Also list people on whom both sides agree."),
    as_json: bool = typer.Option(False, "--json", help="The rows and counts as JSON on stdout."),
) -> None:
    """Read Ometria's consent changes and plan the opt-outs Khaos Control must get.

    Reads GET /unsubscribes from its bookmark and our contacts' marketing_optin, then shows per
    person KC's consent beside Ometria's, with times and sources, and the planned change. An
    Ometria opt-out newer than KC's state is planned; an opt-in is never written to KC. Exit 1
    when a conflict needs the CRM team (a consent_gap exception).

    Example: khaosync consent diff --json
    """
    from khaosync.connect import Connections
    from khaosync.stages.consent import run_consent_diff

    c = app_context(ctx)
    with c.open_store("consent diff") as store:
        reader = Connections(c.profile).ometria_client()
        try:
            result = run_consent_diff(store, c.profile, reader)
        finally:
            reader.close()
    if as_json:
        c.terminal.json({"sandbox": c.profile.is_sandbox, **result.as_dict()})
    else:
        c.terminal.data(diff_table(result, show_all))
        counts = ", ".join(f"{result.counts[a]} {a}" for a in ACTIONS if result.counts.get(a))
        c.terminal.info(f"consent: {counts or 'nothing to do'}"
                        + (f"; to write the {result.planned} opt-outs: khaosync consent push --commit"
                           if result.planned else ""))
    if result.conflicts:
        raise typer.Exit(EXIT_FINDINGS)


@consent_app.command("push")
def push(
    ctx: typer.Context,
    commit: bool = typer.Option(False, "--commit", help="Really write to Khaos Control. Without it, only show what would be written."),
    as_json: bool = typer.Option(False, "--json", help="The result as JSON on stdout."),
) -> None:
    """Write the planned opt-outs to Khaos Control through ImportCompany (only with --commit).

    Each document is journaled before it is sent; KC's answer confirms each URN. A run killed
    before KC's answer is completed by the next one, which first asks KC whether the change
    landed, so nothing is imported twice. Exit 1 when KC did not confirm a URN or a company's
    document cannot be made, 3 when KC failed after retries.

    Example: khaosync consent diff && khaosync consent push --commit
    """
    from khaosync.connect import Connections
    from khaosync.stages.consent import planned_documents, run_consent_push

    c = app_context(ctx)
    with c.open_store("consent push", write=True) as store:
        documents = planned_documents(store)
        kc = Connections(c.profile).khaos_client() if commit else None
        try:
            result = run_consent_push(store, c.profile, kc, commit=commit)
        finally:
            if kc is not None:
                kc.close()
    if as_json:
        c.terminal.json({"sandbox": c.profile.is_sandbox, **result.as_dict()})
    else:
        c.terminal.data(push_table(result, documents))
        if not commit:
            c.terminal.info("nothing was sent; to write it: khaosync consent push --commit")
        else:
            c.terminal.info(f"consent push: {result.done} confirmed by KC, {result.failed} not confirmed, "
                            f"{result.imports} imports, {result.resumed} resumed")
    if result.failed or result.unwritable:
        raise typer.Exit(EXIT_FINDINGS)
