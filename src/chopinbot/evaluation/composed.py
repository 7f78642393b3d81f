"""Realism of the music the model composes itself, apart from what it replays (issue 27).

The realism test's main row mixes two kinds of excerpt: those that replay
their primer (Chopin's own bars, hard to tell from Chopin) and those the
model composed.  Beside it, :func:`composed_realism` gives:

* the replay share of every excerpt (:mod:`chopinbot.evaluation.replay`), generated
  and real, as two distributions (quartiles, the share above 0.8);
* realism over the *composed* excerpts (replay <= 0.2) on both sides;
* a row from the 16-state seed alone (context 0: nothing to replay), all
  its excerpts and its composed ones;
* phrase-scale realism: the whole 60-s continuation as one excerpt against
  60-s excerpts of the same real pieces, since phrases and cadences do not fit in 20 s;
  and the replay distributions at that scale (``replay_phrase``), the issue's own measure: how often a
  whole minute is mostly played back, against every 60-s window of the real pieces and what really
  followed the same seeds (a 20-s excerpt can be all reprise where its minute is not);
* the pulse and the top voice (:func:`voice_figures`): the bass's regularity
  (:func:`~chopinbot.evaluation.excerpts.bass_pulse`) and the top voice's mean
  interval, generated and from the seed alone against Chopin's mean and sd.

Each row draws at most as many excerpts per class as the generated side has,
with the forest and folds of the main rows (:func:`~chopinbot.evaluation.realism.two_sets_test`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chopinbot.dataset.store import Dataset
from chopinbot.evaluation.classifier import two_sets_test
from chopinbot.evaluation.continuations import (
    Compose,
    held_out_seeds,
    run_continuations,
    split_excerpts,
    with_context,
)
from chopinbot.evaluation.excerpts import FEATURE_NAMES, Excerpt, bass_pulse, feature_matrix, time_excerpts, timed_notes
from chopinbot.evaluation.replay import (
    COMPOSED_REPLAY,
    MOSTLY_REPLAYED,
    REPLAY_NGRAM,
    continuation_replays,
    every_window_replays,
    piece_replays,
    replay_distribution,
    true_continuation_replays,
)

PHRASE_SECONDS = 60.0  # phrase-scale excerpts: a whole continuation


def _composed(shares: Sequence[float]) -> np.ndarray:
    x = np.asarray(shares, np.float64)
    return ~(x > COMPOSED_REPLAY)  # NaN (too short to have an 8-gram) has nothing to replay: composed


def voice_figures(excerpts: Sequence[Excerpt], features: np.ndarray) -> dict:
    """Mean and sd over ``excerpts`` (their rows of ``features``) of the bass pulse and the top
    voice's mean interval (semitones): what a listener misses first in composed music."""
    out = {}
    values = {"bass_pulse": np.array([bass_pulse(e.notes) for e in excerpts], np.float64),
              "top_abs_interval": features[:, FEATURE_NAMES.index("top_abs_interval")]}
    for name, v in values.items():
        v = v[~np.isnan(v)]
        out[name] = {"mean": float(v.mean()) if v.size else float("nan"),
                     "sd": float(v.std()) if v.size > 1 else float("nan"), "n": int(v.size)}
    return out


def replays_of(continuations, seconds: float) -> list[float]:
    """The replay share of every excerpt of the continuations, in order."""
    return [r for c in continuations
            for r in continuation_replays(c.seed, c.states, len(c.excerpts), seconds)]


def composed_realism(ds: Dataset, rs, compose: Compose, seeds, true, continuations, Fg: np.ndarray,
                     chopin: Sequence[Excerpt], Fc: np.ndarray, progress: bool = False) -> dict:
    """The composed-music section (see the module docstring) for :func:`~chopinbot.evaluation.realism.evaluate_realism`:
    ``continuations`` and ``Fg`` are its generated excerpts' continuations and features, ``chopin`` and
    ``Fc`` its real excerpts and theirs (the ``train`` pieces, then the true windows of ``rs.split``)."""
    chopin_groups = [e.group for e in chopin]
    seconds = rs.excerpt_seconds
    gen_groups = [e.group for c in continuations for e in c.excerpts]
    gen_replay = replays_of(continuations, seconds)

    def real_replays(length: float) -> list[float]:
        """Every real excerpt of ``length`` the classifier reads: the train pieces', then the split's true windows."""
        return piece_replays(ds, "train", length) + piece_replays(ds, rs.split, length, first=rs.seed_len)

    real_replay = real_replays(seconds)
    # like for like: what really followed the same seeds, against the same seed and context
    same_seeds_replay = true_continuation_replays(ds, rs.split, seeds, round(rs.continuation_seconds / seconds),
                                                  seconds, rs.seed_len)
    assert len(gen_replay) == len(Fg) and len(real_replay) == len(Fc), "replays out of step with the excerpts"
    g, c = _composed(gen_replay), _composed(real_replay)
    gg, gc = np.asarray(gen_groups), np.asarray(chopin_groups)
    rows: dict[str, dict] = {}
    rows["composed generated vs composed Chopin"] = two_sets_test(Fg[g], gg[g], Fc[c], gc[c], rs.test,
                                                                  per_class=int(g.sum()))
    # the seed alone: the same seeds without their context, the same random seeds
    alone = run_continuations(compose, with_context(seeds, 0), groups=[t.group for t in true],
                              excerpt_seconds=seconds, progress=progress, desc="seed alone")
    alone_ex = [e for a in alone for e in a.excerpts]
    Fa = feature_matrix(alone_ex, seconds)
    ga = np.asarray([e.group for e in alone_ex])
    alone_replay = replays_of(alone, seconds)
    a = _composed(alone_replay)
    rows["seed alone (context 0) vs Chopin"] = two_sets_test(Fa, ga, Fc, gc, rs.test, per_class=len(alone_ex))
    rows["seed alone (context 0), composed vs composed Chopin"] = two_sets_test(Fa[a], ga[a], Fc[c], gc[c], rs.test,
                                                                                per_class=int(a.sum()))
    # phrase scale: each whole continuation against 60-s excerpts of the same real pieces
    phrase = PHRASE_SECONDS
    long_gen = [e for cont in continuations if cont.excerpts  # a continuation that gave no excerpt: none
                for e in time_excerpts(timed_notes(cont.states), cont.excerpts[0].group, cont.seed.key, phrase,
                                       cont.states.total_seconds)]
    _, long_true = held_out_seeds(ds, rs.split, rs.seed_len, phrase, rs.steady)
    long_real = split_excerpts(ds, "train", phrase, rs.steady) + long_true
    Fl, Fr = feature_matrix(long_gen, phrase), feature_matrix(long_real, phrase)
    rows[f"{phrase:g}-s excerpts: generated vs Chopin"] = two_sets_test(
        Fl, [e.group for e in long_gen], Fr, [e.group for e in long_real], rs.test, per_class=len(long_gen))
    phrase_replay = {  # the same sides at phrase scale: each whole continuation, each 60-s window
        "generated": [r for cont in continuations if cont.excerpts
                      for r in continuation_replays(cont.seed, cont.states, 1, phrase)],
        "chopin": real_replays(phrase),
        "chopin_every_minute": every_window_replays(ds, "train", phrase, rs.seed_len)
        + every_window_replays(ds, rs.split, phrase, rs.seed_len),
        "chopin_same_seeds": true_continuation_replays(ds, rs.split, seeds, 1, phrase, rs.seed_len, windows=seconds)}
    voices = {"generated": voice_figures([e for cont in continuations for e in cont.excerpts], Fg),
              "seed_alone": voice_figures(alone_ex, Fa), "chopin": voice_figures(chopin, Fc)}
    return {"composed_replay": COMPOSED_REPLAY, "mostly_replayed": MOSTLY_REPLAYED, "ngram": REPLAY_NGRAM,
            "history": "the seed and its context (generated); as many states of the piece before it (real)",
            "replay": {"generated": replay_distribution(gen_replay), "chopin": replay_distribution(real_replay),
                       "chopin_same_seeds": replay_distribution(same_seeds_replay),
                       "seed_alone": replay_distribution(alone_replay)},
            "replay_phrase": {side: replay_distribution(r) for side, r in phrase_replay.items()},
            "n_excerpts": {"generated": len(Fg), "generated_composed": int(g.sum()), "chopin": len(Fc),
                           "chopin_composed": int(c.sum()), "seed_alone": len(alone_ex),
                           "seed_alone_composed": int(a.sum()), "phrase_generated": len(long_gen),
                           "phrase_chopin": len(long_real)},
            "phrase_seconds": phrase, "rows": rows, "voices": voices}


def format_composed_section(composed: dict, main_row: dict | None = None) -> str:
    """The Markdown of the composed-music section."""
    def acc(r: dict) -> str:
        if not r or "skipped" in r:
            return f"skipped ({r.get('skipped', 'no row')})" if r else "–"
        return f"{r['accuracy_mean']:.3f} ± {r['accuracy_sd']:.3f}"

    lines = ["### Composed music, apart from what it replays", "",
             f"An excerpt's *replay*: the share of its {composed['ngram']}-state n-grams found, at any "
             "transposition, in what precedes it (the seed and its context for a generated excerpt; as many "
             f"states of the piece before it for a real one). *Composed*: replay ≤ {composed['composed_replay']:g}. "
             "Replay rows: *chopin*, every excerpt of the real pieces the classifier reads; *chopin_same_seeds*, "
             "what really followed the generated excerpts' seeds, read against the same seed and context (like "
             "for like: some places in a piece are reprises). The rows marked 60 s read each whole continuation, "
             "and every 60-s window of the real pieces, as one excerpt; *chopin_every_minute*, every minute of "
             "the real pieces laid across each whole piece from where a continuation may start (after a "
             "seed), read as a continuation is: the every-window reference of how often a minute is played back.",
             "", "| rows | excerpts per class | accuracy |", "|---|---|---|"]
    if main_row:
        lines.append(f"| all excerpts: generated vs Chopin | {main_row.get('n_per_class', '–')} | {acc(main_row)} |")
    for name, r in composed["rows"].items():
        lines.append(f"| {name} | {r.get('n_per_class', 0)} | {acc(r)} |")
    lines += ["", "| replay share | excerpts | mean | quartiles | above 0.8 | composed |", "|---|---|---|---|---|---|"]
    phrase = {f"{name}, {composed['phrase_seconds']:g}-s excerpts": d
              for name, d in composed.get("replay_phrase", {}).items()}
    for name, d in {**composed["replay"], **phrase}.items():
        if not d.get("n"):
            lines.append(f"| {name} | 0 | – | – | – | – |")
            continue
        lines.append(f"| {name} | {d['n']} | {d['mean']:.3f} | {d['q1']:.2f} / {d['median']:.2f} / {d['q3']:.2f} | "
                     f"{d['above_0.8']:.3f} | {d['composed']:.3f} |")
    voices = composed.get("voices")
    if voices:
        lines += ["", "| pulse and top voice (mean ± sd) | generated | seed alone (context 0) | Chopin |",
                  "|---|---|---|---|"]
        for stat, label in (("bass_pulse", "bass pulse (inter-onset intervals within 10 % of the one before)"),
                            ("top_abs_interval", "top-voice interval (mean semitones)")):
            cells = [f"{voices[side][stat]['mean']:.3f} ± {voices[side][stat]['sd']:.3f}"
                     for side in ("generated", "seed_alone", "chopin")]
            lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"
