"""Progress on the long reads of Ometria (``--live``): the read-back client, counted.

``reconcile --live``, ``diff --live`` and ``report --live`` page through every order, product
or contact Ometria holds, at the read rate: minutes on a large account. The stages take any
read-back client, so the CLI hands them this one, which passes each record through and ticks
a bar named for what it reads (``read orders``); the terminal shows it only on a terminal,
never when piped or with ``-q``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

Tick = Callable[[str, int, int | None], None]


class CountedReads:
    """The client, with every ``iter_*`` read counted as it goes."""

    def __init__(self, client: Any, tick: Tick):
        self._client = client
        self._tick = tick

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not (name.startswith("iter_") and callable(attr)):
            return attr
        what = name.removeprefix("iter_")

        def counted(*args: Any, **kwargs: Any) -> Iterator[Any]:
            done = 0
            for item in attr(*args, **kwargs):
                done += 1
                if done == 1 or done % 25 == 0:
                    self._tick(what, done, None)
                yield item
            self._tick(what, done, done)  # finished: the bar shows the whole count

        return counted


@contextmanager
def live_reads(terminal: Any, client: Any | None) -> Iterator[Any | None]:
    """``client`` counted on a ``read`` bar for the length of the block (None stays None)."""
    if client is None:
        yield None
        return
    with terminal.progress("read") as tick:
        yield CountedReads(client, tick)


__all__ = ["CountedReads", "live_reads"]
