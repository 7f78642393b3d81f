"""The `chopinbot prepare` command as a user runs it."""

from __future__ import annotations

import subprocess
import sys
import time

from chopinbot.cli import main


def test_prepare_command_prints_table_and_totals(tmp_path, capsys):
    assert main(["prepare", "--out", str(tmp_path / "ds"), "--plot"]) == 0
    out = capsys.readouterr().out
    assert "chpn-p2.mid" in out and "A minor" in out
    assert "48 files (48 works) used, 0 skipped" in out
    assert (tmp_path / "ds" / "key_usage.png").stat().st_size > 10_000


def test_prepare_wall_time_under_two_seconds(tmp_path):
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "chopinbot", "prepare", "--out", str(tmp_path / "ds"), "--quiet"],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    # the 2 s target is measured by `make bench`; this only catches gross regressions on a busy CI machine
    assert wall < 15.0


def test_bad_flag_is_one_line_exit_2(capsys):
    try:
        main(["prepare", "--jobs", "-1"])
    except SystemExit as e:
        assert e.code == 2
    err = capsys.readouterr().err
    assert "must be at least 1" in err and err.count("\n") <= 3


def test_missing_input_is_a_clear_error(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "ds")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_help_lists_every_command():
    r = subprocess.run([sys.executable, "-m", "chopinbot", "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for name in ("prepare", "train", "generate", "evaluate", "seeds", "plot", "app", "bench"):
        assert name in r.stdout


def test_prepare_a_bundled_corpus_by_name(tmp_path, capsys):
    assert main(["prepare", "--corpus", "chopin", "--out", str(tmp_path / "ds"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "235 files (182 works) used, 0 skipped" in out
    assert main(["prepare", str(tmp_path), "--corpus", "chopin", "--out", str(tmp_path / "x")]) == 2
    assert "not both" in capsys.readouterr().err
