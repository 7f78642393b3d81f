"""Measure the sheet-music output (docs/sheet-music.md): round trip, the NIFC editions, engraving, the grid.

A dev-time script (it reads the shared NIFC Humdrum sources, which the library never does)::

    PYTHONPATH=src python scripts/score_check.py generated [--n 50] [--seconds 30] [--notatable]  # round trip, ...
    PYTHONPATH=src python scripts/score_check.py grid [--n 24] [--notatable]        # --no-include-seed files
    PYTHONPATH=src python scripts/score_check.py testpieces                         # round trip on the test pieces
    PYTHONPATH=src python scripts/score_check.py nifc [--works 12]                  # bars, spelling, staff
    PYTHONPATH=src python scripts/score_check.py timing                             # 60 s of music -> PDF
    PYTHONPATH=src python scripts/score_check.py bad                                # a 5/48-beat note
    PYTHONPATH=src python scripts/score_check.py pictures                           # docs/sheet-music-*.png

Prints the figures and writes them to docs/score-check.json (one key per command).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import symusic

from chopinbot.constants import BUNDLED_CORPUS_DIR, GRID_PER_BEAT, N_KEYS
from chopinbot.io_utils import atomic_write_text
from chopinbot.music.scores import read_score
from chopinbot.music.states import States, notes_to_states, states_to_notes
from chopinbot.notation.engrave import pdf_bytes, svg_pages
from chopinbot.notation.files import file_spec
from chopinbot.notation.score import build_score
from chopinbot.notation.spelling import fifth_name

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "docs" / "score-check.json"
NIFC = Path("/work/shared/data/chopin-nifc")
G = GRID_PER_BEAT
MEI = "{http://www.music-encoding.org/ns/mei}"
XML_ID = "{http://www.w3.org/XML/1998/namespace}id"
PC = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
ALTER = {"s": 1, "f": -1, "n": 0, "ss": 2, "x": 2, "ff": -2}
# 12 works of different kinds (first edition files as works.tsv lists them first); none of them was used to
# tune the hand split or the metre inference (tuned on op. 6/1, 9/2, 28/4, 64/2 and the works in METRE_TUNING)
NIFC_WORKS = ["op007-1", "op010-5", "op015-2", "op026-1", "op027-1", "op028-7", "op028-20", "op034-2",
              "op037-1", "op050-3", "op063-3", "op070-1"]


def save(key: str, figures: dict) -> None:
    data = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}
    data[key] = figures
    atomic_write_text(OUT_JSON, json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(json.dumps(figures, indent=1))


# ----------------------------------------------------------------------------- round trip


def round_trip(spec, workdir: Path, name: str) -> dict:
    """Write the spec's MusicXML, read it back with music/scores.py, compare notes with the states'."""
    text, info = build_score(spec)
    path = workdir / f"{name}.musicxml"
    path.write_text(text)
    back = read_score(path)
    # the score's time: verovio's MIDI starts at the first bar written (the pickup bar, if any)
    tpq = back.ticks_per_quarter
    pickup = int(round(info.metre.pickup * G))
    theirs = np.stack([back.start * G / tpq + pickup, back.end * G / tpq + pickup, back.pitch], axis=1)
    notes = states_to_notes(spec.states)  # the states' own lengths (before the score tidied releases)
    mine = np.stack([info.starts, info.starts + np.round((notes[:, 1] - notes[:, 0]) * G), info.pitches], axis=1)
    a = Counter((int(round(s)), int(p)) for s, p in zip(mine[:, 0], mine[:, 2]))
    b = Counter((int(round(s)), int(p)) for s, p in zip(theirs[:, 0], theirs[:, 2]))
    exact = sum((a & b).values())
    near = _near_matches(mine, theirs, 2)
    # durations: matched by onset and pitch
    dur_mine = {(int(round(s)), int(p)): int(round(e - s)) for s, e, p in mine}
    dur_back = {(int(round(s)), int(p)): int(round(e - s)) for s, e, p in theirs}
    diffs = [abs(dur_mine[k] - dur_back[k]) for k in dur_mine if k in dur_back]
    # the same through verovio's timemap (exact quarter stamps): its MIDI, which music/scores.py reads, has 120
    # ticks a quarter, where a 64th is 7.5 ticks: the reader rounds, and the rounding drifts within a bar
    timemap_notes, _ = edition_notes(path, "musicxml")
    c = Counter((int(round(n["t"] * G)) + pickup, n["pitch"]) for n in timemap_notes)
    exact_timemap = sum((a & c).values())
    pages = None
    verovio_ok = True
    try:
        pages = len(svg_pages(text))
    except Exception:  # noqa: BLE001 -- counted
        verovio_ok = False
    return {"notes": int(sum(a.values())), "read_back": int(sum(b.values())), "exact": int(exact), "within_2": near,
            "exact_timemap": int(exact_timemap),
            "dur_exact": int(sum(d == 0 for d in diffs)), "dur_within_1": int(sum(d <= 1 for d in diffs)),
            "dur_within_3": int(sum(d <= 3 for d in diffs)), "dur_within_6": int(sum(d <= 6 for d in diffs)),
            "dur_within_12": int(sum(d <= 12 for d in diffs)),
            "dur_max": int(max(diffs) if diffs else 0),
            "moved": info.stats.moved_boundaries, "cut": info.stats.cut_notes, "pages": pages, "verovio_ok": verovio_ok,
            "metre": info.metre.label}


def _near_matches(a: np.ndarray, b: np.ndarray, tol: int) -> int:
    """Notes of ``a`` with a note of the same pitch in ``b`` starting within ``tol`` grid steps (each used once);
    both (start step, end step, pitch)."""
    free: dict[int, list[int]] = {}
    for s, p in zip(np.round(b[:, 0]).astype(int), b[:, 2].astype(int)):
        free.setdefault(int(p), []).append(int(s))
    hit = 0
    for s, p in zip(np.round(a[:, 0]).astype(int), a[:, 2].astype(int)):
        cands = free.get(int(p), [])
        best = min(cands, key=lambda x: abs(x - s), default=None)
        if best is not None and abs(best - s) <= tol:
            cands.remove(best)
            hit += 1
    return hit


def sum_rows(rows: list[dict]) -> dict:
    tot = {k: sum(r[k] for r in rows) for k in ("notes", "read_back", "exact", "within_2", "exact_timemap",
                                                "dur_exact", "dur_within_1",
                                                "dur_within_3", "dur_within_6", "dur_within_12", "moved",
                                                "cut")}
    tot["pieces"] = len(rows)
    tot["pieces_exact"] = sum(r["exact"] == r["notes"] == r["read_back"] for r in rows)
    tot["onsets_exact_share"] = round(tot["exact"] / max(1, tot["notes"]), 4)
    tot["onsets_within_2_steps_share"] = round(tot["within_2"] / max(1, tot["notes"]), 4)
    tot["onsets_exact_timemap_share"] = round(tot["exact_timemap"] / max(1, tot["notes"]), 4)
    tot["durations_exact_share"] = round(tot["dur_exact"] / max(1, tot["exact"]), 4)
    tot["durations_within_1_step_share"] = round(tot["dur_within_1"] / max(1, tot["exact"]), 4)
    tot["durations_within_6_steps_share"] = round(tot["dur_within_6"] / max(1, tot["exact"]), 4)
    # a sixteenth: the grid a tidied release goes to (notation.rhythm.tidy_releases)
    tot["durations_within_12_steps_share"] = round(tot["dur_within_12"] / max(1, tot["exact"]), 4)
    tot["dur_max_steps"] = max(r["dur_max"] for r in rows)
    tot["verovio_ok"] = sum(r["verovio_ok"] for r in rows)
    tot["metres"] = dict(Counter(r["metre"] for r in rows))
    return tot


def cmd_generated(args) -> None:
    from chopinbot.compose.generate import GenerateConfig, generate
    from chopinbot.compose.seeds import list_seeds, seed_from_test
    from chopinbot.model.formats import load_model
    from chopinbot.notation.piece import piece_spec

    model = load_model(None, "cpu")
    n_seeds = len(list_seeds())
    rng = np.random.default_rng(0)
    rows, grid = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.n):
            idx = int(rng.integers(n_seeds))
            include = i % 2 == 1
            res = generate(model, seed_from_test(idx), GenerateConfig(seconds=args.seconds, random_seed=i,
                                                                      include_seed=include, notatable=args.notatable))
            row = round_trip(piece_spec(res), Path(tmp), f"g{i}")
            row["seed"] = idx
            rows.append(row)
            if not include:
                grid.append(grid_check(res, Path(tmp), i))
            print(i, row, grid[-1] if not include else "")
    figures = sum_rows(rows)
    figures["grid"] = {"files": len(grid), "beat_most_common": sum(g["on_beat"] for g in grid),
                       "quarter_from_tick_0_most_common": sum(g["on_quarter_from_tick_0"] for g in grid),
                       "bars_agree": sum(g["bars_agree"] for g in grid), "rows": grid}
    save(f"generated_{args.n}" + ("_notatable" if args.notatable else ""), figures)


def cmd_grid(args) -> None:
    """24 continuations written without their seed: the beat and the bar lines of each MIDI file."""
    from chopinbot.compose.generate import GenerateConfig, generate
    from chopinbot.compose.seeds import list_seeds, seed_from_test
    from chopinbot.model.formats import load_model

    model = load_model(None, "cpu")
    n_seeds = len(list_seeds())
    rng = np.random.default_rng(1)
    rows = []
    for i in range(args.n):
        idx = int(rng.integers(n_seeds))
        res = generate(model, seed_from_test(idx), GenerateConfig(seconds=args.seconds, random_seed=100 + i,
                                                                  include_seed=False, notatable=args.notatable))
        rows.append({"seed": idx, **grid_check(res, Path("."), i)})
        print(i, rows[-1])
    save(f"grid_{args.n}" + ("_notatable" if args.notatable else ""),
         {"files": len(rows), "beat_most_common": sum(r["on_beat"] for r in rows),
          "quarter_from_tick_0_most_common": sum(r["on_quarter_from_tick_0"] for r in rows),
          "bars_agree": sum(r["bars_agree"] for r in rows), "rows": rows})


def grid_check(res, workdir: Path, i: int) -> dict:
    """A --no-include-seed file: is the most common onset position the beat, and do the score's bar lines
    (verovio's timemap of our MusicXML) fall where the MIDI's time signatures put them?"""
    import verovio

    midi = symusic.Score.from_midi(res.midi_bytes())
    tpq = midi.ticks_per_quarter
    ons = np.concatenate([t.notes.numpy()["time"] for t in midi.tracks])
    sigs = sorted((int(t.time), int(t.numerator), int(t.denominator)) for t in midi.time_signatures)
    end = int(max(t.notes.numpy()["time"].max() + t.notes.numpy()["duration"].max() for t in midi.tracks))
    bars, t, k = [], 0, 0
    while t <= end:
        while k + 1 < len(sigs) and sigs[k + 1][0] <= t:
            k += 1
        bars.append(t)
        t += sigs[k][1] * 4 * tpq // sigs[k][2]
    # the position within the beat as a DAW counts it, from the bar line: a quarter (x/4) or an eighth (x/8)
    bar_of = np.asarray(bars)[np.searchsorted(bars, ons, side="right") - 1]
    main = max(sigs, key=lambda s: s[1] * 4 / s[2])
    beat = tpq if main[2] <= 4 else tpq // 2
    pos = ((ons - bar_of) % beat) * G // beat
    on_beat = int(np.bincount(pos, minlength=G).argmax() == 0)
    naive = int(np.bincount((ons % tpq) * G // tpq, minlength=G).argmax() == 0)  # ticks mod a quarter
    bars = [b / tpq for b in bars]
    tk = verovio.toolkit()
    tk.setOptions({"breaks": "none"})
    tk.loadData(res.musicxml())
    tm = tk.renderToTimemap({"includeMeasures": True})
    score_bars = sorted({round(e["qstamp"], 4) for e in tm if e.get("measureOn")})
    n = min(len(bars), len(score_bars))
    agree = n > 0 and np.allclose(np.round(bars[:n], 4), score_bars[:n])
    return {"on_beat": on_beat, "on_quarter_from_tick_0": naive, "bars_agree": int(agree), "signatures": sigs[:2],
            "bars": n}


def cmd_testpieces(args) -> None:
    split = json.loads((BUNDLED_CORPUS_DIR / "splits.json").read_text())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in split["test"]:
            spec, _ = file_spec(BUNDLED_CORPUS_DIR / name)
            row = round_trip(spec, Path(tmp), Path(name).stem)
            row["piece"] = name
            rows.append(row)
            print(row)
    figures = sum_rows(rows)
    figures["rows"] = rows
    save("test_pieces", figures)


# ----------------------------------------------------------------------------- the NIFC editions


def edition_notes(kern: Path, input_format: str = "humdrum") -> tuple[list[dict], list[float]]:
    """The edition's notes (onset in quarters, MIDI pitch, letter, alteration, staff) and bar starts,
    from verovio's MEI and timemap of the Humdrum file (every bar once, as read_score reads it)."""
    import verovio

    tk = verovio.toolkit()
    tk.setOptions({"expandNever": True, "breaks": "none"})
    tk.setInputFrom(input_format)
    tk.loadData(kern.read_text(encoding="utf-8"))
    tm = tk.renderToTimemap({"includeMeasures": True})
    onset = {}
    for e in tm:
        for ident in e.get("on", []):
            onset.setdefault(ident, float(e["qstamp"]))
    bars = sorted({float(e["qstamp"]) for e in tm if e.get("measureOn")})
    root = ET.fromstring(tk.getMEI())
    notes = []
    for staff in root.iter(f"{MEI}staff"):
        n = int(staff.get("n", "0"))
        for note in staff.iter(f"{MEI}note"):
            ident = note.get(XML_ID)
            if ident not in onset or note.get("grace"):
                continue
            acc = note.get("accid") or note.get("accid.ges")
            for a in note.iter(f"{MEI}accid"):
                acc = a.get("accid") or a.get("accid.ges") or acc
            alter = ALTER.get(acc or "n", 0)
            pname, octv = note.get("pname"), note.get("oct")
            if pname is None or octv is None:
                continue
            pitch = 12 * (int(octv) + 1) + PC[pname] + alter
            notes.append({"t": onset[ident], "pitch": pitch, "step": pname.upper(), "alter": alter, "staff": n})
    return notes, bars


def cmd_nifc(args) -> None:
    import csv

    with open(NIFC / "works.tsv", newline="", encoding="utf-8") as f:
        works = {w["work"]: w for w in csv.DictReader(f, delimiter="\t")}
    rows = []
    for work in NIFC_WORKS[: args.works]:
        first = works[work]["files"].split(",")[0].strip()
        kern = NIFC / "kern" / f"{Path(first).stem}.krn"
        truth, bars = edition_notes(kern)
        row = {"work": work, "file": kern.name}
        for mode in ("file", "infer", "none"):
            if mode == "none":
                spec, first_beat = file_spec(kern, bars="file")
                spec.metre = None
            else:
                spec, first_beat = file_spec(kern, bars=mode)
            _, info = build_score(spec)
            ours = [(b - info.metre.offset + first_beat) for b in info.metre.bar_lines(info.ends.max() / G)]
            lo, hi = first_beat, info.ends.max() / G - info.metre.offset + first_beat
            inside = [b for b in bars if lo - 1e-6 <= b <= hi - 1e-6]
            hit = sum(any(abs(b - o) < 1e-3 for o in ours) for b in inside)
            row[f"bars_{mode}"] = [hit, len(inside), info.metre.label]
        # spelling and staff (with the file's bars: they do not depend on the bars)
        spec, first_beat = file_spec(kern, bars="infer")
        _, info = build_score(spec)
        t_ours = (info.starts - round(info.metre.offset * G)) / G + first_beat
        index: dict[tuple[int, int], list[int]] = {}
        for k, (t, p) in enumerate(zip(t_ours, info.pitches)):
            index.setdefault((int(round(t * G)), int(p)), []).append(k)
        matched = spell_ok = staff_ok = 0
        misses: Counter = Counter()
        for n in truth:
            key = None
            for d in (0, -1, 1, -2, 2):
                cand = (int(round(n["t"] * G)) + d, n["pitch"])
                if index.get(cand):
                    key = cand
                    break
            if key is None:
                continue
            k = index[key].pop()
            matched += 1
            step, alter = fifth_name(int(info.fifths[k]))
            if (step, alter) == (n["step"], n["alter"]):
                spell_ok += 1
            else:
                misses[f"{n['step']}{'#' * n['alter'] if n['alter'] > 0 else 'b' * -n['alter']}->"
                       f"{step}{'#' * alter if alter > 0 else 'b' * -alter}"] += 1
            staff_ok += int(info.staff[k] == n["staff"])
        row.update({"edition_notes": len(truth), "matched": matched, "spelling_ok": spell_ok, "staff_ok": staff_ok,
                    "spelling_misses": dict(misses.most_common(5))})
        rows.append(row)
        print(row)
    tot = {"works": len(rows)}
    for mode in ("file", "infer", "none"):
        hit = sum(r[f"bars_{mode}"][0] for r in rows)
        n = sum(r[f"bars_{mode}"][1] for r in rows)
        tot[f"bars_{mode}_share"] = round(hit / max(1, n), 4)
        tot[f"works_bars_{mode}_95"] = sum(r[f"bars_{mode}"][0] >= 0.95 * r[f"bars_{mode}"][1] for r in rows)
    m = sum(r["matched"] for r in rows)
    tot.update({"notes_matched": m, "edition_notes": sum(r["edition_notes"] for r in rows),
                "spelling_share": round(sum(r["spelling_ok"] for r in rows) / max(1, m), 4),
                "staff_share": round(sum(r["staff_ok"] for r in rows) / max(1, m), 4), "rows": rows})
    save("nifc", tot)


# ----------------------------------------------------------------------------- timing, bad input


def cmd_timing(args) -> None:
    import os

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    spec, _ = file_spec(BUNDLED_CORPUS_DIR / "chpn-p24.mid")
    beats = np.cumsum(spec.states.seconds.astype(np.float64))
    n = int(np.searchsorted(beats, 60.0)) + 1
    spec.states = spec.states[:n]
    times, cpu = [], []
    for _ in range(3):
        c0, t0 = time.process_time(), time.perf_counter()
        text, _ = build_score(spec)
        t1 = time.perf_counter()
        pages = svg_pages(text)
        t2 = time.perf_counter()
        pdf = pdf_bytes(pages)
        t3 = time.perf_counter()
        times.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
        cpu.append(time.process_time() - c0)
    best = min(times, key=lambda x: x[-1])
    save("timing", {"piece": "chpn-p24.mid, first 60 s", "states": n, "pages": len(pages), "pdf_bytes": len(pdf),
                    "musicxml_s": round(best[0], 3), "verovio_svg_s": round(best[1], 3),
                    "cairosvg_pdf_s": round(best[2], 3), "total_s": round(best[3], 3),
                    "all_runs_total_s": [round(t[-1], 3) for t in times],
                    "all_runs_cpu_s": [round(c, 3) for c in cpu]})


def cmd_bad(args) -> None:
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logging.getLogger("chopinbot.notation").addHandler(Keep())
    keys = np.zeros((4, N_KEYS), bool)
    keys[:, 39] = True  # C4 held through, struck in every state
    onsets = keys.copy()
    beats = np.array([1.0, 5 / 48, 43 / 48, 1.0], np.float32)  # a 5/48-beat note, and what completes its beat
    st = States(keys, onsets, beats, beats * 0.5, np.full(4, 60, np.uint8))
    from chopinbot.music.keys import Key
    from chopinbot.notation.score import ScoreSpec

    text, info = build_score(ScoreSpec(st, Key(0, False), 120.0))
    pages = svg_pages(text)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "bad.musicxml"
        p.write_text(text)
        back = states_to_notes(notes_to_states(read_score(p))[0])
    save("bad_input", {"states_beats_x48": [round(b * 48) for b in beats.tolist()], "pages": len(pages),
                       "moved": info.stats.moved_boundaries, "log": records,
                       "read_back_onsets_x48": [int(round(x * 48)) for x in back[:, 0]]})


def cmd_pictures(args) -> None:
    """The first pages shown in docs/sheet-music.md: a generated piece and a real work (NIFC op. 28 no. 7)."""
    from chopinbot.compose.generate import GenerateConfig, generate
    from chopinbot.compose.seeds import seed_from_test
    from chopinbot.model.formats import load_model
    from chopinbot.notation.engrave import png_bytes

    model = load_model(None, "cpu")
    res = generate(model, seed_from_test(args.seed_index), GenerateConfig(seconds=40, random_seed=args.random_seed))
    (ROOT / "docs" / "sheet-music-generated.png").write_bytes(png_bytes(res.score_pages(max_pages=1)[0], 1000))
    res.save_score(ROOT / "docs" / "sheet-music-generated.musicxml")
    text, _ = build_score(file_spec(NIFC / "kern" / "028-1-BH-007.krn")[0])
    (ROOT / "docs" / "sheet-music-real.png").write_bytes(png_bytes(svg_pages(text, 1)[0], 1000))
    print(res.summary())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generated")
    g.add_argument("--n", type=int, default=50)
    g.add_argument("--seconds", type=float, default=30.0)
    g.add_argument("--notatable", action="store_true", help="compose with GenerateConfig.notatable (as the app does)")
    gr = sub.add_parser("grid")
    gr.add_argument("--n", type=int, default=24)
    gr.add_argument("--seconds", type=float, default=30.0)
    gr.add_argument("--notatable", action="store_true", help="compose with GenerateConfig.notatable")
    sub.add_parser("testpieces")
    n = sub.add_parser("nifc")
    n.add_argument("--works", type=int, default=12)
    sub.add_parser("timing")
    sub.add_parser("bad")
    pic = sub.add_parser("pictures")
    pic.add_argument("--seed-index", type=int, default=10)
    pic.add_argument("--random-seed", type=int, default=7)
    args = p.parse_args()
    {"generated": cmd_generated, "grid": cmd_grid, "testpieces": cmd_testpieces, "nifc": cmd_nifc, "timing": cmd_timing,
     "bad": cmd_bad, "pictures": cmd_pictures}[args.cmd](args)


if __name__ == "__main__":
    main()
