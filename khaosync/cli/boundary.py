"""The CLI boundary: every error ends here as one line on stderr and an exit code that keeps
its meaning (1 is findings only, never a crash). No traceback reaches an operator; ``-vvv``
prints it after the line, for a developer.

Library errors (``KhaosyncError``) say what happened already. Everything else is turned into
a sentence by what it is: a file that cannot be read or written, a state store that is not
one or is busy, a value out of range, a network failure.
"""

from __future__ import annotations

import errno
import sqlite3

import httpx

from khaosync.errors import EXIT_EXTERNAL, EXIT_USAGE, KhaosyncError

MESSAGE_LIMIT = 500  # characters of one error line; a message quoting a huge value is cut


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """A message as one bounded line (a library error's own line breaks are kept: they list
    key paths, one per line)."""
    text = text.strip() or "(no message)"
    return text if len(text) <= limit else text[:limit] + "..."


def describe(exc: BaseException, state: str | None) -> tuple[int, str]:
    """(exit code, message) for an error that reached the CLI."""
    if isinstance(exc, KhaosyncError):
        return exc.exit_code, one_line(str(exc), 4000)
    if isinstance(exc, sqlite3.Error):
        return EXIT_USAGE, _state_error(exc, state)
    if isinstance(exc, httpx.HTTPError):
        return EXIT_EXTERNAL, f"network: {type(exc).__name__}: {one_line(str(exc), 200)}"
    if isinstance(exc, OSError):
        return EXIT_USAGE, _os_error(exc)
    if isinstance(exc, UnicodeError):
        return EXIT_USAGE, f"not valid text: {one_line(str(exc), 200)}"
    if isinstance(exc, (ValueError, OverflowError)):
        return EXIT_USAGE, f"invalid value: {one_line(str(exc))}"
    if isinstance(exc, MemoryError):
        return EXIT_USAGE, "out of memory: the input is too large"
    return EXIT_USAGE, (f"unexpected {type(exc).__name__}: {one_line(str(exc), 300)} "
                        "(a khaosync bug: run again with -vvv for the traceback and report it)")


def _state_error(exc: sqlite3.Error, state: str | None) -> str:
    where = f"state {state}" if state else "state store"
    text = str(exc)
    if "locked" in text or "busy" in text:
        return (f"{where} is busy: another process holds a transaction on it (not a khaosync run: "
                "those hold the lock file); try again when it has finished")
    if "readonly" in text or "read-only" in text:
        return f"{where} is read-only: khaosync cannot write it ({text})"
    if "not a database" in text or "malformed" in text:
        return f"{where} is not a khaosync state store ({text}); check --state"
    if "unable to open" in text:
        return f"{where} cannot be opened ({text}): is it a folder, or in a folder that does not exist?"
    return f"{where}: {type(exc).__name__}: {one_line(text, 300)}"


def _os_error(exc: OSError) -> str:
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    what = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.EADDRINUSE:
        return f"address in use: {what}"
    hint = {errno.EISDIR: "give a file, not a folder", errno.ENOTDIR: "a part of the path is not a folder",
            errno.EEXIST: "it exists and is not a folder", errno.EACCES: "check its permissions",
            errno.EROFS: "the file system is read-only", errno.ENOENT: "no such file or folder"}.get(exc.errno or -1)
    where = " -> ".join(names)
    return f"{where + ': ' if where else ''}{what}" + (f" ({hint})" if hint and hint.lower() != what.lower() else "")
