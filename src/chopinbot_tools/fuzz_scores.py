"""A fuzzer for the score readers: ``python -m chopinbot_tools.fuzz_scores --cases 10000``.

Every case is a hostile MusicXML, ``.mxl`` or Humdrum ``**kern`` file, made from a real score
(:mod:`chopinbot_tools.fuzz_score_cases`, :mod:`chopinbot_tools.fuzz_score_xml`), run through the
path a user's score takes: :func:`chopinbot.dataset.prepare.process_file` (``chopinbot prepare``)
on a file with the case's suffix, and :func:`chopinbot.compose.seeds.seed_from_primer` on the
bytes with the upload's name (``generate --primer``, ``--infill``'s reader and the app's upload;
one case in ten has a name without a suffix, so its format is sniffed).  Both go through
:mod:`chopinbot.music.scores`, which converts a score in a verovio child process.

A case passes when both end in a valid result (the states' invariants, as for MIDI) or in
:class:`~chopinbot.errors.MidiError` with a clear message: one printable line of at most 300
characters that names the format (MusicXML, ``.mxl``, Humdrum, ``**kern``, or MIDI for a score
named ``.mid``), or a limit of the music that holds for any format (too many states...).
Otherwise it fails, as in :mod:`chopinbot_tools.fuzz`: ``crash`` (another exception, or the
worker process died: a verovio crash must stay in verovio's own child), ``hang`` (verovio
stopped by the fuzzer's timeout, or no answer from the worker), ``slow`` (CPU time over
``--time-cap``, verovio's children included), ``memory`` or ``invalid``.

Case ``i`` of seed ``s`` is always the same bytes; ``--case I`` runs one in-process with its
traceback and ``--save-failures DIR`` writes the failing files.  Exit code 0 when no case failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from chopinbot.cli.args import nonneg_int, positive_float, positive_int
from chopinbot.compose.seeds import seed_from_primer
from chopinbot.constants import SEED_STATES
from chopinbot.dataset.prepare import process_file
from chopinbot.dataset.store import PrepareSettings
from chopinbot.errors import MidiError
from chopinbot.music import scores
from chopinbot_tools.fuzz import _check_states, _one_line_ok, replay, run_fuzz
from chopinbot_tools.fuzz_score_cases import load_score_corpus, make_score_case

VEROVIO_TIMEOUT_S = 60.0  # wall seconds for one conversion in the fuzzer (the product allows 300)
# CPU seconds per case, both paths and verovio's children.  verovio reads about 2,800 notes (1-2 MB of
# MusicXML) per CPU second, linearly: a whole Schubert movement costs ~3 s for both paths, and a valid
# 20 MB score of 27,659 notes that a mutation made (3,458 bars) 20 s, which a 10 s cap called slow.
TIME_CAP_S = 30.0
# Refusals that are about the music, not the file format: they hold for MIDI and scores alike.
FORMAT_NEUTRAL = ("too many states", "too many key-signature changes", "the primer's last states hold no notes",
                  "not a regular file", "file too large")
FORMAT_WORDS = ("musicxml", ".mxl", "humdrum", "**kern", "midi", "score")
_FORMAT_OF = {".musicxml": ("musicxml",), ".xml": ("musicxml",), ".mxl": (".mxl", "musicxml"),
              ".krn": ("humdrum", "**kern")}


def split_payload(payload: bytes) -> tuple[str, str, bytes]:
    """(suffix, upload name, score bytes) of what :attr:`ScoreCase.data` packed."""
    suffix, name, data = payload.split(b"\0", 2)
    return suffix.decode(), name.decode(), data


def names_format(message: str, suffix: str, sniffed: bool) -> bool:
    """Whether a refusal says which kind of file it was read as."""
    low = message.lower()
    if any(low.startswith(p) or p in low for p in FORMAT_NEUTRAL):
        return True
    if sniffed:  # read by its content: any format may be named, "not a file ChopinBot reads" included
        return any(w in low for w in FORMAT_WORDS) or "chopinbot reads" in low
    return any(w in low for w in _FORMAT_OF.get(suffix, ()))


def check_score(payload: bytes) -> dict:
    """Run one packed case through ``prepare``'s and ``--primer``'s reading and classify it
    (the worker target; ``b""`` warms the imports and verovio up)."""
    scores.SCORE_TIMEOUT_S = VEROVIO_TIMEOUT_S
    if not payload:  # warm up: a two-note score
        payload = b".krn\0w.krn\0**kern\n4c\n4e\n*-\n"
    suffix, upload, data = split_payload(payload)
    settings = PrepareSettings()
    messages: list[tuple[str, bool]] = []
    result = {"outcome": "ok", "message": "", "states": 0, "segments": 0}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            res = process_file(path, settings)
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 -- anything escaping process_file is a crash
            return {"outcome": "crash", "message": f"process_file: {type(e).__name__}: {e}"[:1000]}
        if res.error is not None:
            messages.append((res.error, False))
        else:
            result["states"], result["segments"] = res.n_states, len(res.segments)
            for states, _key, _shift, _first in res.segments:
                bad = _check_states(states)
                if bad:
                    return {"outcome": "invalid", "message": f"process_file: {bad}", "states": res.n_states}
            if sum(len(s[0]) for s in res.segments) != res.n_states or res.n_states > settings.max_states:
                return {"outcome": "invalid", "message": "segments do not add up, or over the cap"}
    try:
        seed = seed_from_primer(data, SEED_STATES, settings, name=upload or "upload")
    except MidiError as e:
        messages.append((e.reason, not upload))
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001
        return {"outcome": "crash", "message": f"seed_from_primer: {type(e).__name__}: {e}"[:1000]}
    else:
        bad = _check_states(seed.states, SEED_STATES)
        if bad:
            return {"outcome": "invalid", "message": f"seed_from_primer: {bad}"}
    for m, sniffed in messages:
        if "did not finish reading" in m:
            return {"outcome": "hang", "message": m[:1000], "states": result["states"]}
        if not _one_line_ok(m):
            return {"outcome": "invalid", "message": f"unreadable error message: {m[:200]!r}"}
        if not names_format(m, suffix, sniffed):
            return {"outcome": "invalid", "message": f"the message does not name the format ({suffix}): {m[:200]}"}
    if messages:
        result["outcome"], result["message"] = "midi_error", messages[0][0]
    return result


def run_score_fuzz(cases: int = 1000, seed: int = 0, time_cap: float = TIME_CAP_S, mem_cap_mb: int = 2048,
                   jobs: int = 1, start: int = 0, save_failures: str | os.PathLike | None = None,
                   progress: bool = False, target: str = "chopinbot_tools.fuzz_scores:check_score"):
    """Cases ``start .. start + cases - 1`` of ``seed`` in ``jobs`` worker processes (a
    :class:`chopinbot_tools.fuzz.Summary`).  The watchdog's wall-time backstop leaves room for
    both verovio timeouts; its CPU limit counts the worker and the children it has waited for."""
    corpus = load_score_corpus()
    return run_fuzz(cases, seed, time_cap, mem_cap_mb, jobs, hang_cpu=max(30.0, 3 * time_cap),
                    hang_wall=2 * VEROVIO_TIMEOUT_S + 120, target=target, save_failures=save_failures,
                    start=start, progress=progress, make=lambda i: make_score_case(seed, i, corpus),
                    kind="score")


def _reproduce(seed: int, index: int, save: str | None) -> int:
    """One case in-process: its outcome, then (for a crash) the exception with its traceback."""
    case = make_score_case(seed, index, load_score_corpus())
    print(f"case #{case.index} of seed {seed}: {case.name} ({len(case.score):,} bytes, {case.suffix}, "
          f"uploaded as {case.upload_name or '(no name)'!r})")
    return replay(check_score, case.data, case.score, case.suffix, save, f"seed{seed}-case{case.index}{case.suffix}",
                  case.upload_name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chopinbot_tools.fuzz_scores", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=positive_int, default=1000, help="number of inputs (default: %(default)s)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="run seed: case i of seed s is always the same bytes")
    p.add_argument("--start", type=nonneg_int, default=0, help="first case index (default: 0)")
    p.add_argument("--case", type=nonneg_int, help="run only this case, in-process, and show its traceback")
    p.add_argument("--time-cap", type=positive_float, default=TIME_CAP_S,
                   help="CPU seconds one input may take, both paths and verovio together (default: %(default)s)")
    p.add_argument("--mem-cap-mb", type=nonneg_int, default=2048,
                   help="address-space limit of a worker (and its verovio children) in MB; 0 = none "
                        "(default: %(default)s)")
    p.add_argument("--jobs", type=positive_int, default=1, help="worker processes (default: %(default)s)")
    p.add_argument("--report", help="write the summary as JSON to this file")
    p.add_argument("--save-failures", help="write every failing input into this folder")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    if args.case is not None:
        return _reproduce(args.seed, args.case, args.save_failures)
    summary = run_score_fuzz(args.cases, args.seed, args.time_cap, args.mem_cap_mb, args.jobs, args.start,
                             args.save_failures, progress=not args.quiet)
    return summary.finish(args.report)


if __name__ == "__main__":
    sys.exit(main())
