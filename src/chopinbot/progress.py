"""Progress of long work: a tqdm bar on a terminal, plain lines in a log.

A bar redraws itself with carriage returns; written to a file (``chopinbot
train ... > log``, CI) every redraw stays in it (231 frames, 20 KB, in a
30-second training run).  So a bar is drawn only when the stream is a
terminal; elsewhere :class:`Progress` writes one short line about every tenth
of the work, and the callers' own per-epoch or per-file-batch lines carry the
rest.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm import tqdm


def is_terminal(stream: IO[str] | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


class Progress:
    """``update``/``set_postfix_str``/``write``/``close`` as tqdm, whatever the stream.

    On a terminal it *is* a tqdm bar.  Elsewhere it prints ``desc: n/total unit``
    when another ``log_every`` of the total is done (and at the end; never with
    ``log_every=0``, for callers that print a line per epoch themselves), and
    :meth:`write` prints its line to standard output as it is."""

    def __init__(self, total: int, desc: str = "", unit: str = "it", enabled: bool = True,
                 stream: IO[str] | None = None, log_every: float = 0.1, **tqdm_args: Any) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.total, self.desc, self.unit, self.enabled = max(int(total), 0), desc, unit, enabled
        self.bar = (tqdm(total=total, desc=desc or None, unit=unit, file=self.stream, **tqdm_args)
                    if enabled and is_terminal(self.stream) else None)
        self.n = 0
        self.postfix = ""
        self.log_lines = log_every > 0
        self._step = max(1, round(self.total * log_every))
        self._next_line = self._step
        self._t0 = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and self.log_lines and self.total and (self.n >= self._next_line or self.n == self.total):
            self._next_line = (self.n // self._step + 1) * self._step
            extra = f"  {self.postfix}" if self.postfix else ""
            self._print(f"{self.desc + ': ' if self.desc else ''}{self.n}/{self.total} {self.unit}"
                        f"  {time.perf_counter() - self._t0:.0f}s{extra}")

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def write(self, line: str) -> None:
        """A line of its own (above the bar on a terminal); printed even when progress is off."""
        if self.bar is not None:
            self.bar.write(line)  # tqdm's write: above the bar, to standard output
        else:
            self._print(line, sys.stdout)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _print(self, line: str, stream: IO[str] | None = None) -> None:
        print(line, file=stream or self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
