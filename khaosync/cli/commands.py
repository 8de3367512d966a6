"""The pipeline's commands. Each is thin: context, one library call, render."""

from __future__ import annotations

from typing import Optional

import typer

from khaosync.cli.context import app_context
from khaosync.errors import EXIT_FINDINGS, ConfigError

# The file names khaosync.khaos.files.ExportFolder reads (docs/pull.md).
EXPORT_PATTERNS = ("companies*.xml", "customers*.csv", "customers*.tsv", "stock*.xml", "sales_orders*.xml",
                   "order_status*.xml", "credit_notes*.csv", "credit_notes*.tsv")


def _parse_since(text: str):
    from khaosync.cli.options import parse_since

    return parse_since(text)


def _pull_source(c, source: str, path: str | None):
    from pathlib import Path

    from khaosync.connect import Connections
    from khaosync.stages.pull import FileSource, SoapSource

    connections = Connections(c.profile)
    if source == "files":
        if not path:
            raise typer.BadParameter("--source files needs --path FOLDER")
        if not Path(path).is_dir():
            raise typer.BadParameter(f"--path {path}: not a folder")
        found = FileSource(Path(path))
        if not found.export.files(*EXPORT_PATTERNS):
            raise ConfigError(f"--path {path}: no exports found (KC export files are named "
                              f"{', '.join(EXPORT_PATTERNS)}; docs/pull.md)")
        return found
    if source != "soap":
        raise typer.BadParameter(f"--source {source!r}: choose soap or files")
    notes = connections.credit_notes_folder()
    return SoapSource(connections.khaos_client(), c.profile, FileSource(notes) if notes and notes.is_dir() else None)


def register(app: typer.Typer) -> None:
    """Every command, in the order ``--help`` lists them. One module per command group."""
    from khaosync.cli import diff_cmd, exceptions_cmd, history_cmd, map_cmd, push_cmd, reconcile_cmd

    _register_pull(app)
    map_cmd.register(app)
    diff_cmd.register(app)
    push_cmd.register(app)
    reconcile_cmd.register(app)
    exceptions_cmd.register(app)
    history_cmd.register(app)
    _register_tools(app)


def _register_pull(app: typer.Typer) -> None:
    @app.command()
    def pull(
        ctx: typer.Context,
        since: Optional[str] = typer.Option(None, help="Read changes from this date (YYYY-MM-DD or ISO datetime, UTC)."),
        full: bool = typer.Option(False, "--full", help="Ignore bookmarks: re-read everything from pull.history_start."),
        entity: Optional[list[str]] = typer.Option(None, "--entity", help="customers, stock, orders or credit-notes (repeatable)."),
        source: str = typer.Option("soap", help="soap (the KC web service) or files (a folder of KC exports)."),
        path: Optional[str] = typer.Option(None, "--path", help="With --source files: the export folder."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    ) -> None:
        """Read Khaos Control into the state store, incrementally.

        Each record is stored raw and parsed with a content hash; an unchanged record adds no
        version. Bookmarks move only after the records they cover are committed.

        Example: khaosync pull --since 2026-10-01 --entity orders
        """
        from khaosync.cli.render import pull_table
        from khaosync.stages.pull import ENTITIES
        from khaosync.stages.pull import pull as run_pull

        c = app_context(ctx)
        for name in entity or []:
            if name not in ENTITIES:
                raise typer.BadParameter(f"--entity {name!r}: choose from {', '.join(ENTITIES)}")
        if since and full:
            raise typer.BadParameter("--since and --full exclude each other")
        start = _parse_since(since) if since else None
        with c.open_store("pull") as store:
            with c.terminal.progress("pull") as progress:
                result = run_pull(store, c.profile, _pull_source(c, source, path), entities=entity or None,
                                  since=start, full=full, progress=progress)
        summary = {"sandbox": c.profile.is_sandbox, **result.as_dict()}
        if as_json:
            c.terminal.json(summary)
        else:
            c.terminal.data(pull_table(result))
        if result.fail_findings:
            if not as_json:
                c.terminal.verdict(f"pull: {result.fail_findings} finding(s) at fail severity: "
                                   "khaosync exceptions list --open", failed=True)
            raise typer.Exit(EXIT_FINDINGS)



def _register_tools(app: typer.Typer) -> None:
    khaos_app = typer.Typer(help="Khaos Control tools for consultants: what a site's web service offers.", no_args_is_help=True)
    app.add_typer(khaos_app, name="khaos")

    @khaos_app.command("discover")
    def khaos_discover(
        ctx: typer.Context,
        wsdl: Optional[str] = typer.Option(None, "--wsdl", help="Read a saved WSDL file instead of fetching it."),
        as_json: bool = typer.Option(False, "--json", help="The report as JSON on stdout."),
    ) -> None:
        """Fetch a site's WSDL and mark each operation: used, expected but missing, different, unused.

        A consultant's first command on a new site; exit 1 when an operation khaosync needs is
        missing or has a different signature.

        Example: khaosync --config site.yaml khaos discover
        """
        from pathlib import Path

        from khaosync.cli.render import discover_table
        from khaosync.connect import Connections
        from khaosync.khaos.discover import discover

        c = app_context(ctx)
        document = Path(wsdl).read_bytes() if wsdl else Connections(c.profile).khaos_client().fetch_wsdl()
        report = discover(document, c.profile.khaos)
        if as_json:
            c.terminal.json({"sandbox": c.profile.is_sandbox, **report.model_dump(mode="json")})
        else:
            c.terminal.data(discover_table(report))
        wrong = [op.name for op in report.operations if op.status in ("expected_missing", "different_signature")]
        if wrong:
            if not as_json:
                c.terminal.verdict(f"discover: {len(wrong)} operation(s) khaosync needs are missing or different: "
                                   f"{', '.join(wrong)}", failed=True)
            raise typer.Exit(EXIT_FINDINGS)

    @app.command("init")
    def init(
        ctx: typer.Context,
        path: str = typer.Option("khaosync.yaml", "--path", metavar="FILE", help="Where to write it."),
        force: bool = typer.Option(False, "--force", help="Replace an existing file."),
    ) -> None:
        """Write a commented khaosync.yaml for a live site: every key, its default, what it does.

        Asks nothing: replace the two URLs, set OMETRIA_API_KEY, then run khaosync doctor.

        Example: khaosync init && khaosync doctor
        """
        from pathlib import Path

        from khaosync.config_init import template

        c = app_context(ctx)
        target = Path(path)
        if target.exists() and not force:
            raise ConfigError(f"{target} exists: keep it, or replace it with --force")
        if target.is_dir():
            raise ConfigError(f"{target} is a folder: give a file name")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(template(), encoding="utf-8")
        c.terminal.info(f"wrote {target}: set khaos.soap_url and the Ometria key, then run: khaosync doctor")

    @app.command("doctor")
    def doctor(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="The checks as JSON on stdout.")) -> None:
        """Check the installation: config, Ometria key and connection, the KC WSDL, the state store.

        One line per check, with what to do when it fails. Reads only (one Ometria request,
        one WSDL fetch). Exit 1 when a check fails.

        Example: khaosync --config site.yaml doctor
        """
        from rich.table import Table
        from rich.text import Text

        from khaosync.doctor import run_checks

        c = app_context(ctx)
        profile, checks = run_checks(c.config_path, c.state_override)
        if profile is not None:
            c.terminal.banner(profile.is_sandbox, profile.name)
        failed = [k for k in checks if k.status == "fail"]
        if as_json:
            c.terminal.json({"sandbox": profile.is_sandbox if profile else None,
                             "checks": [k.as_dict() for k in checks], "ok": not failed})
        else:
            table = Table(box=None, show_header=False, pad_edge=False)
            table.add_column("check", no_wrap=True)
            table.add_column("status", no_wrap=True)
            table.add_column("detail", overflow="fold")
            colour = {"ok": "green", "warn": "yellow", "fail": "red"}
            for k in checks:
                detail = k.detail + (f"; fix: {k.fix}" if k.status in ("fail", "warn") and k.fix else "")
                table.add_row(k.name, Text(k.status, style=colour.get(k.status, "")), Text(detail))
            c.terminal.data(table)
            c.terminal.verdict(f"doctor: {len(failed)} check(s) failed" if failed else "doctor: ready", bool(failed))
        if failed:
            raise typer.Exit(EXIT_FINDINGS)

    config_app = typer.Typer(help="Show the resolved configuration.", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @config_app.command("show")
    def config_show(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="JSON on stdout.")) -> None:
        """Print the resolved profile, secrets masked.

        Example: khaosync --config site.yaml config show --json
        """
        import yaml

        c = app_context(ctx)
        data = c.profile.masked()
        data["sandbox_profile"] = c.profile.is_sandbox
        if as_json:
            c.terminal.json(data)
        else:
            c.terminal.data(yaml.safe_dump(data, sort_keys=True).rstrip())
