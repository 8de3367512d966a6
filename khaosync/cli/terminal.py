"""The one console. Human messages go to stderr, gated by verbosity; data goes to stdout.

Markup is off on both consoles: paths, record keys and values from the ERP are printed as
they are (a ``[/]`` in a path is text, not a rich tag). Styles are applied with ``Text``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.text import Text
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


class Terminal:
    def __init__(self, verbosity: int = 0, width: int | None = None):
        self.verbosity = verbosity
        # --mask-pii: a khaosync.report.mask.Masker for JSON and CSV; commands mask what their
        # tables show before rendering (a folded cell would split an email), except where
        # mask_rendered says the rendered text is masked instead (free text, no folded emails).
        self.masker: Any = None
        self.mask_rendered = False
        self.err = Console(stderr=True, width=width, highlight=False, soft_wrap=True, markup=False, emoji=False)
        self.out = Console(file=sys.stdout, width=width, highlight=False, soft_wrap=True, markup=False, emoji=False)

    # human output, stderr -------------------------------------------------------------
    def info(self, message: Any) -> None:
        if self.verbosity >= 0:
            self.err.print(message)

    def detail(self, message: Any) -> None:
        if self.verbosity >= 1:
            self.err.print(message, style="dim")

    def warn(self, message: str) -> None:
        if self.verbosity >= 0:
            self.err.print(Text.assemble(("warning:", "yellow"), " ", str(message)))

    def error(self, message: str) -> None:
        # Errors print even with -q: cron must see why a run failed.
        self.err.print(Text.assemble(("error:", "red"), " ", str(message)))

    def traceback(self, exc: BaseException) -> None:
        """For a developer (-vvv): the traceback after the error line, on stderr."""
        import traceback

        self.err.print(Text("".join(traceback.format_exception(exc)).rstrip()), style="dim")

    def banner(self, sandbox: bool, profile: str) -> None:
        if sandbox:
            self.info(Text.assemble((" SANDBOX ", "bold black on yellow"),
                                    " emulated Khaos Control and Ometria; nothing real is touched"))
        else:
            self.detail(f"profile: {profile}")

    @contextmanager
    def progress(self, label: str) -> Iterator[Callable[[str, int, int | None], None]]:
        """A live count on stderr for long stages, one bar per stage and record type named like
        ``map products`` (``label`` is the stage; sync's stages name themselves, label ""); silent
        with -q or when stderr is not a terminal (piped, cron)."""
        if self.verbosity < 0 or not self.err.is_terminal:
            yield lambda name, done, total: None
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=self.err, transient=True) as bar:
            tasks: dict[str, TaskID] = {}

            def update(name: str, done: int, total: int | None) -> None:
                if name not in tasks:
                    # Stages run one after the other: a new bar means the others are done, so
                    # their clocks stop.
                    for earlier in tasks.values():
                        bar.stop_task(earlier)
                    tasks[name] = bar.add_task(f"{label} {name}".strip(), total=total)
                bar.update(tasks[name], completed=done, total=total)

            yield update

    # data, stdout -------------------------------------------------------------------------
    def json(self, data: Any) -> None:
        if self.masker is not None:
            data = self.masker.value(json.loads(json.dumps(data, default=str)))
        self.json_text(json.dumps(data, indent=2, sort_keys=True, default=str))

    def json_text(self, text: str) -> None:
        """JSON already written (``exact_json``: amounts exactly as held), on stdout."""
        sys.stdout.write(self._masked(text) + "\n")
        sys.stdout.flush()

    def _masked(self, text: str) -> str:
        return self.masker.text(text) if self.masker is not None and text else text

    @property
    def quiet(self) -> bool:
        return self.verbosity < 0

    def verdict(self, line: str, failed: bool) -> None:
        """A command's one-line verdict: on stdout after its data; with -q only when it failed,
        and then alone, on stderr (cron mails what a quiet job prints)."""
        if self.quiet:
            if failed:
                self.err.print(Text(line))
            return
        self.data(Text(line))

    def data(self, renderable: Any) -> None:
        """A renderable on stdout, without the spaces rich pads table cells with at line ends.
        Nothing with -q: a quiet run prints only its verdict, and only when it failed."""
        if self.quiet:
            return
        with self.out.capture() as captured:
            self.out.print(renderable)
        text = captured.get()
        if self.mask_rendered:
            text = self._masked(text)
        text = "\n".join(line.rstrip() for line in text.split("\n"))
        sys.stdout.write(text)
        sys.stdout.flush()
