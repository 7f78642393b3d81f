"""Bundle the NIFC first editions of Chopin's piano works as MIDI, one edition per work.

A dev-time script, run once by hand; it reads the shared data folder, which the library and the
tests never do, and writes ``src/chopinbot/data/chopin_nifc/``: ``<work>.mid`` per work,
``corpus.tsv``, ``LICENSE.txt`` (copied) and ``README.md`` (the credit, the rule, the counts)::

    .venv/bin/python scripts/bundle_nifc.py [--source /work/shared/data/chopin-nifc] [--out DIR]

Edition rule: for each row of ``works.tsv``, the first file of its ``files`` column whose
Humdrum source (``kern/<name>.krn``) ``chopinbot.music.scores.read_score`` converts; the next
file when it does not; the work is left out when none does.  (Two rows list no file, because the
source's own conversion failed on them: their ``kern/<no>-*.krn`` files are tried.)  The MIDI is what read_score gives:
notes, tempo map and key signatures (start and every change), one track named after the edition;
repeats not expanded (see chopinbot.music.verovio_worker).
Every file is read back with ``read_midi`` and must give the same notes and key signatures.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from pathlib import Path

import symusic

from chopinbot.errors import MidiError
from chopinbot.io_utils import atomic_write_text
from chopinbot.music.midi import PianoNotes, notes_to_score, read_midi, write_score
from chopinbot.music.scores import read_score

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = Path("/work/shared/data/chopin-nifc")
DEFAULT_OUT = ROOT / "src" / "chopinbot" / "data" / "chopin_nifc"
CREDIT = "First Editions of Fryderyk Chopin's Music, © 2017–2021 The Fryderyk Chopin Institute (nifc.pl), CC BY 4.0"


def notes_score(notes: PianoNotes, track_name: str) -> symusic.Score:
    """The notes as a one-track MIDI score with their tempo map and key signatures."""
    tpq = notes.ticks_per_quarter
    score = notes_to_score(notes.start / tpq, notes.end / tpq, notes.pitch, notes.velocity,
                           bpm=float(notes.tempo_qpm[0]), ticks_per_quarter=tpq, track_name=track_name)
    score.tempos.clear()
    for tick, qpm in zip(notes.tempo_ticks, notes.tempo_qpm):
        score.tempos.append(symusic.Tempo(int(tick), float(qpm)))
    for tick, sharps, minor in notes.key_signatures:
        score.key_signatures.append(symusic.KeySignature(int(tick), int(sharps), int(minor)))
    return score


def same_notes(a: PianoNotes, b: PianoNotes) -> bool:
    """Same notes as far as MIDI can say: where two notes of one pitch overlap, a reader may pair
    their note-offs the other way round, so the ends are compared per pitch, not per note."""
    if a.ticks_per_quarter != b.ticks_per_quarter or len(a) != len(b):
        return False
    onsets_a = sorted(zip(a.start.tolist(), a.pitch.tolist(), a.velocity.tolist()))
    onsets_b = sorted(zip(b.start.tolist(), b.pitch.tolist(), b.velocity.tolist()))
    return onsets_a == onsets_b and sorted(zip(a.pitch.tolist(), a.end.tolist())) == sorted(
        zip(b.pitch.tolist(), b.end.tolist()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    began = time.perf_counter()
    with open(args.source / "works.tsv", newline="", encoding="utf-8") as f:
        works = list(csv.DictReader(f, delimiter="\t"))
    rows, failures, notes_total, n_key_changes, read_seconds = [], [], 0, 0, 0.0
    for work in works:
        editions = [Path(name).stem for name in work["files"].split(",") if name.strip()]
        if not editions:  # works whose every edition failed in the source's own conversion: try them here
            editions = sorted(p.stem for p in (args.source / "kern").glob(f"{work['no']}-*.krn"))
        reasons = []
        for edition in editions:
            t0 = time.perf_counter()
            try:
                notes = read_score(args.source / "kern" / f"{edition}.krn")
            except MidiError as e:
                reasons.append(f"{edition}: {e.reason}")
                continue
            finally:
                read_seconds += time.perf_counter() - t0
            target = args.out / f"{work['work']}.mid"
            write_score(notes_score(notes, f"Piano (NIFC {edition})"), target)
            back = read_midi(target)
            if not same_notes(notes, back) or back.key_signatures != notes.key_signatures:
                raise SystemExit(f"{target}: reading the written MIDI back does not give the same notes and keys")
            rows.append((target.name, work["work"], "Chopin", "nifc", work["title"].strip()))
            notes_total += len(notes)
            n_key_changes += max(len(notes.key_signatures) - 1, 0)
            if reasons:
                failures.append(f"{work['work']}: used {edition}; failed first: {'; '.join(reasons)}")
            break
        else:
            failures.append(f"{work['work']}: left out: " + ("; ".join(reasons) or "no edition file listed"))
    written = {row[0] for row in rows}
    for stale in args.out.glob("*.mid"):  # from an earlier run with another choice
        if stale.name not in written:
            stale.unlink()
    lines = ["file\twork\tcomposer\tsource\ttitle"] + ["\t".join(row) for row in rows]
    atomic_write_text(args.out / "corpus.tsv", "\n".join(lines) + "\n")
    shutil.copyfile(args.source / "LICENSE.txt", args.out / "LICENSE.txt")
    atomic_write_text(args.out / "README.md", readme(len(works), len(rows), notes_total, n_key_changes, failures))
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"{len(rows)} of {len(works)} works, {notes_total:,} notes, {n_key_changes} key changes, "
          f"{size / 1e6:.2f} MB in {args.out}; read_score {read_seconds:.1f} s, "
          f"all {time.perf_counter() - began:.1f} s")
    for failure in failures:
        print("  ", failure)


def readme(n_works: int, n_files: int, n_notes: int, n_key_changes: int, failures: list[str]) -> str:
    failed = "\n".join(f"- {f}" for f in failures) or "- none"
    return f"""# Chopin's piano works from the first editions (NIFC), as MIDI

{CREDIT}. Digital scores: https://chopinscores.org,
github pl-wnifc/humdrum-chopin-first-editions (commit 95dfb10). LICENSE.txt is theirs, copied.
Keep this credit next to the files wherever they are shipped.

{n_files} of {n_works} solo-piano works, one MIDI file per work: `<work>.mid`, where `work` is the
opus and number (`op028-15` is the Prelude op. 28 no. 15; `other-...` the works without an opus).
`corpus.tsv` gives each file's work, composer, source and title (the title as printed in that edition).

**Edition rule.** Most works come in two or three first editions (a file per edition). For each
work, the first edition file listed for it in the source's `works.tsv` whose Humdrum score
converts, else the next (the two early polonaises in G minor and G-sharp minor, which that list
leaves empty, from their only Humdrum files). Each file's track is named after its edition
(`Piano (NIFC 028-1-BH-015)`).

**What is in the files.** Made by `scripts/bundle_nifc.py` with `chopinbot.music.scores.read_score`
(verovio 6.4.1 reading the Humdrum `**kern` scores): the notes of the score on its beat grid,
120 ticks per quarter note, **velocity 90 everywhere (no dynamics)**, no pedal, one tempo unless
the score marks one (no rubato), grace notes and ornaments as verovio plays them, **repeats not
expanded** (every bar once, as printed), no time signatures. Key signatures: at the start and
at every change ({n_key_changes} changes in all), as printed; the one signature left out is the
change to three flats in op. 56 no. 1, which the source writes as `*k[fn-cn-gn-dn-an-b-e-a-]`
(read as eight flats, so dropped). {n_notes:,} notes in all.

Works not converted:
{failed}
"""


if __name__ == "__main__":
    main()
