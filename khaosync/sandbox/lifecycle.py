"""Plant and age the sandbox merchant: the generator's world plus Ometria's side of it."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

from khaosync.sandbox.server import OMETRIA_DB
from khaosync.sandbox.world import World


# The generator's words for where a person unsubscribed -> Ometria's documented types.
_UNSUBSCRIBE_TYPE = {"Unsubscribed via email footer link": "link_unsubscribe",
                     "Unsubscribed via preference centre": "preferences_centre",
                     "Marked as spam": "list_unsubscribe"}


def _load_ometria_side(folder: Path, api_key: str) -> None:
    """Copy what the generator planted on Ometria's side into the Ometria emulator's store."""
    from khaosync.sandbox.ometria_emulator import OmetriaEmulator

    world = World(folder, create=False)
    try:
        emulator = OmetriaEmulator(folder / OMETRIA_DB, api_key)
        for type_, _id, doc in world.ometria_seeds():
            emulator.seed_record(type_, doc)
        for email, timestamp, reason in world.ometria_unsubscribes():
            # Ometria types each event by where it happened and often gives no reason.
            emulator.seed_unsubscribe(email, timestamp, None, type=_UNSUBSCRIBE_TYPE.get(reason, "link_unsubscribe"))
    finally:
        world.close()


def init_sandbox(folder: str | Path, *, api_key: str, seed: int = 7, customers: int = 1000, orders: int = 5000,
                 start: date | None = None, end: date | None = None, force: bool = False) -> dict:
    """Generate a fresh merchant in ``folder`` and load Ometria's side. Returns the manifest."""
    from khaosync.sandbox import generator

    folder = Path(folder)
    if World.exists(folder):
        if not force:
            raise FileExistsError(f"a sandbox already exists at {folder} (use --force to replace it)")
        shutil.rmtree(folder)
    kwargs = {}
    if start is not None:
        kwargs["start"] = start
    if end is not None:
        kwargs["end"] = end
    manifest = generator.generate(folder, seed=seed, customers=customers, orders=orders, **kwargs)
    _load_ometria_side(folder, api_key)
    return manifest


def advance_sandbox(folder: str | Path, days: int, *, api_key: str) -> dict:
    """Let ``days`` days pass in the merchant; new Ometria-side unsubscribes reach the emulator."""
    from khaosync.sandbox import generator

    folder = Path(folder)
    if not World.exists(folder):
        raise FileNotFoundError(f"no sandbox at {folder}: run `khaosync sandbox init` first")
    summary = generator.advance(folder, days)
    _load_ometria_side(folder, api_key)
    return summary
