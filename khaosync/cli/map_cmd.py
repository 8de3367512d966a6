"""``khaosync map`` and ``khaosync mappings``: staged ERP records to Ometria records."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from khaosync.cli.context import app_context
from khaosync.errors import EXIT_FINDINGS


def map_table(result) -> Table:
    table = Table(title=f"map run {result.run_id}", title_justify="left")
    columns = ("entity", "staged", "mapped", "unchanged", "held", "not sent", "exceptions")
    for col in columns:
        table.add_column(col, justify="left" if col == "entity" else "right")
    for name, r in result.entities.items():
        table.add_row(name, str(r.staged), str(r.mapped), str(r.unchanged), str(r.held), str(r.not_sent),
                      str(r.exceptions))
    return table


def register(app: typer.Typer) -> None:
    @app.command("map")
    def map_(
        ctx: typer.Context,
        entity: Optional[list[str]] = typer.Option(None, "--entity", help="products, contacts or orders (repeatable)."),
        incremental: bool = typer.Option(
            False, "--incremental/--full",
            help="--incremental: only what was staged since the last map (and what it feeds), as sync maps; "
                 "--full (the default): every staged record."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    ) -> None:
        """Turn staged ERP records into Ometria records through the YAML mappings.

        Each record gets a content hash and its lineage; an unchanged record writes nothing.
        Records that cannot be mapped become exceptions; exit 1 when one is at fail severity.
        --incremental maps only what changed since the last map (everything when the mapping
        rules changed or no map ran yet); --full, the default, maps everything again.

        Example: khaosync map --entity orders --incremental
        """
        from khaosync.stages.map import ENTITIES, map_records

        c = app_context(ctx)
        for name in entity or []:
            if name not in ENTITIES:
                raise typer.BadParameter(f"--entity {name!r}: choose from {', '.join(ENTITIES)}")
        with c.open_store("map") as store:
            with c.terminal.progress("map") as progress:
                result = map_records(store, c.profile, entities=entity or None, progress=progress,
                                     incremental=incremental)
        if not any(r.staged or r.skipped_raw for r in result.entities.values()):
            c.terminal.warn("nothing is staged: run `khaosync pull` first")
        if as_json:
            c.terminal.json({"sandbox": c.profile.is_sandbox, "run": result.run_id,
                             "mappings": list(result.mappings),
                             "entities": {k: v.as_dict() for k, v in result.entities.items()},
                             "incremental": {n: result.incremental.get(n, False) for n in result.entities},
                             "exceptions": dict(sorted(result.exceptions.items())),
                             "fail_findings": result.fail_findings})
        else:
            c.terminal.data(map_table(result))
        if result.fail_findings:
            if not as_json:
                c.terminal.verdict(f"map: {result.fail_findings} finding(s) at fail severity: "
                                   "khaosync exceptions list --open", failed=True)
            raise typer.Exit(EXIT_FINDINGS)

    mappings_app = typer.Typer(help="Mapping files: validate one and see what it would do.", no_args_is_help=True)
    app.add_typer(mappings_app, name="mappings")

    @mappings_app.command("check")
    def mappings_check(
        ctx: typer.Context,
        file: Optional[str] = typer.Argument(None, help="A mapping file (default: the profile's mappings)."),
        as_json: bool = typer.Option(False, "--json", help="The validated mapping and its account as JSON."),
    ) -> None:
        """Validate a mapping file and print what it would do, rule by rule.

        A bad file exits 2 with the file, the key path and the reason.

        Example: khaosync mappings check mappings/example-site.yaml
        """
        from khaosync.mapping import explain, load_mapping

        c = app_context(ctx)
        mapping = load_mapping([file] if file else c.profile.mappings)
        account = explain(mapping)
        if as_json:
            c.terminal.json({"sandbox": c.profile.is_sandbox, "valid": True, "sources": list(mapping.sources),
                             "mapping": mapping.model_dump(mode="json", exclude={"sources"}), "explain": account})
            return
        lines = [f"{' + '.join(mapping.sources)}: valid"]
        for section, sentences in account.items():
            lines.append(f"{section}:")
            lines += [f"  - {s}" for s in sentences]
        c.terminal.data("\n".join(lines))
