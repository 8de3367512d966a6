"""The state store: one embedded SQLite database per merchant (WAL, versioned migrations,
one writer at a time through a lock file)."""

from khaosync.store.db import StateStore, open_store
from khaosync.store.lock import StateLock

__all__ = ["StateStore", "StateLock", "open_store"]
