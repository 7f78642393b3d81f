"""Make examples/schubert-scores/: six Schubert piano pieces as compressed MusicXML (.mxl).

The README's fine-tuning walkthrough starts from a folder of scores, as a user's would.  These are
made from the bundled piano-midi.de MIDI files (Bernd Krueger, CC BY-SA 3.0 DE) with music21
(not a ChopinBot dependency: ``pip install music21==10.5.1`` to run this), its MIDI reader
quantizing to sixteenths and triplet eighths, then written as .mxl.  Run once; the files are
committed (about 400 KB).  ChopinBot itself reads them with verovio (chopinbot.music.scores).

They are the six Schubert pieces the bundled corpus holds out (data/splits.json): the shipped model
never trained on any of them, so fine-tuning on four of them is new music to it, and the other two
judge it.

    python scripts/make_example_scores.py   # ~2 min
"""

from __future__ import annotations

import json
from pathlib import Path

import music21  # noqa: I001 -- the one script that uses it

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "chopinbot" / "data" / "piano_midi_de" / "Schubert"
OUT = ROOT / "examples" / "schubert-scores"
PIECES = {"schumm-4": "D780-moment-musical-4", "schumm-5": "D780-moment-musical-5",
          "schub_d760_3": "D760-wanderer-fantasy-3", "schubert_d850_1": "D850-sonata-1",
          "schubert_d850_3": "D850-sonata-3", "schubert_d935_1": "D935-impromptu-1"}
# the two shortest held out again: one to choose the epoch, one to judge the result
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
