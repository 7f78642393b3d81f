"""Progress bars on a terminal only; plain lines in a log (chopinbot.progress)."""

from __future__ import annotations

import io

from chopinbot.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_gets_plain_lines_without_carriage_returns():
    log = io.StringIO()
    with Progress(100, desc="prepare", unit="files", stream=log) as bar:
        for _ in range(100):
            bar.update()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 10  # one line a tenth of the work
    assert lines[0].startswith("prepare: 10/100 files") and lines[-1].startswith("prepare: 100/100 files")


def test_log_every_zero_leaves_the_log_to_the_callers_lines(capsys):
    log = io.StringIO()
    bar = Progress(50, unit="step", stream=log, log_every=0)
    for _ in range(50):
        bar.update()
    bar.write("epoch 1 done")
    bar.close()
    assert log.getvalue() == ""
    assert capsys.readouterr().out == "epoch 1 done\n"


def test_terminal_gets_a_tqdm_bar():
    term = _Terminal()
    with Progress(20, desc="train", unit="step", stream=term, mininterval=0) as bar:
        for _ in range(20):
            bar.update()
    assert "\r" in term.getvalue() and "20/20" in term.getvalue()


def test_disabled_progress_prints_nothing():
    term = _Terminal()
    with Progress(20, stream=term, enabled=False) as bar:
        for _ in range(20):
            bar.update()
    assert term.getvalue() == ""
