"""The form suite: is the reprise heard, does the piece close, does B contrast?  (docs/controls.md, "Form")

For ``pieces`` test seeds spread evenly over the held-out test windows (each with its index as
the random seed), an ABA piece of ``seconds`` of new music, and an AABA piece for the first
``aaba`` of them; beside each ABA piece, the plain continuation of the same seed (``generate``,
same length and random seed) cut at the same section boundaries, as the baseline of what chance
gives.  Measured:

* reprise: :func:`~chopinbot.evaluation.form_measures.reprise_matches` over the whole piece, the exact repeats
  lookup as the model runs it: *found* = at least one state of the last section whose longest
  earlier match is >= 4 states long and lies wholly within an earlier A section; also the share
  of the last section's states after the replayed opening that still match A (the model following
  the reprise on its own);
* cadence: the last state is the tonic triad of the output key, tonic in the bass, held >= 1 beat
  (:func:`~chopinbot.evaluation.form_measures.ends_on_tonic_chord`);
* contrast of B against A (:func:`~chopinbot.evaluation.form_measures.section_profiles`): notes per second,
  mean pitch, mean velocity; the key: the Krumhansl-Schmuckler correlation with B's key area minus
  that with the home key ("lean"), in B and in A, and whether B's best key is its key area.

The form measurements are imported from ``chopinbot.compose.form`` until they move to
``chopinbot.evaluation.form_measures``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chopinbot.compose.form import compose_form, plan_sections
from chopinbot.compose.generate import GenerateConfig
from chopinbot.compose.seeds import list_seeds, seed_from_test
from chopinbot.dataset.store import PrepareSettings
from chopinbot.evaluation.continuations import CONTINUATION_SECONDS, continue_seeds, run_continuations
from chopinbot.evaluation.excerpts import key_correlations
from chopinbot.evaluation.form_measures import ends_on_tonic_chord, reprise_matches, section_profiles
from chopinbot.evaluation.suites.schema import Suite, suite_result
from chopinbot.music.keys import ALL_KEYS
from chopinbot.music.repeats import find_continuations
from chopinbot.music.states import states_to_notes


@dataclass
class FormSettings:
    pieces: int = 50  # ABA pieces
    aaba: int = 10  # AABA pieces (the first of the same seeds)
    seconds: float = CONTINUATION_SECONDS  # new music per piece
    reprise_beats: float | None = None  # override compose.form's REPRISE_BEATS


def lean(states, home, area) -> float:
    """Key correlation with ``area`` minus that with ``home`` (NaN without notes)."""
    notes = states_to_notes(states)
    if len(notes) == 0:
        return float("nan")
    c = key_correlations(notes)
    return float(c[ALL_KEYS.index(area)] - c[ALL_KEYS.index(home)])


def contrast(states, bounds, home, area) -> dict:
    """A (the first section) against B (the one labelled B), as ``(start, end)`` states in ``bounds``."""
    out = {}
    for name, (s0, s1, secs) in bounds.items():
        part = states[s0:s1]
        notes = states_to_notes(part)
        struck = part.velocity[part.velocity > 0]
        out[name] = {"notes_per_second": len(notes) / secs if secs else float("nan"),
                     # as compose_form measures A to ask B for the other side: struck keys a beat, state velocity
                     "per_beat": float(part.onsets.sum() / part.total_beats) if len(part) else float("nan"),
                     "state_velocity": float(struck.mean()) if struck.size else float("nan"),
                     "mean_pitch": float(notes[:, 2].mean()) if len(notes) else float("nan"),
                     "velocity": float(notes[:, 3].mean()) if len(notes) else float("nan"),
                     "lean": lean(part, home, area),
                     "best_key": ALL_KEYS[int(np.argmax(key_correlations(notes)))].name if len(notes) else None}
    return out


def _bounds_of(res) -> dict:
    a, b = res.sections[0], next(s for s in res.sections if s.label == "B")
    return {"A": (a.start_state, a.end_state, a.end_seconds - a.start_seconds),
            "B": (b.start_state, b.end_state, b.end_seconds - b.start_seconds)}


def _cut(states, bpm, start_beat, end_beat):
    cum = np.concatenate([[0.0], np.cumsum(states.beats.astype(np.float64))])
    s0, s1 = (int(np.searchsorted(cum, x - 1e-6)) for x in (start_beat, end_beat))
    return s0, s1, (end_beat - start_beat) * 60 / bpm


def summarise(rows: list[dict]) -> dict:
    def share(key):
        v = [r[key] for r in rows]
        return float(np.mean(v)) if v else float("nan")

    def share_of(key):  # among the pieces where it applies
        v = [r[key] for r in rows if r.get(key) is not None]
        return float(np.mean(v)) if v else float("nan")

    def med(path):
        v = [r for r in (x.get(path) for x in rows) if r is not None and np.isfinite(r)]
        return float(np.median(v)) if v else float("nan")

    return {"pieces": len(rows), "reprise_found": share("reprise_found"), "cadence": share("cadence"),
            "beyond_replay_share_median": med("beyond_share"),
            "density_ratio_B_over_A_median": med("density_ratio"), "abs_log2_density_ratio_median": med("abs_log2"),
            "pitch_B_minus_A_median": med("pitch_diff"), "abs_pitch_diff_median": med("abs_pitch"),
            "abs_velocity_diff_median": med("abs_velocity"),
            "density_as_asked": share_of("density_as_asked"), "loudness_as_asked": share_of("loudness_as_asked"),
            "lean_A_median": med("lean_A"), "lean_B_median": med("lean_B"),
            "B_leans_more_than_A": share("b_leans_more"), "A_nearer_home": share("a_nearer_home"),
            "B_nearer_area": share("b_nearer_area"), "A_best_key_is_home": share("a_best_is_home"),
            "B_best_key_is_area": share("b_best_is_area")}


def _row(c: dict, home: str, area: str, asked) -> dict:
    """One piece's contrast figures; ``asked``: B's controls (None without), whose density and loudness
    B should have moved towards from A's."""
    a, b = c["A"], c["B"]

    def towards(value, key):
        if asked is None or value is None:
            return None
        return bool((value > a[key]) == (b[key] > a[key]))

    ratio = b["notes_per_second"] / a["notes_per_second"] if a["notes_per_second"] else float("nan")
    return {"density_ratio": ratio, "abs_log2": abs(np.log2(ratio)) if ratio > 0 else float("nan"),
            "pitch_diff": b["mean_pitch"] - a["mean_pitch"], "abs_pitch": abs(b["mean_pitch"] - a["mean_pitch"]),
            "abs_velocity": abs(b["velocity"] - a["velocity"]), "lean_A": a["lean"], "lean_B": b["lean"],
            "density_as_asked": towards(asked.density if asked else None, "per_beat"),
            "loudness_as_asked": towards(asked.loudness if asked else None, "state_velocity"),
            "b_leans_more": bool(b["lean"] > a["lean"]), "a_nearer_home": bool(a["lean"] < 0),
            "b_nearer_area": bool(b["lean"] > 0), "a_best_is_home": a["best_key"] == home,
            "b_best_is_area": b["best_key"] == area}


def _plain_reprise(states, a: tuple[int, int], last: tuple[int, int], min_length: int = 4) -> bool:
    """The same test as reprise_matches, for a plain continuation cut into thirds."""
    cont, length, _ = find_continuations("exact", states.keys, states.onsets, states.beats)
    idx = np.arange(*last)
    src_end, src_start = cont[idx] - 1, cont[idx] - length[idx]
    return bool(((length[idx] >= min_length) & (src_start >= a[0]) & (src_end < a[1])).any())



def form_check(model, s: FormSettings, progress: bool = True) -> dict:
    """Every piece's row and each form's summary (ABA, AABA, and the plain baseline)."""
    meta = getattr(model, "meta", {}).get("dataset_settings")
    settings = PrepareSettings(**meta) if meta else PrepareSettings()  # seeds built as the model's data
    n_seeds = len(list_seeds(settings=settings))
    indices = [int(i) for i in np.linspace(0, n_seeds - 1, s.pieces).round().astype(int)]
    seeds = [seed_from_test(i, settings=settings) for i in indices]
    extra = {} if s.reprise_beats is None else {"reprise_beats": s.reprise_beats}
    runs: dict[str, list] = {"ABA": [], "AABA": [], "plain": []}

    def composer(form: str):
        return lambda seed, rs: compose_form(model, seed, GenerateConfig(seconds=s.seconds, random_seed=rs), form,
                                             **extra)

    pieces = {"ABA": run_continuations(composer("ABA"), seeds, indices, excerpt_seconds=None, progress=progress,
                                       desc="ABA"),
              "AABA": run_continuations(composer("AABA"), seeds[: s.aaba], indices[: s.aaba], excerpt_seconds=None,
                                        progress=progress, desc="AABA")}
    # the baseline: the plain continuation (seed included, as GenerateConfig has it) of the same seeds
    plains = continue_seeds(model, seeds, s.seconds, random_seeds=indices, include_seed=True, strict=True,
                            excerpt_seconds=None, progress=progress, desc="plain")
    for form in ("ABA", "AABA"):
        for c in pieces[form]:
            res = c.result
            match = reprise_matches(res)
            b = next(x for x in res.sections if x.label == "B")
            row = {"seed": c.random_seed, "form": form, "key": res.key.name, "b_key": b.key.name,
                   "reprise_found": match.found, "beyond_share": match.beyond_share,
                   "replayed_states": res.sections[-1].replayed_states,
                   "cadence": ends_on_tonic_chord(res.states, res.key),
                   "sections": [(x.label, round(x.start_seconds, 2), round(x.end_seconds, 2)) for x in res.sections],
                   "profiles": [{"label": q.label, "notes_per_second": q.notes_per_second, "mean_pitch": q.mean_pitch,
                                 "velocity": q.velocity, "key": q.key.name} for q in section_profiles(res)]}
            row.update(_row(contrast(res.states, _bounds_of(res), res.key, b.key), res.key.name, b.key.name,
                            b.controls))
            runs[form].append(row)
            if form == "ABA":  # the plain continuation cut where the form's sections lie
                plain = plains[c.index].result
                plan = plan_sections("ABA", res.seed_end_beat + s.seconds * res.bpm / 60)
                bounds = {"A": _cut(plain.states, plain.bpm, 0, plan[0][2]),
                          "B": _cut(plain.states, plain.bpm, plan[1][1], plan[1][2])}
                last = _cut(plain.states, plain.bpm, plan[2][1], plain.states.total_beats)
                prow = {"seed": c.random_seed, "cadence": ends_on_tonic_chord(plain.states, plain.key),
                        "reprise_found": _plain_reprise(plain.states, bounds["A"][:2], last[:2]),
                        "beyond_share": None}
                prow.update(_row(contrast(plain.states, bounds, plain.key, b.key), plain.key.name, b.key.name,
                                 b.controls))  # the plain middle "as asked": what chance gives
                runs["plain"].append(prow)
    return {"figures": {k: summarise(v) for k, v in runs.items()}, "pieces": runs}


def run(model_name: str | None, settings: FormSettings, progress: bool = True) -> dict:
    from chopinbot.model.formats import load_model

    r = form_check(load_model(model_name), settings, progress)
    figures = {f"{form} {k}": v for form, summary in r["figures"].items() for k, v in summary.items()}
    rows = [{"kind": kind, **row} for kind, rows in r["pieces"].items() for row in rows]
    return suite_result("form", model_name, settings, figures, rows, 0.0, summaries=r["figures"])


SUITE = Suite("form", run, FormSettings, "ABA and AABA forms: reprise, cadence, contrast, against plain continuations")
