"""``khaosync sandbox``: plant, advance and serve the emulated merchant."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from khaosync.cli.context import app_context
from khaosync.errors import ConfigError

# The generator's minimums, stated here so --help shows them without importing the generator
# (a test holds them equal).
MIN_CUSTOMERS = 25
MIN_ORDERS = 100

sandbox_app = typer.Typer(help="The built-in sandbox: a deterministic merchant and strict emulators.", no_args_is_help=True)


def _folder(ctx: typer.Context) -> Path:
    return Path(app_context(ctx).profile.sandbox.path)


def _sandbox_key(ctx: typer.Context) -> str:
    profile = app_context(ctx).profile
    if not profile.is_sandbox:
        raise ConfigError("this profile is live; the sandbox commands only run with a sandbox profile")
    return profile.ometria.resolved_api_key().get_secret_value()


def _counts_table(manifest: dict) -> Table:
    table = Table(title="planted merchant", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    for name, n in sorted(manifest.get("counts", {}).items()):
        table.add_row(name, str(n))
    for kind, items in sorted(manifest.get("faults", {}).items()):
        table.add_row(f"fault: {kind}", str(len(items)))
    return table


@sandbox_app.command("init")
def init(
    ctx: typer.Context,
    seed: int = typer.Option(7, help="Same seed, same merchant."),
    customers: int = typer.Option(1000, min=MIN_CUSTOMERS,
                                  help=f"Companies to create (at least {MIN_CUSTOMERS}, so every fault is planted)."),
    orders: int = typer.Option(5000, min=MIN_ORDERS,
                               help=f"Sales orders over the date range (at least {MIN_ORDERS})."),
    start: Optional[str] = typer.Option(None, help="First order date (default 2026-01-01)."),
    end: Optional[str] = typer.Option(None, help="Last order date (default 2026-10-31)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing sandbox and the sandbox's state store."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON on stdout."),
) -> None:
    """Plant a deterministic merchant in the sandbox (KC data, Ometria's side, a manifest).

    Example: khaosync sandbox init --seed 7 --customers 500 --orders 3000
    """
    from khaosync.sandbox.lifecycle import init_sandbox

    c = app_context(ctx)
    key = _sandbox_key(ctx)
    try:
        manifest = init_sandbox(
            _folder(ctx), api_key=key, seed=seed, customers=customers, orders=orders, force=force,
            start=date.fromisoformat(start) if start else None, end=date.fromisoformat(end) if end else None,
        )
    except (FileExistsError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if force:
        state = Path(c.profile.state)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{state}{suffix}").unlink(missing_ok=True)
    if as_json:
        c.terminal.json({"sandbox": True, **manifest})
    else:
        c.terminal.info(f"sandbox planted at {_folder(ctx)} (seed {seed}); clock {manifest.get('clock')}")
        c.terminal.data(_counts_table(manifest))


@sandbox_app.command("advance")
def advance(
    ctx: typer.Context,
    days: int = typer.Option(..., "--days", min=1, help="How many days pass."),
    as_json: bool = typer.Option(False, "--json", help="Print what changed as JSON on stdout."),
) -> None:
    """Let time pass in the sandbox: new orders, despatches, refunds, consent changes.

    Example: khaosync sandbox advance --days 3
    """
    from khaosync.sandbox.lifecycle import advance_sandbox

    c = app_context(ctx)
    try:
        summary = advance_sandbox(_folder(ctx), days, api_key=_sandbox_key(ctx))
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    if as_json:
        c.terminal.json({"sandbox": True, **summary})
    else:
        changed = summary.get("changed", {})
        c.terminal.info(f"{days} day(s) passed: clock {summary.get('to')}")
        table = Table(title="changed records", title_justify="left")
        table.add_column("entity")
        table.add_column("changed", justify="right")
        for entity, keys in sorted(changed.items()):
            table.add_row(entity, str(len(keys)))
        c.terminal.data(table)


@sandbox_app.command("status")
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="The manifest as JSON.")) -> None:
    """Show what the sandbox holds: the generator's manifest.

    Example: khaosync sandbox status --json
    """
    from khaosync.sandbox.generator import load_manifest
    from khaosync.sandbox.world import World

    c = app_context(ctx)
    folder = _folder(ctx)
    if not World.exists(folder):
        raise ConfigError(f"no sandbox at {folder}: run `khaosync sandbox init` first")
    manifest = load_manifest(folder)
    if as_json:
        c.terminal.json({"sandbox": True, **manifest})
    else:
        c.terminal.info(f"sandbox at {folder}; clock {manifest.get('clock')}")
        c.terminal.data(_counts_table(manifest))


@sandbox_app.command("serve")
def serve(
    ctx: typer.Context,
    port: int = typer.Option(8700, min=0, max=65535, help="TCP port on loopback (0: any free port)."),
    host: str = typer.Option("127.0.0.1", help="Loopback address to bind."),
    ometria_key: str = typer.Option(..., "--ometria-key", envvar="KHAOSYNC_SANDBOX_KEY", help="The only API key the Ometria emulator accepts."),
    latency_ms: int = typer.Option(0, "--latency-ms", min=0, help="Added to every answer."),
    fail_rate: float = typer.Option(0.0, "--fail-rate", min=0.0, max=1.0, help="Share of requests answered 5xx."),
    rate_limit: Optional[float] = typer.Option(None, "--rate-limit", min=0.1, help="Ometria push requests/s allowed."),
    fail_after_commit: bool = typer.Option(False, "--fail-after-commit", help="Some 5xx answers come after the push was queued."),
    seed: int = typer.Option(0, help="Seed of the fault injection."),
    blanks: str = typer.Option("kept", "--blanks", help="What a blank (null or \"\") sent for a stored Ometria "
                               "field does: kept (default, the harder reading) or cleared."),
    error_detail: bool = typer.Option(False, "--error-detail", help="/push/_errors names request and record, "
                                      "with specific messages (Ometria documents only message and path)."),
    retry_after: bool = typer.Option(False, "--retry-after", help="Ometria's 429 answers carry Retry-After "
                                     "(none is documented)."),
) -> None:
    """Serve both emulators on a real port: Ometria under /ometria/v2, KC under /khaos/KhaosKSD.exe.

    Example: khaosync sandbox serve --port 8700 --ometria-key test-key --fail-rate 0.2
    """
    from khaosync.config import is_loopback
    from khaosync.sandbox.server import Faults, SandboxApp, make_sandbox_server
    from khaosync.sandbox.world import World

    c = app_context(ctx)
    folder = _folder(ctx)
    if not World.exists(folder):
        raise ConfigError(f"no sandbox at {folder}: run `khaosync sandbox init` first")
    if not is_loopback(host):
        raise ConfigError(f"--host {host}: the sandbox only serves on loopback")
    if blanks not in ("kept", "cleared"):
        raise ConfigError(f"--blanks {blanks}: choose kept or cleared")
    app = SandboxApp(folder, ometria_key, Faults(fail_rate=fail_rate, latency_ms=latency_ms, rate_limit=rate_limit, seed=seed,
                                            fail_after_commit=fail_after_commit, blanks=blanks,
                                            error_detail=error_detail, retry_after=retry_after))
    try:
        server = make_sandbox_server(app, host, port)
    except OSError as exc:
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    base = f"http://{shown}:{server.server_address[1]}"
    c.terminal.info(f"serving the sandbox at {base}")
    c.terminal.info(f"  Ometria:       {base}/ometria/v2   (X-Ometria-Auth: the key you gave)")
    c.terminal.info(f"  Khaos Control: {base}/khaos/KhaosKSD.exe/soap/IKosWeb  (WSDL: .../wsdl/IKosWeb)")
    c.terminal.info("Ctrl-C to stop")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
