"""Progress of a run's long steps (the epochs, the front's candidates): a bar on a terminal, lines elsewhere.

A rich bar redraws one line in place, which a log file or a pipe (``| tee``) never shows until the
run ends; there the same figures come as plain lines instead. Both go to stderr, so that stdout
keeps only what a command reports (``pareco train --json``).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from typing import Any, TextIO


def format_duration(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on."""
    s = max(0, round(seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Reporter:
    """How far one long step is and when it will end, on ``stream`` (default stderr).

    On a terminal (with rich installed) a bar shows a description, a text and the ETA; elsewhere
    :meth:`update` prints the same as one plain line every ``every`` units and at the last one
    (``every`` None: about ten lines over the step). :meth:`say` prints a line in both cases. The
    ETA is the wall time per unit so far in this process times the units left, so units that take
    longer than others (PareCO's BO steps, the validation after an epoch) are counted as they come.
    Nothing is shown when ``enabled`` is False.
    """

    def __init__(
        self,
        total: int,
        done: int = 0,
        every: int | None = None,
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.done, self.every, self.enabled = total, done, every, enabled
        self._first, self._t0 = done, time.perf_counter()
        self._bar: Any = None
        if enabled and self.stream.isatty() and importlib.util.find_spec("rich") is not None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(file=self.stream),
            )
            self._task = self._bar.add_task("", total=total, completed=done, info="")
            self._bar.start()

    def eta(self) -> str:
        """``ETA m:ss`` for the units left, ``ETA -`` before this process has finished one."""
        units = self.done - self._first
        if units <= 0:
            return "ETA -"
        left = (time.perf_counter() - self._t0) / units * (self.total - self.done)
        return f"ETA {format_duration(left)}"

    def update(self, done: int, description: str, info: str, total: int | None = None) -> None:
        """``done`` units of ``total`` (default: as constructed) are finished; show them."""
        self.done = done
        self.total = self.total if total is None else total
        if self._bar is not None:
            self._bar.update(
                self._task,
                completed=done,
                total=self.total,
                description=description,
                info=f"{info} {self.eta()}",
            )
        elif self.enabled and (done % (self.every or max(1, self.total // 10)) == 0 or done >= self.total):
            self.say(f"{description} {info} {self.eta()}")

    def say(self, text: str) -> None:
        """Print ``text`` as a line of its own (above the bar on a terminal)."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        elif self.enabled:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Stop the bar (it stays on screen at its last state)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
