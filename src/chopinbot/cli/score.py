"""`chopinbot score`: a MIDI, MusicXML or Humdrum file -> its states -> a score (MusicXML, PDF, SVG)."""

from __future__ import annotations

import argparse
from pathlib import Path

from chopinbot.errors import ConfigError
from chopinbot.music.scores import NOTE_SUFFIXES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help=f"the piece ({', '.join(NOTE_SUFFIXES)})")
    p.add_argument("--out", required=True, help="the MusicXML file to write (.musicxml or .xml)")
    p.add_argument("--pdf", action="store_true", help="also the engraved pages as a PDF beside it")
    p.add_argument("--svg", action="store_true", help="also the engraved pages as SVG beside it (-2.svg, ...)")
    p.add_argument("--png", action="store_true", help="also the first page as a PNG beside it")
    p.add_argument("--time-signature", metavar="N/D", help="write the piece in this time signature (e.g. 3/4, 6/8); "
                                                          "default: the file's, or inferred when it has none")
    p.add_argument("--bars", choices=("file", "infer"), default="file",
                   help="where the bar lines lie: as the file's time signatures count them from its start (file, "
                        "default), or inferred from the music (infer: for a score whose MIDI does not show its "
                        "pickup)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")


def run(args: argparse.Namespace) -> int:
    from chopinbot.notation.engrave import write_score_file  # here: verovio loads when the command runs
    from chopinbot.notation.files import file_score
    from chopinbot.notation.metre import parse_time_signature

    out = Path(args.out)
    if out.suffix.lower() not in (".musicxml", ".xml"):
        raise ConfigError(f"--out must name a .musicxml or .xml file, got {out}")
    signature = parse_time_signature(args.time_signature) if args.time_signature else None
    extra = [out.with_suffix(s) for flag, s in ((args.pdf, ".pdf"), (args.svg, ".svg"), (args.png, ".png")) if flag]
    if not args.force:
        for p in [out, *extra]:
            if p.exists():
                raise ConfigError(f"{p} exists; use --force to overwrite")
    text, info = file_score(args.file, signature, args.bars)
    written = write_score_file(text, out)
    for p in extra:
        written += write_score_file(text, p)
    print(f"{len(info.pitches)} notes in {info.key.name}, {info.metre.label}; "
          f"{(info.staff == 1).mean():.0%} in the right hand")
    print("wrote " + ", ".join(str(w) for w in written))
    return 0
