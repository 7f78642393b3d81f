"""The infill suite: does an infilled span lead into what follows?  The join, measured on held-out Chopin.

For spans of ``--bars`` bars placed evenly in each held-out piece of a
prepared dataset (its files found in the bundled corpora; ``--spans`` per
score, ``--performed-spans`` per performed piece), :func:`chopinbot.compose.infill.infill`
composes ``--candidates`` spans and keeps the one under which the model finds
the next ``--lookahead`` states most likely.  Reported, as the model's key NLL
per state (nats) of the true states after the span, given:

* (a) the original span; (b) the infilled span; (c) a span composed without
  the right-hand context (the first sampled candidate: every candidate is one
  such sample), and the mean over all candidates;
* the ratio (b)/(a), and the share of spans where (b) < (c).

(b) is chosen by the very NLL it is measured by, so it is flattered.  The fair
figure (*held out*): choose by the NLL of the first half of the lookahead,
measure on the second half (given the true first half).

Then the join discriminator: 20-s excerpts centred on the span (both joins
inside) of the performed pieces, played at their own mean tempo, against real
Chopin (the performed pieces of the train and held-out splits), by the random
forest and features of the realism report (:func:`~chopinbot.evaluation.realism.two_sets_test`),
beside the same with the uninformed span, the original windows at the same
places, and ordinary generated excerpts (60-s continuations of held-out seeds).

A model with controls can also steer its candidates towards what follows
(``--steer both`` composes each span both ways, from the same random seed).

The figures of docs/controls.md ("Infill") were made this way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from chopinbot.compose.generate import GenerateConfig
from chopinbot.compose.infill import (
    LOOKAHEAD_STATES,
    bar_start_tick,
    continuation_nll,
    fit_to_length,
    infill,
    read_source,
    splice,
)
from chopinbot.compose.seeds import window_seed
from chopinbot.constants import PACKAGE_DIR, SEED_STATES, WARM_STATES
from chopinbot.dataset.store import Dataset
from chopinbot.errors import ChopinBotError
from chopinbot.evaluation.classifier import ClassifierSettings, two_sets_test
from chopinbot.evaluation.continuations import (
    continue_seeds,
    excerpts_of,
    held_out_seeds,
    performed_chopin,
    split_excerpts,
)
from chopinbot.evaluation.excerpts import EXCERPT_SECONDS, feature_matrix, state_excerpts
from chopinbot.evaluation.musicstats import ngram_overlap
from chopinbot.evaluation.suites.controls import need_dataset
from chopinbot.evaluation.suites.schema import Suite, suite_result
from chopinbot.music.states import States, transpose_states
from chopinbot.progress import Progress


@dataclass
class InfillSettings:
    data: str = "runs/corpus/chopin"  # a prepared dataset whose files lie in the bundled corpora
    split: str = "test"
    bars: int = 4  # bars per span
    spans: int = 2  # spans per score
    performed_spans: int = 6  # spans per performed piece
    candidates: int = 16
    lookahead: int = LOOKAHEAD_STATES  # states after the span that judge it
    steer: str = "off"  # a model with controls: steer the candidates towards what follows (off, on, both)
    judge: str | None = None  # also score the spans with this model (one that did not choose them)
    realism: bool = True  # the join discriminator
    repeats: int = 5  # random seeds of the classifier test
    cpu_minutes: float = 60.0  # stop placing spans after this much CPU time
    max_pieces: int | None = None  # only the first N pieces (a quick try)
    threads: int = 1  # torch threads while it runs (the CPU-minute budget is per thread)


CORPUS_DIRS = (PACKAGE_DIR / "data" / "chopin", PACKAGE_DIR / "data" / "chopin_nifc")
BEST_OF = (1, 2, 4, 8, 16, 32, 64)
REPEAT_NGRAM = 8  # states: the continuation "repeats the span" when REPEAT_SHARE of its 8-grams are the span's
REPEAT_SHARE = 0.25


def find_file(name: str):
    for d in CORPUS_DIRS:
        if (d / name).is_file():
            return d / name
    raise FileNotFoundError(name)


def span_places(path, bars: int, count: int, need_after: int, settings) -> list[int]:
    """Up to ``count`` first bars of ``bars``-bar spans, spread evenly over the piece, each with at least
    ``need_after`` states after it and a few bars before it."""
    src = read_source(path, settings)
    n = len(src.states)
    total = 1
    while bar_start_tick(total + 1, src.time_signatures, src.ticks_per_quarter) < src.boundary_ticks[-1]:
        total += 1
    out = []
    for f in np.linspace(0, 1, count + 2)[1:-1]:
        first = int(round(3 + f * (total - 3 - bars)))
        try:
            a, b = src.span_states(first, first + bars, "bars")
        except ChopinBotError:
            continue
        if n - b >= need_after and first not in out:
            out.append(first)
    return out


def history_of(piece: States, key, a: int, context_states: int = WARM_STATES) -> tuple[States, float]:
    """What the model reads before a span at state ``a`` (as infill_piece reads it), and where it starts."""
    home, _ = transpose_states(piece, key.shift_home)
    pos = max(0, a - SEED_STATES)
    seed = window_seed(home, key, pos, a - pos, "", context_states)
    return seed.history, seed.history_start_beat


def centred_excerpt(states: States, centre: float, group: str, key):
    """The 20-s excerpt of ``states`` centred on ``centre`` seconds (steady tempo), or None."""
    t = np.concatenate([[0.0], np.cumsum(states.seconds.astype(np.float64))])
    i = int(np.searchsorted(t, centre - EXCERPT_SECONDS / 2))
    ex = state_excerpts(states[i:], group, key, EXCERPT_SECONDS, steady=True)
    return ex[0] if ex else None


def measure_span(model, path, first: int, s: InfillSettings, steer: bool, settings, judge=None) -> dict:
    t0 = time.process_time()
    cfg = GenerateConfig(random_seed=first)
    r = infill(model, path, first, first + s.bars, "bars", cfg, s.candidates, s.lookahead, steer, settings)
    a, b = r.original_span
    piece = r.original
    history, start_beat = history_of(piece, r.key, a)
    home, _ = transpose_states(piece, r.key.shift_home)
    original = home[a:b]
    spans = r.candidates + [original]
    half = s.lookahead // 2
    after = home[b : b + s.lookahead]
    first_half = continuation_nll(model, history, spans, after[:half], start_beat)
    second_half = continuation_nll(model, history, [States.concat([s, after[:half]]) for s in spans],
                                   after[half:], start_beat)
    # an "echo" candidate, never offered by infill: the span filled with the music that follows it (what
    # a span the continuation repeats would be), scored the same way -- how much of the gap is repetition
    grid = model.config.grid_per_beat
    echo = fit_to_length(home[b:], int(original.grid_units(grid).sum()), grid)
    row_echo = float(continuation_nll(model, history, [echo], after, start_beat)[0])
    row = {"piece": path.name, "first_bar": first, "states": [a, b], "span_beats": r.span_beats,
           "after_states": len(after), "original": r.original_nll, "candidates": r.candidate_nll.tolist(),
           "chosen": r.chosen, "first_half": first_half.tolist(), "second_half": second_half.tolist(),
           "key": r.key.name, "guards": r.guards,
           "echo": row_echo, "continuation_repeats_span": float(np.nan_to_num(
               ngram_overlap(after, [("span", original)], REPEAT_NGRAM)))}
    # excerpts around the span: infilled, uninformed (the first candidate), original
    centre = float(np.mean(r.span_seconds)) - r.start_second  # in the piece's states, which start at its first note
    row["excerpts"] = {
        "infilled": centred_excerpt(r.states, centre, path.name, r.key),
        "uninformed": centred_excerpt(splice(piece, a, b, r.candidates[0], r.key), centre, path.name, r.key),
        "original": centred_excerpt(piece, centre, path.name, r.key),
    }
    if judge is not None:  # the same spans under another model: does the choice hold for a judge that did not make it?
        row["judge"] = continuation_nll(judge, history, spans, after, start_beat).tolist()
    row["cpu_seconds"] = time.process_time() - t0
    return row


def summarize(rows: list[dict]) -> dict:
    """Means over spans of (a), (b), (c); the ratio; the share (b) < (c); best-of-k; the held-out figure."""
    orig = np.array([r["original"] for r in rows])
    cands = [np.array(r["candidates"]) for r in rows]
    chosen = np.array([c.min() for c in cands])
    first = np.array([c[0] for c in cands])
    mean_c = np.array([c.mean() for c in cands])
    k_max = min(len(c) for c in cands)
    fh = [np.array(r["first_half"]) for r in rows]
    sh = [np.array(r["second_half"]) for r in rows]
    # an honest (b) < (c): the best of the other candidates against the first, a sample it was not chosen from
    loo = np.array([c[1:].min() for c in cands]) if k_max > 1 else first
    echo = np.array([r["echo"] for r in rows])
    repeats = np.array([r["continuation_repeats_span"] >= REPEAT_SHARE for r in rows])
    held_pick = np.array([s[int(np.argmin(f[:-1]))] for f, s in zip(fh, sh)])
    held_orig = np.array([s[-1] for s in sh])
    held_first = np.array([s[0] for s in sh])
    held_mean = np.array([s[:-1].mean() for s in sh])
    judged = {}
    if all("judge" in r for r in rows) and rows:
        j = [np.array(r["judge"]) for r in rows]
        judged = {"original": float(np.mean([x[-1] for x in j])),
                  "infilled": float(np.mean([x[int(np.argmin(c))] for x, c in zip(j, cands)])),
                  "uninformed": float(np.mean([x[0] for x in j])),
                  "candidates_mean": float(np.mean([x[:-1].mean() for x in j])),
                  "share_infilled_below_uninformed": float(np.mean([x[int(np.argmin(c[1:])) + 1] < x[0]
                                                                    for x, c in zip(j, cands)]))}
    return {
        "judge": judged,
        "spans": len(rows), "pieces": len({r["piece"] for r in rows}),
        "nll_original": float(orig.mean()), "nll_infilled": float(chosen.mean()),
        "nll_uninformed": float(first.mean()), "nll_candidates_mean": float(mean_c.mean()),
        "ratio_infilled_to_original": float(chosen.mean() / orig.mean()),
        "ratio_per_span_median": float(np.median(chosen / orig)),
        "share_infilled_below_uninformed": float(np.mean(loo < first)),  # best of candidates 2..N vs the 1st
        "share_infilled_below_original": float(np.mean(chosen < orig)),
        "repeats": {"spans": int(repeats.sum()), "share": REPEAT_SHARE, "ngram": REPEAT_NGRAM,
                    "ratio_repeating": float(chosen[repeats].mean() / orig[repeats].mean()) if repeats.any() else None,
                    "ratio_others": float(chosen[~repeats].mean() / orig[~repeats].mean()) if (~repeats).any()
                    else None},
        "echo": {"nll_echo": float(echo.mean()), "nll_best_with_echo": float(np.minimum(chosen, echo).mean()),
                 "ratio_best_with_echo": float(np.minimum(chosen, echo).mean() / orig.mean()),
                 "share_echo_wins": float(np.mean(echo < chosen))},
        "best_of_k": {k: float(np.mean([c[:k].min() for c in cands])) for k in BEST_OF if k <= k_max},
        "held_out": {"original": float(held_orig.mean()), "infilled": float(held_pick.mean()),
                     "uninformed": float(held_first.mean()), "candidates_mean": float(held_mean.mean()),
                     "ratio_infilled_to_original": float(held_pick.mean() / held_orig.mean()),
                     "share_infilled_below_uninformed": float(np.mean(held_pick < held_first))},
    }


def join_excerpts(rows: list[dict], performed: set[str]) -> dict[str, list]:
    """The excerpts around the spans of the performed pieces: infilled, uninformed, original."""
    return {name: [r["excerpts"][name] for r in rows if r["piece"] in performed and r["excerpts"][name] is not None]
            for name in ("infilled", "uninformed", "original")}


def generated_excerpts(ds: Dataset, model, split: str, n: int, progress: bool = False) -> list:
    """About ``n`` ordinary generated excerpts: 60-s continuations of held-out seeds, spread over the pieces."""
    seeds, _ = held_out_seeds(ds, split)
    picked = [int(i) for i in np.linspace(0, len(seeds) - 1, int(np.ceil(n / 3))).round().astype(int)]
    return excerpts_of(continue_seeds(model, [seeds[i] for i in picked], random_seeds=picked, progress=progress,
                                      desc="generated excerpts"))


def realism_rows(sets: dict[str, list], real: tuple[np.ndarray, list[str]], n: int, repeats: int) -> dict:
    """Each set of excerpts against real Chopin, ``n`` excerpts per class."""
    settings = ClassifierSettings(repeats=repeats)
    out: dict = {"n_per_class": n, "real_excerpts": len(real[1])}
    for name, ex in sets.items():
        out[name] = two_sets_test(feature_matrix(ex), [e.group for e in ex], *real, settings, per_class=n)
    return out


def infill_check(model, s: InfillSettings, judge=None, progress: bool = True) -> dict:
    ds = need_dataset(s.data, "chopin")
    settings = ds.settings
    performed = {x.piece for x in ds.segments(s.split) if performed_chopin(x)}
    pieces = sorted({x.piece for x in ds.segments(s.split)}, key=lambda x: (x not in performed, x))
    modes = {"off": [False], "on": [True], "both": [False, True]}[s.steer]
    rows: dict[bool, list[dict]] = {m: [] for m in modes}
    t0 = time.process_time()
    bar = Progress(len(pieces[: s.max_pieces]), desc="infill", unit="pieces", enabled=progress, leave=False)
    for name in pieces[: s.max_pieces]:
        path = find_file(name)
        count = s.performed_spans if name in performed else s.spans
        for first in span_places(path, s.bars, count, s.lookahead, settings):
            for steer in modes:
                if time.process_time() - t0 > s.cpu_minutes * 60:
                    break
                rows[steer].append(measure_span(model, path, first, s, steer, settings, judge))
        bar.update()
    bar.close()
    result: dict = {}
    joins = {steer: join_excerpts(rows[steer], performed) for steer in modes}
    n = min(len(j["infilled"]) for j in joins.values())
    if n >= 4 and s.realism:
        real_ex = split_excerpts(ds, "train") + split_excerpts(ds, s.split)
        real = (feature_matrix(real_ex), [e.group for e in real_ex])
        generated = generated_excerpts(ds, model, s.split, n, progress)
    for steer in modes:
        label = "steered" if steer else "plain"
        result[label] = summarize(rows[steer])
        result[label]["realism"] = realism_rows({**joins[steer], "generated": generated}, real, n, s.repeats) \
            if n >= 4 and s.realism else {"skipped": "realism off" if not s.realism else
                                         f"only {n} excerpts around spans of performed pieces"}
        result[label]["rows"] = [{k: v for k, v in r.items() if k != "excerpts"} for r in rows[steer]]
    result["cpu_minutes"] = (time.process_time() - t0) / 60
    return result


def _flat(prefix: str, d: dict, out: dict) -> dict:
    for k, v in d.items():
        if isinstance(v, dict):
            _flat(f"{prefix}{k}: ", v, out)
        elif isinstance(v, (int, float)) or v is None:
            out[f"{prefix}{k}"] = v
    return out


def run(model_name: str | None, settings: InfillSettings, progress: bool = True) -> dict:
    import torch

    from chopinbot.model.formats import load_model

    judge = load_model(settings.judge) if settings.judge else None
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        r = infill_check(load_model(model_name), settings, judge, progress)
    finally:
        torch.set_num_threads(threads)
    figures, rows = {"cpu_minutes": r["cpu_minutes"]}, []
    for label in ("plain", "steered"):
        if label in r:
            summary = {k: v for k, v in r[label].items() if k not in ("rows", "realism")}
            realism = {k: v.get("accuracy_mean") if isinstance(v, dict) else v
                       for k, v in r[label]["realism"].items()}
            _flat(f"{label} ", {**summary, "realism": realism}, figures)
            rows += [{"mode": label, **row} for row in r[label]["rows"]]
    return suite_result("infill", model_name, settings, figures, rows, 0.0,
                        summaries={k: {kk: vv for kk, vv in v.items() if kk != "rows"}
                                   for k, v in r.items() if k != "cpu_minutes"})


SUITE = Suite("infill", run, InfillSettings, "infilled spans: the NLL of what follows, and a join discriminator")
