"""Make examples/schubert-scores/: ten Schubert piano pieces as compressed MusicXML (.mxl).

The README's fine-tuning walkthrough starts from a folder of scores, as a user's would.  These are
made from the bundled piano-midi.de MIDI files (Bernd Krueger, CC BY-SA 3.0 DE) with music21
(not a ChopinBot dependency: ``pip install music21==10.5.1`` to run this), its MIDI reader
quantizing to sixteenths and triplet eighths, then written as .mxl.  Run once; the files are
committed (428 KB).  ChopinBot itself reads them with verovio (chopinbot.music.scores).

    python scripts/make_example_scores.py   # ~2 min
"""

from __future__ import annotations

import json
from pathlib import Path

import music21  # noqa: I001 -- the one script that uses it

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "chopinbot" / "data" / "piano_midi_de" / "Schubert"
OUT = ROOT / "examples" / "schubert-scores"
PIECES = {f"schumm-{i}": f"D780-moment-musical-{i}" for i in range(1, 7)} | {
    f"schuim-{i}": f"D899-impromptu-{i}" for i in range(1, 5)}
# held out as the bundled corpus holds them out (data/splits.json): the shipped model never trained on them
SPLITS = {"valid": ["D780-moment-musical-4.mxl"], "test": ["D780-moment-musical-5.mxl"]}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for source, name in PIECES.items():
        score = music21.converter.parse(SOURCE / f"{source}.mid", quantizePost=True, quarterLengthDivisors=(4, 3))
        score.write("mxl", fp=OUT / f"{name}.mxl")
        print(name)
    (OUT / "splits.json").write_text(json.dumps(SPLITS) + "\n")


if __name__ == "__main__":
    main()
