"""Profile -> the HTTP transports the clients use.

This is the one place that knows the sandbox exists: for a sandbox profile it plugs the
in-process emulators in through ``httpx.WSGITransport``; for a live profile it returns
``None`` and the clients use the network. The clients themselves never ask which.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import httpx

from khaosync.config import Profile
from khaosync.errors import ConfigError


class Connections:
    def __init__(self, profile: Profile):
        self.profile = profile

    @cached_property
    def sandbox_app(self):  # -> khaosync.sandbox.server.SandboxApp, imported only for sandbox profiles
        from khaosync.sandbox.server import SandboxApp
        from khaosync.sandbox.world import World

        folder = Path(self.profile.sandbox.path)
        if not World.exists(folder):
            raise ConfigError(f"no sandbox at {folder}: run `khaosync sandbox init` first")
        return SandboxApp(folder, self.profile.ometria.resolved_api_key().get_secret_value())

    def transport(self) -> httpx.BaseTransport | None:
        if self.profile.is_sandbox:
            return httpx.WSGITransport(app=self.sandbox_app)
        return None

    def khaos_client(self):
        from khaosync.khaos.soap import KhaosClient

        return KhaosClient(self.profile.khaos, transport=self.transport())

    def ometria_client(self):
        """The Ometria client for this profile (push and read-back; it holds both rates)."""
        from khaosync.ometria.client import OmetriaClient

        return OmetriaClient(self.profile.ometria, transport=self.transport())

    def credit_notes_folder(self) -> Path | None:
        """Where credit notes come from: the site's export folder, or the sandbox's exports."""
        if self.profile.khaos.credit_notes_path:
            return Path(self.profile.khaos.credit_notes_path)
        if self.profile.is_sandbox:
            return Path(self.profile.sandbox.path) / "exports"
        return None
