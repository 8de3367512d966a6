"""One WSGI app for both emulators, in-process or on a real port.

Paths: ``/ometria/v2/...`` goes to the Ometria emulator, ``/khaos/KhaosKSD.exe/...`` to the
Khaos Control emulator. The same app object serves ``httpx.WSGITransport`` (tests and the
default profile) and ``khaosync sandbox serve`` (a threaded wsgiref server on loopback), so
the clients cannot tell which one they talk to.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

OMETRIA_DB = "ometria.db"


@dataclass(frozen=True)
class Faults:
    """Fault injection shared by both emulators (``sandbox serve --fail-rate ...``)."""

    fail_rate: float = 0.0
    latency_ms: int = 0
    rate_limit: float | None = None  # Ometria push requests/s; None: the emulator's default
    seed: int = 0
    fail_after_commit: bool = False  # some injected 5xx come after the records were queued
    # Ometria readings the evidence leaves open (ometria_emulator's docstring); defaults: the harder one
    blanks: str = "kept"             # a blank sent for a stored field: "kept" or "cleared"
    error_detail: bool = False       # /push/_errors with request and record ids, specific messages
    retry_after: bool = False        # 429 with a Retry-After header


class SandboxApp:
    def __init__(self, folder: str | Path, ometria_key: str, faults: Faults = Faults()):
        from khaosync.sandbox.khaos_emulator import KhaosEmulator
        from khaosync.sandbox.ometria_emulator import OmetriaEmulator

        self.folder = Path(folder)
        kwargs = {} if faults.rate_limit is None else {"push_rate": faults.rate_limit}
        self.ometria = OmetriaEmulator(
            self.folder / OMETRIA_DB, ometria_key,
            fail_rate=faults.fail_rate, fail_after_commit=faults.fail_after_commit, latency_ms=faults.latency_ms,
            seed=faults.seed, blanks=faults.blanks, error_detail=faults.error_detail,
            retry_after=faults.retry_after, **kwargs,
        )
        self.khaos = KhaosEmulator(
            self.folder, fail_rate=faults.fail_rate, latency_ms=faults.latency_ms, seed=faults.seed,
        )

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/ometria/"):
            return self.ometria(environ, start_response)
        if path.startswith("/khaos/"):
            return self.khaos(environ, start_response)
        body = json.dumps({"error": f"no sandbox service at {path}"}).encode()
        start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - wsgiref's name
        pass  # request lines would print API keys' neighbours to the terminal; keep the server quiet


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


def make_sandbox_server(app: SandboxApp, host: str = "127.0.0.1", port: int = 0) -> WSGIServer:
    """``host`` may be an IPv6 literal (``::1``): the socket's family follows it."""
    server_class = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
    return make_server(host.strip("[]"), port, app, server_class=server_class, handler_class=_QuietHandler)


class ServedSandbox:
    """A sandbox on a loopback port in a background thread (tests and benchmarks)."""

    def __init__(self, app: SandboxApp, host: str = "127.0.0.1", port: int = 0):
        self.server = make_sandbox_server(app, host, port)
        # A short poll interval: shutdown waits for it, and tests start and stop many servers.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "ServedSandbox":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
