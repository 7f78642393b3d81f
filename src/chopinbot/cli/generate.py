"""`chopinbot generate`: a seed or primer -> MIDI (+ WAV/MP3/OGG, PNG) and a summary.

The decoding flags take their defaults from :class:`~chopinbot.compose.generate.GenerateConfig`
and their ranges from the bounds declared beside it, as the web app's controls do.
"""

from __future__ import annotations

import argparse
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from chopinbot.cli.args import nonneg_int, number_in, positive_int, seed_int
from chopinbot.compose.form import FORMS
from chopinbot.compose.generate import (
    BPM_RANGE,
    DENSITY_RANGE,
    GUIDANCE_RANGE,
    KEY_MIN_P_RANGE,
    KEY_WINDOW_RANGE,
    MAX_SECONDS,
    MAX_STEPS,
    REPEAT_BOOST_RANGE,
    TEMPERATURE_RANGE,
    THRESHOLD_RANGE,
    GenerateConfig,
)
from chopinbot.compose.infill import DEFAULT_CANDIDATES, MAX_CANDIDATES, parse_span
from chopinbot.compose.repetition import CHOPIN_REPEAT_SPAN
from chopinbot.compose.request import InfillSpan, compose_piece
from chopinbot.compose.seeds import random_seed_index, seed_from_primer, seed_from_test
from chopinbot.constants import N_KEYS, SEED_STATES, WARM_STATES
from chopinbot.dataset.store import PrepareSettings
from chopinbot.device import resolve_device
from chopinbot.errors import ConfigError
from chopinbot.evaluation.figures import result_figures, span_would_help
from chopinbot.model.checkpoint import model_name, read_config, resolve_checkpoint
from chopinbot.model.formats import load_model
from chopinbot.music.controls import LOUDNESS_LEVELS
from chopinbot.music.keys import parse_key, parse_pitch
from chopinbot.notation.metre import infer_states_metre, parse_time_signature
from chopinbot.render.audio import encode_audio
from chopinbot.render.outputs import maker_label

D = GenerateConfig()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint or run folder (default: the shipped model)")
    g = p.add_argument_group("seed")
    g.add_argument("--seed-index", type=nonneg_int, help="a held-out window (see `chopinbot seeds`); default: random")
    g.add_argument("--seeds-from", metavar="DATASET",
                   help="take the seed from this prepared dataset's own held-out pieces (its test split, else its "
                        "valid one), e.g. the folder a fine-tuned model was trained on (default: the bundled "
                        "Chopin test pieces)")
    g.add_argument("--seed-len", type=positive_int, default=SEED_STATES,
                   help="states in the seed window (default: %(default)s)")
    g.add_argument("--primer", help="your own MIDI file or score (.mid, .musicxml, .mxl, .krn) to continue instead "
                                    "of a held-out piece")
    g.add_argument("--primer-states", type=positive_int, default=SEED_STATES,
                   help="use the primer's last K states as the seed (default: %(default)s)")
    g.add_argument("--context-states", type=nonneg_int, default=WARM_STATES,
                   help="before the seed, the model also reads up to this many states of the piece or primer "
                        "that precede it (default: %(default)s; 0 = the seed alone, as before)")
    g.add_argument("--include-seed", action=argparse.BooleanOptionalAction, default=D.include_seed,
                   help="start the output with the seed (default: yes)")
    g = p.add_argument_group("infill (of a --primer)")
    g.add_argument("--infill", nargs=2, metavar=("START", "END"),
                   help="compose this span of the --primer file anew, so that it leads into what follows it, and "
                        "write the whole piece with the span replaced: seconds from the file's start (12.5 20) or "
                        "bars (5b 9b: from the start of bar 5 to the start of bar 9, i.e. bars 5-8; bar 1 starts "
                        "the file; bar lengths from its time signatures, 4/4 without one); each edge moves to the "
                        "nearest note boundary. The span keeps its length, the piece its key and tempo (--steps, "
                        "--seconds, --key, --bpm do not apply)")
    g.add_argument("--infill-candidates", type=number_in(1, MAX_CANDIDATES, int), default=DEFAULT_CANDIDATES,
                   metavar="N", help="spans composed (one batch); the one under which the model finds what really "
                                     "follows most likely is kept (default: %(default)s)")
    g = p.add_argument_group("decoding")
    g.add_argument("--threshold", type=number_in(*THRESHOLD_RANGE),
                   help="deterministic: a key sounds if p >= T (the original app: 0.4)")
    g.add_argument("--temperature", type=number_in(*TEMPERATURE_RANGE), default=D.temperature,
                   help=f"sampling temperature, {TEMPERATURE_RANGE[0]:g} to {TEMPERATURE_RANGE[1]:g} "
                        "(default: %(default)s)")
    g.add_argument("--key-top-k", type=number_in(0, N_KEYS, int), default=D.key_top_k,
                   help="sampling: only the k likeliest silent keys may start (default: %(default)s; 0 = all)")
    g.add_argument("--key-min-p", type=number_in(*KEY_MIN_P_RANGE), default=D.key_min_p,
                   help="sampling: a silent key may start only if its probability is at least this fraction of "
                        "the likeliest silent key's (default: %(default)s = off)")
    g.add_argument("--key-local-p", type=number_in(*KEY_MIN_P_RANGE), default=D.key_local_p,
                   help="sampling: a silent key may start only if its probability is at least this fraction of "
                        "the likeliest silent key's within --key-window semitones (each register keeps its own "
                        "likeliest notes, so a bass survives; default: %(default)s, 0 = off)")
    g.add_argument("--key-window", type=number_in(*KEY_WINDOW_RANGE, int), default=D.key_window,
                   help="semitones either side of a key, for --key-local-p (default: %(default)s)")
    g.add_argument("--top-k", type=nonneg_int, default=D.top_k, help="durations: sample among the k likeliest values")
    g.add_argument("--top-p", type=number_in(0.0, 1.0, low_open=True), default=D.top_p,
                   help="durations: nucleus sampling (default: %(default)s; 1 = off)")
    g.add_argument("--repeat-boost", type=number_in(*REPEAT_BOOST_RANGE), default=D.repeat_boost, metavar="B",
                   help="multiply the odds of going on as a passage heard before went (the seed's or its own): "
                        "figures and motifs recur, as Chopin's do (default: %(default)s; 1 = the model's own)")
    g.add_argument("--repeat-passes", type=nonneg_int, default=D.repeat_passes, metavar="N",
                   help="the boost helps a passage (a figure or a phrase) go round at most N times in a row; after "
                        "that the model alone decides whether it goes round again (default: %(default)s; 0 = no "
                        "limit)")
    g.add_argument("--repeat-span", type=nonneg_int, default=D.repeat_span, metavar="STATES",
                   help="the boost helps a repeat go on for at most this many states in a row; after that the "
                        "model alone decides whether it goes on: a continuation that plays its primer back no "
                        f"longer than Chopin would (default: %(default)s = no limit; {CHOPIN_REPEAT_SPAN} is longer "
                        "than 97 %% of his)")
    g.add_argument("--max-hold", type=number_in(0.0, 64.0), default=D.max_hold, metavar="BEATS",
                   help="a key that has sounded this many beats without being struck again is struck again if it "
                        "goes on (default: off; 13 is the longest Chopin ever holds one)")
    g.add_argument("--chopin-runs", action=argparse.BooleanOptionalAction, default=D.chopin_runs,
                   help="stop a chord or short figure repeated more times in a row than Chopin ever does (one chord "
                        "11 times after the first, two states alternating 17; the composer struck one up to 49 "
                        "times); default: on (--no-chopin-runs: only the loop breaker's 48 states)")
    g.add_argument("--max-leap", type=number_in(1, N_KEYS, int), default=D.max_leap, metavar="SEMITONES",
                   help="the top voice climbs at most this many semitones at once (default: off)")
    g.add_argument("--notatable", action="store_true", default=D.notatable,
                   help="compose only rhythms a score writes exactly (within a beat, all on the sixteenth or all on "
                        "the triplet grid): the --score then has every onset where the MIDI has it (default: off: "
                        "about 1 onset in 100 is then written a 48th of a beat away, and the music copies more of "
                        "its seed and sounds a little more like Chopin; docs/sheet-music.md)")
    g.add_argument("--listen", action="store_true", default=D.listen,
                   help="the model's note head first learns the primer (the context and seed, up to 512 states): the "
                        "chords and voicings of your piece; it predicts held-out music better, but its music was not "
                        "more Chopin-like to the realism test (default: off; docs/training-history.md)")
    g.add_argument("--min-keys", type=number_in(0, N_KEYS, int), default=D.min_keys,
                   help="at least this many keys sound in every state (default: %(default)s; 0 allows rests)")
    g.add_argument("--max-keys", type=number_in(1, N_KEYS, int), default=D.max_keys,
                   help="at most this many (default: %(default)s)")
    g.add_argument("--random-seed", type=seed_int, help="reproducible sampling (and seed choice)")
    g.add_argument("--no-retry", action="store_false", dest="retry", default=D.retry,
                   help="keep a silent/stuck result instead of retrying")
    g = p.add_argument_group("result")
    g.add_argument("--steps", type=number_in(1, MAX_STEPS, int), default=D.steps,
                   help="states to generate (default: %(default)s)")
    g.add_argument("--seconds", type=number_in(0.0, MAX_SECONDS, low_open=True),
                   help="generate this many seconds instead of --steps")
    g.add_argument("--bpm", type=number_in(*BPM_RANGE),
                   help="tempo (default: the seed's own, read over the last 16 beats before its end)")
    g.add_argument("--key", help="output key, e.g. 'C', 'A minor', 'F#m' (default: the seed's key)")
    g.add_argument("--style", help="compose in this composer's style, for a model with a style input "
                                   "(see `chopinbot styles`; default: the model's own)")
    g.add_argument("--style-guidance", type=number_in(*GUIDANCE_RANGE), default=D.style_guidance, metavar="W",
                   help="compose further in --style than the model's own prediction goes: each step is also "
                        "computed without the style, and the draw is pushed W times the difference further "
                        "(default: 1 when --style names another style than the model's own, else off; 0 = off)")
    g.add_argument("--form", type=str.upper, choices=list(FORMS),
                   help="compose a piece in this form: ABA (the opening, a contrasting middle in another key area, "
                        "then the opening again) or AABA; --seconds is the whole length, and the piece ends on a "
                        "cadence (see docs/controls.md, Form)")
    g.add_argument("--batch", "--variations", type=positive_int, default=1, dest="batch", metavar="N",
                   help="N different continuations of the seed at once, batched (files get -1, -2, ...)")
    g = p.add_argument_group("controls (a model with controls, as the default)")
    g.add_argument("--density", type=number_in(*DENSITY_RANGE), metavar="NOTES_PER_SECOND",
                   help=f"steer the new music to this many notes per second ({DENSITY_RANGE[0]:g} to "
                        f"{DENSITY_RANGE[1]:g}; Chopin's 8-beat windows mostly lie between 3 and 15)")
    g.add_argument("--register", nargs=2, type=pitch_arg, metavar=("LOW", "HIGH"),
                   help="keep the new music between these pitches, as MIDI numbers or names (C4 = 60), e.g. "
                        "C3 C6; the model is steered there and keys outside are never struck "
                        "(see --no-confine-register)")
    g.add_argument("--confine-register", action=argparse.BooleanOptionalAction, default=D.confine_register,
                   help="with --register, never strike a key outside it (--no-confine-register: the model's "
                        "steering alone; default: confine)")
    g.add_argument("--loudness", choices=list(LOUDNESS_LEVELS),
                   help="steer the dynamics: " + ", ".join(f"{m} (mean velocity {v})" for m, v in
                                                          LOUDNESS_LEVELS.items()))
    g.add_argument("--key-guidance", type=number_in(*GUIDANCE_RANGE), default=D.key_guidance, metavar="W",
                   help="with --hold-key: push the draw W times the difference between the key asked and none "
                        "(default: %(default)s; 0, with --key-guidance-drift 0, = the key input alone: 88 %% of "
                        "excerpts in key instead of 100 %%; it halves the speed)")
    g.add_argument("--key-guidance-drift", type=number_in(*GUIDANCE_RANGE), default=D.key_guidance_drift,
                   metavar="W", help="... while the last few beats have left the key (more than a fifth from it), "
                                     "until they are back (default: %(default)s)")
    g.add_argument("--hold-key", action=argparse.BooleanOptionalAction, default=D.hold_key,
                   help="steer the music to stay in its key (--key, or the seed's) (default: yes; "
                        "--no-hold-key lets it wander as the model likes)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default="out/chopinbot.mid", help="MIDI file to write (default: %(default)s)")
    g.add_argument("--wav", action="store_true", help="also render WAV audio (FluidSynth)")
    g.add_argument("--mp3", action="store_true", help="also MP3 (ffmpeg)")
    g.add_argument("--ogg", action="store_true", help="also OGG (ffmpeg)")
    g.add_argument("--png", action="store_true", help="also a piano-roll picture")
    g.add_argument("--score", metavar="PATH", help="also the sheet music as MusicXML (.musicxml); variations get -1, "
                                                   "-2, ...; see docs/sheet-music.md")
    g.add_argument("--pdf", action="store_true", help="also the engraved score as a PDF (beside --score, or the MIDI)")
    g.add_argument("--svg", action="store_true", help="also the engraved score's pages as SVG (beside --score, or the "
                                                      "MIDI)")
    g.add_argument("--time-signature", metavar="N/D", help="write the MIDI and the score in this time signature (e.g. "
                                                          "3/4, 6/8; default: inferred from the seed and the music)")
    g.add_argument("--force", action="store_true", help="overwrite existing output files")
    g.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu; batch-1 generation is "
                                                   "faster on CPU)")
    g.add_argument("--engine", choices=("auto", "numpy", "torch"), default="auto",
                   help="how each step is computed: numpy (fastest at batch 1 on CPU), torch (the model's own "
                        "forward; any device or export), auto (default: numpy at batch 1 where it applies); "
                        "same music either way")


def pitch_arg(text: str) -> int:
    try:
        return parse_pitch(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def config_from_args(args: argparse.Namespace) -> GenerateConfig:
    """The :class:`GenerateConfig` of the flags: every field with a flag of its name (``retry`` is
    ``--no-retry``'s), the others at their defaults."""
    cfg = GenerateConfig(**{f.name: getattr(args, f.name) for f in fields(GenerateConfig) if hasattr(args, f.name)})
    if cfg.register is not None:
        cfg.register = tuple(cfg.register)
    return cfg


def settings_of(model_path):
    """The state settings a model was trained with (so seeds match its data)."""
    cfg = read_config(resolve_checkpoint(model_path))
    return PrepareSettings(**cfg["dataset_settings"]) if "dataset_settings" in cfg else PrepareSettings()


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() not in (".mid", ".midi"):
        raise ConfigError(f"--out must name a .mid file, got {out}")
    if args.score and Path(args.score).suffix.lower() not in (".musicxml", ".xml"):
        raise ConfigError(f"--score must name a .musicxml or .xml file, got {args.score}")
    if args.time_signature:
        parse_time_signature(args.time_signature)  # a malformed one fails before the model loads
    if args.primer and (args.seed_index is not None or args.seeds_from):
        raise ConfigError("give --primer, or --seed-index/--seeds-from, not both")
    if args.infill:
        _check_infill_args(args)
    if args.infill and args.form:
        raise ConfigError("--form composes a whole piece: it does not apply to --infill")
    outputs = _output_paths(out, args)
    for p in outputs:
        if p.exists() and not p.is_file():
            raise ConfigError(f"{p} exists and is not a file")
    if not args.force:
        existing = [str(p) for p in outputs if p.exists()]
        if existing:
            raise ConfigError(f"{existing[0]} exists; use --force to overwrite")
    cfg = config_from_args(args)
    cfg.validate()
    model = load_model(args.model, resolve_device(args.device))
    model.config.with_style(cfg.style)  # an unknown style fails here, before any work
    settings = settings_of(args.model)
    if args.infill:
        return _run_infill(args, model, cfg, settings, out)
    if args.primer:
        seed = seed_from_primer(args.primer, args.primer_states, settings, context_states=args.context_states)
    else:
        idx = args.seed_index
        if idx is None:
            minor = parse_key(args.key).minor if args.key else None
            idx = random_seed_index(np.random.default_rng(args.random_seed), args.seed_len, minor, settings,
                                    args.seeds_from)
        seed = seed_from_test(idx, args.seed_len, settings, context_states=args.context_states,
                              seeds_from=args.seeds_from)
    results = compose_piece(model, cfg, seed, form=args.form, batch=args.batch, engine=args.engine)
    label = maker_label(model_name(args.model), cfg.style or model.config.default_style or None)
    for i, res in enumerate(results):
        res.label = label  # titles and summaries name the model and the style
        mid = out if len(results) == 1 else out.with_name(f"{out.stem}-{i + 1}{out.suffix}")
        written = _write_files(res, mid, args)
        print(res.summary())
        figures = result_figures(res)
        print("measured: " + figures.summary())
        if figures.beyond_chopin_run is not None and not (cfg.chopin_runs and cfg.loop_states):
            print("  (--chopin-runs with the loop breaker on stops a chord or figure where Chopin's longest run stops)")
        if span_would_help(figures, cfg, len(res.generated)):
            print(f"  (mostly played back from the primer: --repeat-span {CHOPIN_REPEAT_SPAN} helps a repeat for "
                  "no longer than Chopin's, and the model composes more of its own)")
        print("wrote " + ", ".join(str(w) for w in written))
    return 0


def _write_files(res, mid: Path, args: argparse.Namespace) -> list[Path]:
    """Write a piece's MIDI at ``mid`` and, as the flags ask, its PNG, WAV, MP3 and OGG beside it, and its score."""
    signature = parse_time_signature(args.time_signature) if getattr(args, "time_signature", None) else None
    if signature is not None and hasattr(res, "metre"):  # the MIDI's bars as the score's
        res.metre = replace(infer_states_metre(res.states, signature), pickup_unit=1.0)
    written = [res.save_midi(mid)]
    for path in _score_paths(mid, args):
        written.append(res.save_score(path, signature))
    if args.png:
        written.append(res.save_png(mid.with_suffix(".png")))
    if args.wav or args.mp3 or args.ogg:
        wav = res.save_wav(mid.with_suffix(".wav"))
        written.append(wav)
        for flag, ext in ((args.mp3, ".mp3"), (args.ogg, ".ogg")):
            if flag:
                written.append(encode_audio(wav, mid.with_suffix(ext)))
    return written


def _score_paths(mid: Path, args) -> list[Path]:
    """The score files of the piece whose MIDI is ``mid``: --score (numbered as the MIDI is), --pdf, --svg."""
    score = getattr(args, "score", None)
    base = mid
    if score:
        base = Path(score)
        if mid.stem != Path(args.out).stem:  # a variation: -1, -2, ...
            base = base.with_name(f"{base.stem}{mid.stem[len(Path(args.out).stem):]}{base.suffix}")
    paths = [base] if score else []
    paths += [base.with_suffix(ext) for flag, ext in ((getattr(args, "pdf", False), ".pdf"),
                                                       (getattr(args, "svg", False), ".svg")) if flag]
    return paths


def _output_paths(out: Path, args) -> list[Path]:
    stems = [out] if args.batch == 1 else [out.with_name(f"{out.stem}-{i + 1}{out.suffix}") for i in range(args.batch)]
    paths = []
    for s in stems:
        paths.append(s)
        for flag, ext in ((args.png, ".png"), (args.wav or args.mp3 or args.ogg, ".wav"), (args.mp3, ".mp3"),
                          (args.ogg, ".ogg")):
            if flag:
                paths.append(s.with_suffix(ext))
        paths += _score_paths(s, args)
    return paths


def _check_infill_args(args: argparse.Namespace) -> None:
    parse_span(*args.infill)  # a malformed START or END fails before the model loads
    if not args.primer:
        raise ConfigError("--infill needs --primer FILE: the piece whose span is composed anew")
    if args.batch != 1:
        raise ConfigError("--infill writes one piece: --batch does not apply (--infill-candidates sets how many "
                          "spans are composed to choose from)")
    if args.seconds is not None:
        raise ConfigError("--infill composes the span's own length: --seconds does not apply")
    if args.key is not None or args.bpm is not None:
        raise ConfigError("--infill keeps the piece's key and tempo: --key and --bpm do not apply")


def _run_infill(args: argparse.Namespace, model, cfg: GenerateConfig, settings: PrepareSettings, out: Path) -> int:
    start, end, unit = parse_span(*args.infill)
    span = InfillSpan(args.primer, start, end, unit, args.infill_candidates, args.context_states)
    [res] = compose_piece(model, cfg, span=span, settings=settings)
    res.label = maker_label(model_name(args.model), cfg.style or model.config.default_style or None)
    written = _write_files(res, out, args)
    print(res.summary())
    print("wrote " + ", ".join(str(w) for w in written))
    return 0
