"""One run per state file: an exclusive ``flock`` on ``<state>.lock``.

The lock file also holds who took it (pid, host, command, since), so a second run can say
who is in the way. The OS drops the lock when the holder dies, so a killed run never leaves
a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

from khaosync.errors import StateLockedError


class StateLock:
    def __init__(self, state_path: str | Path):
        self.path = Path(f"{state_path}.lock")
        self._fd: int | None = None

    def acquire(self, command: str | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_holder(fd)
            os.close(fd)
            raise StateLockedError(str(self.path.with_suffix("")), holder) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command or " ".join(sys.argv[:3]),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    @staticmethod
    def _read_holder(fd: int) -> dict | None:
        try:
            data = os.pread(fd, 4096, 0)
            return json.loads(data) if data else None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "StateLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
