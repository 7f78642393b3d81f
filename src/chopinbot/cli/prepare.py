"""`chopinbot prepare`: MIDI files -> a dataset folder, with a summary table."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from chopinbot.cli.args import nonneg_float, positive_int
from chopinbot.constants import DEFAULT_CORPUS, DEFAULT_DATASET_DIR, GRID_PER_BEAT, MIN_STATE_BEATS, PEDAL_MODE
from chopinbot.errors import ConfigError

# The bundled corpora, as chopinbot.dataset.corpus.CORPORA names them (kept here so that `--help` stays fast;
# tests/test_corpus.py checks the two agree).
CORPORA = ("chopin48", "chopin", "piano")
CORPUS_HELP = {
    "chopin48": "48 Chopin pieces performed (piano-midi.de)",
    "chopin": "+ 185 Chopin works in first editions (NIFC)",
    "piano": "+ 24 other composers (piano-midi.de)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*",
                   help="MIDI files, scores (.krn, .musicxml, .mxl) or folders (default: the bundled corpus --corpus)")
    p.add_argument("--corpus", choices=list(CORPORA), default=None,
                   help=f"a bundled corpus, when no inputs are given (default: {DEFAULT_CORPUS}); "
                        + "; ".join(f"{k}: {v}" for k, v in CORPUS_HELP.items()))
    p.add_argument("--composer", metavar="NAME",
                   help="the composer of input files that no corpus.tsv describes (default: unknown): the style a "
                        "model trained on them learns. A name of a composer the bundled models know (\"Franz "
                        "Schubert\", \"F. Schubert\", schubert) is that style; any other makes a new style, "
                        "and prepare says which")
    p.add_argument("--out", default=str(DEFAULT_DATASET_DIR), help="dataset folder (default: %(default)s)")
    p.add_argument("--pedal", choices=["ignore", "apply"], default=PEDAL_MODE,
                   help="sustain pedal: ignore it, or let notes ring until it is released (default: %(default)s)")
    p.add_argument("--grid", type=positive_int, default=GRID_PER_BEAT,
                   help="snap boundaries to 1/GRID of a beat (default: %(default)s)")
    p.add_argument("--min-state-beats", type=nonneg_float, default=MIN_STATE_BEATS,
                   help="merge shorter states into their neighbour (default: %(default).4f, two grid steps)")
    p.add_argument("--jobs", type=positive_int, default=1, help="parallel worker processes (default: 1)")
    p.add_argument("--shard", type=_shard, metavar="I/N",
                   help="prepare only part I of N (0-based), e.g. on N machines; join with --merge")
    p.add_argument("--merge", action="store_true",
                   help="the inputs are prepared parts (dataset folders): join them into --out")
    p.add_argument("--strict", action="store_true", help="stop at the first unusable file")
    p.add_argument("--force", action="store_true", help="rebuild even if nothing changed")
    p.add_argument("--plot", action="store_true", help="also write the key-usage histogram PNG")
    p.add_argument("--quiet", action="store_true", help="print only the totals")


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= I < N")
    return i, n


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top, so that `chopinbot prepare --help` does not
    # pay for numpy and symusic (0.2 s here; the help alone takes 0.05 s).
    from chopinbot.dataset.prepare import prepare
    from chopinbot.dataset.store import PrepareSettings, merge_datasets

    if args.merge:
        if len(args.inputs) < 1:
            raise ConfigError("--merge needs the prepared part folders as inputs")
        m = merge_datasets(args.inputs, args.out)
        print(f"merged {len(args.inputs)} parts: {len(m['files'])} files, {m['rows']:,} states -> {args.out}")
        return 0

    settings = PrepareSettings(grid_per_beat=args.grid, pedal=args.pedal, min_state_beats=args.min_state_beats)
    t0 = time.perf_counter()
    if args.inputs and args.corpus:
        raise ConfigError("give input files or --corpus, not both")
    rep = prepare(args.inputs or None, args.out, settings, jobs=args.jobs, strict=args.strict, force=args.force,
                  progress=not args.quiet, shard=args.shard, corpus=args.corpus, composer=args.composer)
    wall = time.perf_counter() - t0
    m = rep.manifest
    if not args.quiet:
        print(format_table(m))
    if rep.composer_style is not None:
        print(rep.composer_style.describe())
    for s in m["skipped"]:
        print(f"skipped {s['name']}: {s['reason']}")
    tot = m["totals"]
    n_files = sum(t["pieces"] for t in tot.values())
    secs = sum(t["seconds"] for t in tot.values())
    states = sum(t["states"] for t in tot.values())
    moves = sum(f["octave_moves"] for f in m["files"])
    works = len({f.get("work", f["name"]) for f in m["files"]})
    print(
        f"{'prepared' if rep.rebuilt else 'up to date:'} {n_files} files ({works} works) used, "
        f"{len(m['skipped'])} skipped; "
        f"{states:,} states, {secs / 60:.1f} min of music; octave moves {moves}; "
        + ", ".join(f"{k} {v['pieces']} pieces / {v['states']:,} states" for k, v in tot.items())
        + f"; {wall:.2f} s -> {Path(args.out) / 'manifest.json'}"
    )
    for warning in rep.warnings:
        print(f"warning: {warning}")
    if args.plot:
        from chopinbot.render.plots import plot_key_usage  # matplotlib only when a plot is asked for

        png = plot_key_usage(m, Path(args.out) / "key_usage.png")
        print(f"key-usage histogram: {png}")
    return 0


def format_table(manifest: dict) -> str:
    rows = [("file", "work", "composer", "key", "shift", "states", "duration", "moves", "split")]
    for f in manifest["files"]:
        keys = f["key"] + (f" (+{len(f['segments']) - 1} seg.)" if len(f["segments"]) > 1 else "")
        mins, secs = divmod(int(round(f["seconds"])), 60)
        rows.append((f["name"], f.get("work", ""), f.get("composer", ""), keys, f"{f['shift']:+d}", str(f["states"]),
                     f"{mins}:{secs:02d}", str(f["octave_moves"]), f["split"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
