"""Realism: can a classifier tell generated excerpts from real Chopin?

Single statistics (pitch range, polyphony, ...) can each sit within one
standard deviation of the real pieces' while the pieces, taken as a whole,
are far apart.  A *classifier two-sample test* sees the joint picture: a
random forest learns to tell two sets of fixed-length excerpts apart from
their musical features (:mod:`chopinbot.evaluation.excerpts`),
cross-validated so that no piece lies on both sides of a fold; accuracy near
0.5 means the sets look alike, near 1.0 that they are easy to tell apart.

:func:`evaluate_realism` runs it for ``chopinbot evaluate``:

* **generated**: each window of ``excerpt_seconds`` in a held-out piece (test,
  or valid when choosing between models) is preceded by a seed of
  ``seed_len`` states; every seed is continued for ``continuation_seconds``,
  cut into excerpts, grouped with the seed's piece.
* **Chopin**: the excerpts of the training pieces plus those held-out
  windows (never the other held-out split).  The held-out pieces alone are
  too few to learn "Chopin" from: with the 5 test pieces (50 excerpts)
  Mozart/Beethoven/Brahms vs Chopin scored 0.59 ± 0.05 and two halves of
  Chopin 0.48 ± 0.31 (sd over repeats); with the 42 pieces of train + test
  (316 excerpts) 0.70 ± 0.02 and 0.48 ± 0.06.  A model that copies long
  passages of its training pieces would look more like this reference; the
  report's originality section measures that.
* **calibration**: two random halves of the Chopin pieces (about 0.5), and
  Mozart, Beethoven and Brahms from piano-midi.de (shipped in
  ``data/piano_midi_de``) vs Chopin, together and one by one.

Every row draws the same number of excerpts per class (the number of
generated excerpts: 150 from the 50 test seeds; the 25 valid seeds give 75,
or 150 with 120-s continuations), so that the rows can be compared.  Real
excerpts are played at their own mean tempo (``steady``), as a generated
piece plays at its seed's: the model writes no rubato, and the test judges
the notes.

Measured with the first shipped model (2x128 LSTM; test seeds, 150 excerpts
per class, 5 repeats): generated vs Chopin 1.00 (0.98 with velocities
ignored), Chopin halves 0.48, Mozart/Beethoven/Brahms 0.70, Mozart alone
0.90, Beethoven 0.70, Brahms 0.70.

Torch-free: the caller generates (``continue_seed``); this module measures.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from chopinbot.compose.seeds import Seed
from chopinbot.constants import PACKAGE_DIR, SEED_STATES, WARM_STATES
from chopinbot.dataset.prepare import process_file
from chopinbot.dataset.store import DEFAULT_SETTINGS, Dataset, PrepareSettings
from chopinbot.evaluation import musicstats
from chopinbot.evaluation.classifier import ClassifierSettings as ClassifierSettings  # re-exported
from chopinbot.evaluation.classifier import classifier_test as classifier_test
from chopinbot.evaluation.classifier import halves_test as halves_test
from chopinbot.evaluation.classifier import two_sets_test as two_sets_test
from chopinbot.evaluation.composed import composed_realism, format_composed_section
from chopinbot.evaluation.continuations import held_out_seeds as held_out_seeds  # re-exported
from chopinbot.evaluation.continuations import performed_chopin as performed_chopin
from chopinbot.evaluation.continuations import run_continuations
from chopinbot.evaluation.continuations import split_excerpts as split_excerpts
from chopinbot.evaluation.excerpts import (
    EXCERPT_SECONDS,
    FEATURE_NAMES,
    VELOCITY_FEATURES,
    Excerpt,
    bass_pulse,
    detected_key,
    feature_matrix,
    state_excerpts,
)
from chopinbot.evaluation.replay import REPLAY_NGRAM, history_index, replay_share
from chopinbot.music.keys import within_a_fifth
from chopinbot.music.states import States, transpose_states
from chopinbot.progress import Progress

# Mozart, Beethoven and Brahms from piano-midi.de (same sequencer as the Chopin
# corpus), shipped for the calibration row "another composer vs Chopin".
CALIBRATION_DIR = PACKAGE_DIR / "data" / "piano_midi_de"
CALIBRATION_COMPOSERS = ("Mozart", "Beethoven", "Brahms")

# The statistics table of the report, in display order.
STAT_LABELS: dict[str, str] = {
    "pitch_range": "pitch range (semitones)",
    "n_pitches": "distinct pitches",
    "pitch_p05": "lowest notes (5th percentile, MIDI)",
    "pitch_p95": "highest notes (95th percentile, MIDI)",
    "vel_mean": "velocity mean",
    "vel_sd": "velocity sd",
    "spread_mean": "melody–bass spread (highest minus lowest key sounding at an onset)",
    "struck_span_mean": "chord span (highest minus lowest key struck together)",
    "top_abs_interval": "top-voice interval (mean \\|semitones\\|)",
    "top_leap_share": "top-voice leaps of 7+ semitones (share)",
    "interval_4gram_recurrence": "recurring top-voice 4-interval patterns (share)",
    "bass_pulse": "bass pulse (bass inter-onset intervals within 10 % of the one before, share)",
    "chroma_self_similarity": "pitch-class self-similarity",
    "key_clarity": "key clarity (profile correlation)",
    "key_hold": "key hold (within a fifth of the stated key)",
    "notes_per_second": "notes per second",
}

ContinueSeed = Callable[[Seed, int], States]  # (seed, random seed) -> the new states, in the seed's key, timed


@dataclass
class RealismSettings:
    split: str = "test"  # held-out pieces whose seeds are continued: "test" to report, "valid" to choose
    excerpt_seconds: float = EXCERPT_SECONDS
    continuation_seconds: float = 60.0  # each seed is continued this long (three excerpts): drift shows
    seed_len: int = SEED_STATES
    steady: bool = True  # real excerpts at their own mean tempo, as generated ones play
    composers: tuple[str, ...] = CALIBRATION_COMPOSERS
    test: ClassifierSettings = field(default_factory=ClassifierSettings)
    composed: bool = True  # also the composed-music rows (evaluation.composed): replay, context 0, 60-s excerpts


# --- excerpts of the real pieces -------------------------------------------------------


def composer_excerpts(composers: Sequence[str] = CALIBRATION_COMPOSERS, seconds: float = EXCERPT_SECONDS,
                      settings: PrepareSettings = DEFAULT_SETTINGS, folder: Path = CALIBRATION_DIR,
                      steady: bool = True) -> list[Excerpt]:
    """Excerpts of the shipped calibration pieces, built into states exactly as the
    corpus is (then put back into their own key) and grouped by file."""
    out = []
    for composer in composers:
        for path in sorted((folder / composer).glob("*.mid")):
            res = process_file(path, settings)
            for states, key, shift, _ in res.segments:
                original, _ = transpose_states(states, -shift)
                out += state_excerpts(original, f"{composer}/{path.name}", key, seconds, steady=steady)
    return out


# --- statistics and seed fidelity ---------------------------------------------------


def excerpt_stats(excerpt: Excerpt, features: np.ndarray | None = None) -> dict[str, float]:
    """The :data:`STAT_LABELS` statistics of one excerpt (``key_hold`` is 1/0, NaN without a stated key);
    ``features``: its row of :func:`feature_matrix`, if already computed."""
    row = features if features is not None else feature_matrix([excerpt])[0]
    out = {k: float(row[FEATURE_NAMES.index(k)]) for k in STAT_LABELS if k in FEATURE_NAMES}
    hold = math.nan
    if excerpt.key is not None and len(excerpt.notes):
        hold = float(within_a_fifth(detected_key(excerpt.notes), excerpt.key))
    out["key_hold"] = hold
    out["bass_pulse"] = bass_pulse(excerpt.notes)
    return {k: out[k] for k in STAT_LABELS}


def compare_excerpt_stats(generated: Sequence[dict], real: Sequence[dict], other: Sequence[dict] = ()) -> list[dict]:
    """Rows of :func:`musicstats.compare_stats` (generated vs real), in :data:`STAT_LABELS`
    order, each with the other composers' mean added as ``other_mean``."""
    rows = musicstats.compare_stats(list(generated), list(real), order=list(STAT_LABELS))
    for row in rows:
        vals = np.array([d[row["stat"]] for d in other], np.float64)
        vals = vals[~np.isnan(vals)]
        row["other_mean"] = float(vals.mean()) if vals.size else math.nan
    return rows


def seed_fidelity(generated: np.ndarray, true: np.ndarray, other: np.ndarray, reference: np.ndarray) -> dict:
    """How much a continuation resembles its seed's true continuation, against another piece.

    Row ``i`` of ``generated``, ``true`` and ``other`` are the features of the
    continuation of seed ``i``, of what really followed that seed, and of an
    excerpt of another piece.  Features are standardized by ``reference`` (the
    real excerpts); a distance is the root mean square of the standardized
    differences.  A model that follows its seed has ``gen_to_true`` well below
    ``gen_to_other``; ``true_to_other`` is the same distance between the two
    real excerpts, for scale.
    """
    mu, sd = np.nanmean(reference, axis=0), np.nanstd(reference, axis=0)
    sd = np.where(sd > 1e-9, sd, 1.0)

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sqrt(np.nanmean(((a - mu) / sd - (b - mu) / sd) ** 2, axis=1))

    g_t, g_o, t_o = dist(generated, true), dist(generated, other), dist(true, other)
    i = FEATURE_NAMES.index("pitch_mean")
    shift = generated[:, i] - true[:, i]
    return {"n": int(len(generated)), "gen_to_true": float(np.mean(g_t)), "gen_to_other": float(np.mean(g_o)),
            "true_to_other": float(np.mean(t_o)), "closer_to_true_share": float(np.mean(g_t < g_o)),
            "mean_pitch_shift": float(np.nanmean(shift)), "mean_abs_pitch_shift": float(np.nanmean(np.abs(shift)))}


def seed_replay(seed: Seed, generated: States, true: States | None, n: int = REPLAY_NGRAM
                ) -> tuple[float, float, float, float]:
    """The share of ``n``-state n-grams of a continuation found verbatim in what the model read
    before it (the seed and its context): for the generated continuation (its first ``len(true)``
    states) and for the true one; then the same found at any transposition (within an octave
    either way), since the repeats input and the repeat boost copy transposed passages too.
    A continuation that passes for Chopin by replaying its own primer shows a generated share
    above the true one."""
    shift = seed.home.shift_to(seed.key)  # both continuations are in seed.key
    length = len(true) if true is not None else len(generated)
    shares = []
    for transposed in (False, True):
        index = history_index(seed.history, shift, transposed)
        shares += [replay_share(generated[:length], index, n),
                   replay_share(true, index, n) if true is not None else math.nan]
    return shares[0], shares[1], shares[2], shares[3]


GAP_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def feature_gaps(generated: np.ndarray, real: np.ndarray) -> list[dict]:
    """Where generated excerpts differ from real ones, feature by feature (what the classifier sees):
    each feature's means, the real sd, the difference in real sds (``z``) and both sides' 10/25/50/75/90th
    percentiles, the largest ``|z|`` first."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN feature (e.g. no top voice)
        mean_g, mean_r, sd_r = np.nanmean(generated, 0), np.nanmean(real, 0), np.nanstd(real, 0)
        z = (mean_g - mean_r) / np.where(sd_r > 0, sd_r, np.nan)
        qg = np.nanquantile(generated, GAP_QUANTILES, axis=0) if len(generated) else None
        qr = np.nanquantile(real, GAP_QUANTILES, axis=0) if len(real) else None
    order = np.argsort(-np.nan_to_num(np.abs(z)), kind="stable")
    return [{"feature": FEATURE_NAMES[j], "generated_mean": float(mean_g[j]), "real_mean": float(mean_r[j]),
             "real_sd": float(sd_r[j]), "z": float(z[j]),
             "generated_quantiles": qg[:, j].tolist() if qg is not None else [],
             "real_quantiles": qr[:, j].tolist() if qr is not None else []} for j in order]


def _replay_summary(replay: list[tuple[float, float, float, float]]) -> dict:
    pairs = np.array(replay, np.float64).reshape(-1, 4)

    def mean(i: int) -> float:
        return float(np.nanmean(pairs[:, i])) if len(pairs) else math.nan

    return {"n": int(len(pairs)), "ngram": REPLAY_NGRAM, "generated": mean(0), "true": mean(1),
            "generated_transposed": mean(2), "true_transposed": mean(3)}


# --- the report's realism section ----------------------------------------------------


def evaluate_realism(ds: Dataset, continue_seed: ContinueSeed, settings: RealismSettings | None = None,
                     progress: bool = True) -> dict:
    """The realism section of ``chopinbot evaluate`` (see the module docstring): rows of
    classifier tests, the statistics table and seed fidelity, as a JSON-ready dict
    (``{"skipped": reason}`` when the held-out pieces hold no window)."""
    rs = settings or RealismSettings()
    t0 = time.perf_counter()
    seeds, true = held_out_seeds(ds, rs.split, rs.seed_len, rs.excerpt_seconds, rs.steady)
    if not seeds:
        return {"skipped": f"no {rs.excerpt_seconds:g}-s window after a {rs.seed_len}-state seed in the "
                           f"{rs.split} pieces"}
    chopin = split_excerpts(ds, "train", rs.excerpt_seconds, rs.steady) + true  # true: the split's own windows
    other = composer_excerpts(rs.composers, rs.excerpt_seconds, ds.settings, steady=rs.steady)
    n_rows = 3 + len(rs.composers) + (len(rs.composers) > 1)
    continuations = run_continuations(continue_seed, seeds, groups=[t.group for t in true],
                                      excerpt_seconds=rs.excerpt_seconds, progress=progress, desc="realism")
    bar = Progress(n_rows, desc="realism", unit="rows", enabled=progress, leave=False)
    gen: list[Excerpt] = []
    first = []  # (seed index, index in gen of its first excerpt)
    replay: list[tuple[float, float, float, float]] = []  # per seed: its n-grams found in the seed's history
    for i, (c, real) in enumerate(zip(continuations, true)):
        if c.excerpts:
            first.append((i, len(gen)))
            replay.append(seed_replay(c.seed, c.states, real.states))
        gen += c.excerpts
    gen_seconds = time.perf_counter() - t0
    Fg, Fc, Fo = feature_matrix(gen, rs.excerpt_seconds), feature_matrix(chopin, rs.excerpt_seconds), \
        feature_matrix(other, rs.excerpt_seconds)
    gg, gc, go = [e.group for e in gen], [e.group for e in chopin], [e.group for e in other]
    n = len(gen)
    rows: dict[str, dict] = {}

    def row(name: str, result: dict) -> None:
        rows[name] = result
        bar.update()

    main = "generated vs Chopin"
    row(main, two_sets_test(Fg, gg, Fc, gc, rs.test, per_class=n))
    row("generated vs Chopin, velocities ignored",
        two_sets_test(Fg, gg, Fc, gc, rs.test, [f for f in FEATURE_NAMES if f not in VELOCITY_FEATURES], per_class=n))
    row("Chopin vs Chopin (two random halves of the pieces)", halves_test(Fc, gc, rs.test, per_class=n))
    composer_of = np.array([g.split("/")[0] for g in go])
    if len(rs.composers) > 1:
        row(f"{', '.join(rs.composers)} vs Chopin", two_sets_test(Fo, go, Fc, gc, rs.test, per_class=n))
    for c in rs.composers:
        m = composer_of == c
        row(f"{c} vs Chopin", two_sets_test(Fo[m], np.asarray(go)[m], Fc, gc, rs.test, per_class=n))
    bar.close()
    stats = compare_excerpt_stats([excerpt_stats(e, f) for e, f in zip(gen, Fg)],
                                  [excerpt_stats(e, f) for e, f in zip(chopin, Fc)],
                                  [excerpt_stats(e, f) for e, f in zip(other, Fo)])
    # seed fidelity: the first excerpt of each continuation against its true window (the last
    # len(true) rows of the Chopin features) and against a random excerpt of another Chopin piece
    rng = np.random.default_rng(rs.test.seed)
    offset = len(chopin) - len(true)
    gi = np.array([j for _, j in first], np.int64)
    ti = np.array([offset + i for i, _ in first], np.int64)
    oi = np.array([rng.choice(np.flatnonzero(np.asarray(gc) != true[i].group)) for i, _ in first], np.int64)
    fidelity = seed_fidelity(Fg[gi], Fc[ti], Fc[oi], Fc) if first else {"n": 0}
    return {"split": rs.split, "excerpt_seconds": rs.excerpt_seconds, "continuation_seconds": rs.continuation_seconds,
            "steady_tempo": rs.steady, "seed_len": rs.seed_len, "n_seeds": len(seeds),
            "n_excerpts": {"generated": n, "chopin": len(chopin), "chopin_held_out": len(true), "other": len(other)},
            "n_chopin_pieces": len(set(gc)), "main_row": main, "rows": rows, "statistics": stats,
            "seed_fidelity": fidelity, "seed_replay": _replay_summary(replay), "generation_seconds": gen_seconds,
            "feature_gaps": feature_gaps(Fg, Fc),
            "seconds": time.perf_counter() - t0, "test_settings": asdict(rs.test),
            **({"composed": composed_realism(ds, rs, continue_seed, seeds, true, continuations, Fg, chopin, Fc,
                                             progress)} if rs.composed else {})}


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def format_realism_section(realism: dict) -> str:
    """The Markdown body of the report's realism section."""
    if "skipped" in realism:
        return f"Skipped: {realism['skipped']}.\n"
    ne = realism["n_excerpts"]
    t = realism["test_settings"]
    lines = [f"A random forest ({t['trees']} trees) tells {realism['excerpt_seconds']:g}-s excerpts apart from "
             f"{len(FEATURE_NAMES)} musical features (register, voicing, rhythm, dynamics, tonality, harmony, "
             f"repetition, polyphony), cross-validated by piece ({t['folds']} folds), with as many excerpts of each "
             f"class, over {t['repeats']} random seeds (mean ± sd). Generated: {realism['n_seeds']} seeds (the "
             f"{realism['seed_len']} states before each {realism['excerpt_seconds']:g}-s window of the "
             f"{realism['split']} pieces) continued for {realism['continuation_seconds']:g} s, {ne['generated']} "
             f"excerpts. Chopin: {ne['chopin']} excerpts of {realism['n_chopin_pieces']} pieces (the training pieces "
             f"and the {realism['split']} pieces; the held-out pieces alone are too few to learn Chopin from), "
             f"{'each played at its own mean tempo' if realism['steady_tempo'] else 'with their rubato'}. "
             "Accuracy 0.5: indistinguishable; 1.0: always told apart.", "",
             "| pair | excerpts per class | pieces | accuracy | AUC |", "|---|---|---|---|---|"]
    for name, r in realism["rows"].items():
        if "skipped" in r:
            lines.append(f"| {name} | {r.get('n_per_class', 0)} | – | skipped: {r['skipped']} | – |")
            continue
        lines.append(f"| {name} | {r['n_per_class']} | {r['n_pieces']} | {r['accuracy_mean']:.2f} ± "
                     f"{r['accuracy_sd']:.2f} | {r['auc_mean']:.2f} ± {r['auc_sd']:.2f} |")
    main = realism["rows"].get(realism["main_row"], {})
    if main.get("top_features"):
        top = ", ".join(f"{f} ({w:.3f})" for f, w in main["top_features"][:8])
        lines += ["", f"What tells generated from Chopin most (mean impurity importance): {top}."]
    lines += ["", "Per excerpt, generated against Chopin (flagged: outside Chopin's mean ± 1 sd); key hold: the "
              "share of excerpts whose detected key lies within one fifth of the stated key (the piece's key "
              "segment; for a continuation, its seed's).", "",
              "| statistic | generated (mean ± sd) | Chopin (mean ± sd) | other composers (mean) | flagged |",
              "|---|---|---|---|---|"]
    for r in realism["statistics"]:
        lines.append(f"| {STAT_LABELS[r['stat']]} | {_fmt(r['gen_mean'])} ± {_fmt(r['gen_sd'])} | "
                     f"{_fmt(r['real_mean'])} ± {_fmt(r['real_sd'])} | {_fmt(r['other_mean'])} | "
                     f"{'⚠' if r['flagged'] else ''} |")
    s = realism.get("seed_fidelity", {})
    if s.get("n"):
        lines += ["", f"**Seed fidelity** ({s['n']} seeds; root mean square distance of the standardized features "
                  f"of the first {realism['excerpt_seconds']:g} s): a continuation lies {s['gen_to_true']:.2f} from "
                  f"what really followed its seed and {s['gen_to_other']:.2f} from an excerpt of another piece "
                  f"(closer to the true continuation for {s['closer_to_true_share']:.0%} of the seeds; two real "
                  f"excerpts of different pieces: {s['true_to_other']:.2f}). Its mean pitch is "
                  f"{s['mean_pitch_shift']:+.1f} semitones from the true continuation's (mean \\|difference\\| "
                  f"{s['mean_abs_pitch_shift']:.1f})."]
    r = realism.get("seed_replay", {})
    if r.get("n"):
        lines += ["", f"**Replaying the primer** ({r['n']} seeds): {_fmt(r['generated'])} of a continuation's "
                  f"{r['ngram']}-state n-grams occur verbatim in what the model read before it (the seed and up to "
                  f"{WARM_STATES} states of context), against {_fmt(r['true'])} for what really followed the same "
                  "seeds" + (f"; at any transposition, {_fmt(r['generated_transposed'])} against "
                             f"{_fmt(r['true_transposed'])}" if "generated_transposed" in r else "") + "."]
    if "composed" in realism:
        lines += ["", format_composed_section(realism["composed"], realism["rows"].get(realism["main_row"]))]
    return "\n".join(lines) + "\n"
