"""The controls suite: does the music do what was asked?  (docs/suites/controls-check.json)

For each setting, ``pieces`` pieces (50) are composed from held-out test seeds
(a random window of a test piece each, drawn with ``default_rng(0)``; random
seed = the piece's position), and measured by :mod:`chopinbot.evaluation.figures`:

* density: the share of pieces within +-20 % of the request;
* register: the share of all notes inside it, with the register confining the
  sampler (the default) and with the steering alone;
* loudness: for each seed, the five marks pp..ff; the share of pairs of marks
  whose pieces' mean velocities are in order (all 10 pairs, and the 4 neighbouring pairs);
* key (with ``hold_key`` on and off): the share of 20-s excerpts within one
  fifth of the requested key, from the seeds (requests in random keys, drawn
  with ``default_rng(1)``) and from other composers' primers (the held-out
  pieces of piano-midi.de in ``piano_data``, of the same split as the seeds),
  each piece twice as long.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chopinbot.compose.seeds import list_seeds, seed_from_test
from chopinbot.dataset.corpus import style_name
from chopinbot.dataset.store import Dataset
from chopinbot.errors import ConfigError
from chopinbot.evaluation.continuations import continue_seeds, held_out_seeds
from chopinbot.evaluation.figures import piece_figures, result_figures
from chopinbot.evaluation.suites.schema import Suite, suite_result
from chopinbot.music.controls import LOUDNESS_LEVELS
from chopinbot.music.keys import ALL_KEYS
from chopinbot.music.states import states_to_notes

DENSITIES = (3.0, 6.0, 10.0)  # notes per second: sparse, moderate, busy (Chopin's windows: mostly 3-15)
REGISTERS = ((48, 84), (36, 72), (60, 96))  # C3-C6, C2-C5, C4-C7
PARTS = ("density", "register", "loudness", "key")


@dataclass
class ControlsSettings:
    pieces: int = 50  # pieces per setting
    seconds: float = 30.0  # length of each piece (key: twice this, three 20-s excerpts)
    only: tuple = PARTS
    seeds: str = "test"  # whose windows seed the pieces: test to report, valid (of valid_data) to tune
    piano_data: str = "runs/corpus/piano"  # a prepared dataset of the piano corpus: the other composers' primers
    valid_data: str = "runs/corpus/chopin48"  # a prepared dataset, for seeds="valid"
    key_guidance: float | None = None  # None: GenerateConfig's default
    key_guidance_drift: float | None = None


def need_dataset(path: str, corpus: str, progress: bool = True) -> Dataset:
    """The prepared dataset at ``path``; the bundled ``corpus`` is prepared there first when missing
    (once: a minute or two), so that ``chopinbot evaluate --suite all`` runs from a fresh clone."""
    if not (Path(path) / "manifest.json").exists():
        from chopinbot.dataset.corpus import CORPORA
        from chopinbot.dataset.prepare import prepare

        if corpus not in CORPORA:
            raise ConfigError(f"{path} holds no prepared dataset: chopinbot prepare <files> --out {path}")
        print(f"{path} holds no prepared dataset: preparing the bundled {corpus!r} corpus there (once)", flush=True)
        prepare(None, path, corpus=corpus, progress=progress)
    return Dataset(path)


def other_composers(seg) -> bool:
    return seg.dynamics and style_name(seg.composer) != "chopin"


def controls_check(model, s: ControlsSettings, progress: bool = True) -> dict:
    """The figures of every part in ``s.only``, keyed as docs/suites/controls-check.json has them."""
    n = s.pieces
    rng = np.random.default_rng(0)
    if s.seeds == "test":
        count = len(list_seeds())
        seeds = [seed_from_test(int(i)) for i in rng.choice(count, n, replace=count < n)]
    else:
        found, _ = held_out_seeds(need_dataset(s.valid_data, "chopin48"), "valid")
        seeds = [found[int(i)] for i in rng.choice(len(found), n, replace=len(found) < n)]
    out: dict = {}

    def pieces(seed_list, desc, **controls):
        return [c for c in continue_seeds(model, seed_list, s.seconds, controls, excerpt_seconds=None,
                                          progress=progress, desc=desc) if not c.failed]

    if "density" in s.only:
        for want in DENSITIES:
            got = [result_figures(c.result).density for c in pieces(seeds, f"density {want:g}", density=want)]
            out[f"density {want:g}"] = {"within_20pc": float(np.mean([abs(g / want - 1) <= 0.2 for g in got])),
                                        "mean": float(np.mean(got)), "median": float(np.median(got)),
                                        "pieces": len(got)}
    if "register" in s.only:
        for lo, hi in REGISTERS:
            for confine in (True, False):
                inside = total = 0
                for c in pieces(seeds, f"register {lo}-{hi}", register=(lo, hi), confine_register=confine):
                    pitch = states_to_notes(c.result.generated)[:, 2]
                    inside += int(((pitch >= lo) & (pitch <= hi)).sum())
                    total += len(pitch)
                out[f"register {lo}-{hi} {'confined' if confine else 'steered'}"] = {
                    "inside": inside / max(total, 1), "notes": total}
    if "loudness" in s.only:
        marks = list(LOUDNESS_LEVELS)
        vel = np.full((n, len(marks)), np.nan)
        for j, mark in enumerate(marks):
            for c in pieces(seeds, f"loudness {mark}", loudness=mark):
                vel[c.index, j] = result_figures(c.result).loudness
        pairs = list(itertools.combinations(range(len(marks)), 2))
        ordered = [vel[i, a] < vel[i, b] for i in range(n) for a, b in pairs if not np.isnan(vel[i, [a, b]]).any()]
        near = [vel[i, a] < vel[i, a + 1] for i in range(n) for a in range(len(marks) - 1)
                if not np.isnan(vel[i, [a, a + 1]]).any()]
        out["loudness"] = {"pairs_in_order": float(np.mean(ordered)), "neighbours_in_order": float(np.mean(near)),
                           "mean_velocity": dict(zip(marks, np.nanmean(vel, 0).round(1).tolist()))}
    if "key" in s.only:
        krng = np.random.default_rng(1)
        primers, _ = held_out_seeds(need_dataset(s.piano_data, "piano"), s.seeds, keep=other_composers)
        primers = [primers[int(i)] for i in krng.choice(len(primers), n, replace=len(primers) < n)]
        guidance = {k: v for k, v in (("key_guidance", s.key_guidance), ("key_guidance_drift", s.key_guidance_drift))
                    if v is not None}
        for label, seed_list in ((f"{s.seeds} seeds", seeds), ("other composers' primers", primers)):
            for hold in (True, False):
                # the requested keys, drawn in the seeds' order (the mode is the seed's: a transposition keeps it)
                wants = [ALL_KEYS[int(krng.integers(24))].with_mode(seed.key.minor) for seed in seed_list]
                holds = []
                for c in continue_seeds(model, seed_list, 2 * s.seconds, excerpt_seconds=None, progress=progress,
                                        desc=f"key {label}",
                                        overrides=lambda seed, i, wants=wants, hold=hold:
                                        {"key": wants[i].name, "hold_key": hold, **guidance}):
                    if c.failed:
                        continue
                    figures = piece_figures(c.result.generated, c.result.bpm, c.result.key)  # as the summary's
                    holds += [figures.key_hold] * figures.key_excerpts
                out[f"key {label} {'held' if hold else 'free'}"] = {
                    "key_hold": float(np.mean(holds)) if holds else float("nan"), "excerpts": len(holds)}
    return out


def figures_of(check: dict) -> dict:
    """The headline figure of each setting (flat)."""
    headline = {"within_20pc", "inside", "pairs_in_order", "neighbours_in_order", "key_hold"}
    return {f"{name}: {k}" if len(row) > 1 and k != "inside" and k != "key_hold" else name: v
            for name, row in check.items() if isinstance(row, dict)
            for k, v in row.items() if k in headline}


def run(model_name: str | None, settings: ControlsSettings, progress: bool = True) -> dict:
    from chopinbot.model.formats import load_model

    check = controls_check(load_model(model_name), settings, progress)
    rows = [{"setting": name, **row} for name, row in check.items()]
    return suite_result("controls", model_name, settings, figures_of(check), rows, 0.0)


SUITE = Suite("controls", run, ControlsSettings, "compliance of density, register, loudness and key requests",
              "controls-check.json")  # docs/suites/controls-check.json
