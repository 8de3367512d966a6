"""What every command gets: the resolved profile, the terminal, and how to open the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from khaosync.cli.terminal import Terminal
from khaosync.config import Profile, load_profile
from khaosync.store import StateStore, open_store


@dataclass
class AppContext:
    config_path: str | None
    state_override: str | None
    terminal: Terminal
    _profile: Profile | None = field(default=None, repr=False)

    @property
    def profile(self) -> Profile:
        if self._profile is None:
            self._profile = load_profile(self.config_path, state=self.state_override)
            self.terminal.banner(self._profile.is_sandbox, self._profile.name)
        return self._profile

    def open_store(self, command: str, write: bool = True) -> StateStore:
        return open_store(Path(self.profile.state), write=write, command=command)


def app_context(ctx: typer.Context) -> AppContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, AppContext), "the root callback sets the AppContext"
    return obj
