"""The evaluation harness: one continuation loop, suites in one JSON schema, `evaluate --suite`.

Tiny models and small counts: what is asserted is the plumbing (the schema, the
dispatch, the same seeds and random seeds as a direct call) and that a suite's
figure is what its protocol computes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from chopinbot.compose.generate import GenerateConfig, generate
from chopinbot.dataset.store import Dataset, Segment
from chopinbot.errors import ConfigError
from chopinbot.evaluation import suites
from chopinbot.evaluation.continuations import (
    continue_seeds,
    held_out_seeds,
    model_composer,
    performed_chopin,
    split_excerpts,
    with_context,
)
from chopinbot.evaluation.realism import ClassifierSettings, RealismSettings, evaluate_realism
from chopinbot.evaluation.replay import (
    continuation_replays,
    every_window_replays,
    piece_replays,
    replay_distribution,
    true_continuation_replays,
)
from chopinbot.evaluation.suites.realism import RealismSuiteSettings, realism_suite
from chopinbot.evaluation.suites.schema import SCHEMA_KEYS, suite_result
from chopinbot.model.formats import load_model
from chopinbot.music.states import States, transpose_states

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, tiny_dataset_dir):
    return load_model(str(tiny_model_dir)), Dataset(tiny_dataset_dir)


def test_continuations_are_generate_with_the_seed_index_as_random_seed(tiny):
    model, ds = tiny
    seeds, _ = held_out_seeds(ds, "test")
    seeds = seeds[:3]
    got = continue_seeds(model, seeds, seconds=20.0, overrides={"temperature": 0.9})
    for i, (c, seed) in enumerate(zip(got, seeds)):
        direct = generate(model, seed, GenerateConfig(seconds=20.0, random_seed=i, include_seed=False,
                                                      temperature=0.9))
        assert c.random_seed == i and np.array_equal(c.states.keys, direct.states.keys)
        assert len(c.excerpts) == 1 and c.excerpts[0].key == seed.key  # 20 s: one 20-s excerpt
    shifted = continue_seeds(model, seeds[:1], seconds=20.0, random_seeds=[7], excerpt_seconds=None)
    direct = generate(model, seeds[0], GenerateConfig(seconds=20.0, random_seed=7, include_seed=False))
    assert np.array_equal(shifted[0].states.keys, direct.states.keys) and shifted[0].excerpts == []


def test_context_zero_leaves_the_seed_alone(tiny):
    _, ds = tiny
    seeds, _ = held_out_seeds(ds, "test")
    alone = with_context(seeds, 0)
    assert all(len(a.history) == len(a.states) == 16 for a in alone)
    assert any(len(s.history) > 16 for s in seeds) and with_context(seeds, None) == list(seeds)
    assert all(len(a.history) <= 16 + 5 for a in with_context(seeds, 5))


def test_replay_of_the_seeds_own_context_is_total_and_real_replays_line_up(tiny):
    _, ds = tiny
    seeds, _ = held_out_seeds(ds, "test")
    seed = next(s for s in seeds if s.context is not None and len(s.context) >= 40)
    copied, _ = transpose_states(seed.context[:40], seed.home.shift_to(seed.key) + 3)  # transposed: still replay
    copied.seconds = np.full(len(copied), 0.5, np.float32)  # 20 s
    assert continuation_replays(seed, copied, 1) == [1.0]
    train = piece_replays(ds, "train")
    assert len(train) == len(split_excerpts(ds, "train")) and all(0 <= r <= 1 for r in train if not np.isnan(r))
    d = replay_distribution([0.0, 0.1, 0.5, 0.9, 1.0, float("nan")])
    assert d["n"] == 5 and d["above_0.8"] == pytest.approx(0.4) and d["composed"] == pytest.approx(0.4)


def test_what_really_followed_the_seeds_is_read_as_a_continuation_is(tiny):
    """The like-for-like replay reference: each seed's true continuation against the seed and its context.
    Its first excerpt after each seed is the true window, read against the 528 states of its key segment
    before it (a seed's context is its segment's), as piece_replays reads a piece's first segment (a later
    one, piece_replays reads with the piece before it too: never less); the next ones are read against the
    same history, as a continuation's are."""
    _, ds = tiny
    seeds, _ = held_out_seeds(ds, "test")
    same = true_continuation_replays(ds, "test", seeds, 3)
    assert len(same) == 3 * len(seeds)
    whole = np.nan_to_num(piece_replays(ds, "test", first=16))
    assert (whole >= np.nan_to_num(same[::3]) - 1e-12).all()
    opening = {min(s.start for s in ds.segments("test") if s.piece == p) for p in ds.pieces("test")}

    def first_segment(seg):
        return performed_chopin(seg) and seg.start in opening

    firsts, _ = held_out_seeds(ds, "test", keep=first_segment)
    np.testing.assert_allclose(true_continuation_replays(ds, "test", firsts, 1, keep=first_segment),
                               piece_replays(ds, "test", first=16, keep=first_segment))
    assert not np.allclose(np.nan_to_num(same[1::3]), np.nan_to_num(same[::3]))  # later excerpts: their own
    with pytest.raises(ValueError, match="held_out_seeds"):
        true_continuation_replays(ds, "test", seeds[:-1], 3)
    # a whole minute after each seed (the seeds of 20-s windows): one share a seed, read over 60 s
    minute = true_continuation_replays(ds, "test", seeds, 1, 60.0, windows=20.0)
    assert len(minute) == len(seeds) and not np.allclose(np.nan_to_num(minute), np.nan_to_num(same[::3]))
    with pytest.raises(ValueError, match="held_out_seeds"):  # the 60-s windows' seeds are not these
        true_continuation_replays(ds, "test", seeds, 1, 60.0)


class _TwoKeys:
    """A dataset of one piece in two key segments: A then B in C major, then A again in the second segment,
    which the key finder put in E-flat (its states shifted there, as a segment's are)."""

    def __init__(self):
        rng = np.random.default_rng(0)

        def passage(n):
            keys = np.zeros((n, 88), bool)
            keys[np.arange(n)[:, None], 39 + rng.integers(0, 24, (n, 3))] = True
            return States(keys, keys.copy(), np.full(n, 1.0, np.float32), np.full(n, 0.5, np.float32),
                          np.full(n, 64, np.uint8))

        a, b = passage(40), passage(40)  # 20 s each
        self.original = {0: States.concat([a, b]), 80: a}
        self._segments = [Segment("p", 0, 80, "C major", 0, False, 0, "test"),
                          Segment("p", 80, 120, "Eb major", 3, False, -3, "test")]

    def segments(self, split=None):
        return [s for s in self._segments if split in (None, s.split)]

    def states(self, seg):
        return transpose_states(self.original[seg.start], seg.shift)[0]


def test_a_reprise_in_another_key_segment_is_replay_of_the_piece_before_it():
    """The real side's replay reads the piece before an excerpt, not its key segment: A B | A (the reprise in a
    segment of its own, after a modulation) replays A whole; read within its segment it had nothing before it."""
    ds = _TwoKeys()
    assert piece_replays(ds, "test", 20.0) == [0.0, 0.0, 1.0]
    assert every_window_replays(ds, "test", 20.0, first=0) == [0.0, 0.0, 1.0]  # laid across the whole piece
    # from 16 states in: 16-56 (none heard before), 56-96 (B's last 24 states, then A's first 16: 9 of 33 n-grams)
    assert every_window_replays(ds, "test", 20.0, first=16) == [0.0, pytest.approx(9 / 33)]
    assert piece_replays(ds, "test", 20.0, before=40) == [0.0, 0.0, 0.0]  # 40 states before: B alone


def test_realism_suite_schema_and_figure_is_the_protocols(tiny):
    model, ds = tiny
    s = RealismSuiteSettings(split="test", seconds=20.0, repeats=1, composers=(), composed=False)
    r = realism_suite(model, ds, s, progress=False, label="tiny")
    assert set(SCHEMA_KEYS) <= set(r) and r["suite"] == "realism" and r["model"] == "tiny"
    json.dumps(r, allow_nan=False)  # plain JSON
    assert r["settings"]["repeats"] == 1 and r["figures"]["excerpts"] > 0
    # the figure is the protocol's: evaluate_realism of the same continuations
    direct = evaluate_realism(ds, model_composer(model, 20.0),
                              RealismSettings(split="test", continuation_seconds=20.0, composers=(), composed=False,
                                              test=ClassifierSettings(repeats=1)), progress=False)
    assert r["figures"]["accuracy"] == direct["rows"]["generated vs Chopin"]["accuracy_mean"]
    assert r["figures"]["seed_replay"] == direct["seed_replay"]["generated"]
    assert [row["feature"] for row in r["rows"] if row.get("kind") == "feature gap"] == [
        g["feature"] for g in direct["feature_gaps"]]


def test_controls_and_form_suites_run_in_the_schema(tiny_controls_model_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "controls.json"
    r = suites.run_suite("controls", str(tiny_controls_model_dir),
                         {"pieces": 2, "seconds": 4.0, "only": ("density", "loudness")}, out, progress=False)
    assert json.loads(out.read_text())["figures"] == r["figures"]
    assert set(r["figures"]) >= {"density 3: within_20pc", "loudness: pairs_in_order"}
    assert {row["setting"] for row in r["rows"]} == {"density 3", "density 6", "density 10", "loudness"}
    f = suites.run_suite("form", str(tiny_model_dir), {"pieces": 2, "aaba": 1, "seconds": 40.0}, progress=False)
    assert f["figures"]["ABA pieces"] == 2 and f["figures"]["AABA pieces"] == 1 and f["figures"]["plain pieces"] == 2
    assert 0 <= f["figures"]["ABA cadence"] <= 1 and len(f["rows"]) == 5


def test_a_suite_prepares_the_bundled_corpus_it_needs_once(tmp_path, capsys):
    """`--suite all` runs from a fresh clone: a missing dataset of a bundled corpus is prepared where the
    settings say (once), and any other missing dataset is refused with the command that makes it."""
    from chopinbot.evaluation.suites.controls import need_dataset

    ds = need_dataset(str(tmp_path / "c48"), "chopin48", progress=False)
    assert "preparing the bundled 'chopin48' corpus" in capsys.readouterr().out
    assert (tmp_path / "c48" / "manifest.json").exists() and len(ds.manifest["files"]) == 48
    need_dataset(str(tmp_path / "c48"), "chopin48", progress=False)
    assert "preparing" not in capsys.readouterr().out  # the second time it is there
    with pytest.raises(ConfigError, match="chopinbot prepare <files>"):
        need_dataset(str(tmp_path / "none"), "my-scores")


def test_settings_overrides_are_typed_and_checked():
    from chopinbot.evaluation.suites.controls import ControlsSettings
    from chopinbot.evaluation.suites.realism import RealismSuiteSettings

    o = suites.parse_overrides(ControlsSettings, ["pieces=3", "seconds=5", "only=density,key"])
    assert o == {"pieces": 3, "seconds": 5.0, "only": ("density", "key")}
    assert suites.parse_overrides(RealismSuiteSettings, ["decoding=repeat_boost=1;top_p=0.6"]) == {
        "decoding": {"repeat_boost": 1.0, "top_p": 0.6}}
    with pytest.raises(ConfigError, match="no setting"):
        suites.parse_overrides(ControlsSettings, ["piecez=3"])
    with pytest.raises(ConfigError, match="unknown suite"):
        suites.run_suite("nope")


def test_suite_all_dispatches_every_suite(monkeypatch, tmp_path, capsys):
    from chopinbot.cli import main

    ran = []
    real = suites._registry()

    def fake(name):
        def run(model, settings, progress):
            ran.append((name, model, settings))
            return suite_result(name, model, settings, {"figure": 1.0}, [], 0.0)
        return run

    monkeypatch.setattr(suites, "_registry", lambda: {n: dataclasses.replace(s, run=fake(n))
                                                       for n, s in real.items()})
    assert main(["evaluate", "--suite", "all", "--suite-out", str(tmp_path), "--set", "pieces=3", "--quiet"]) == 0
    assert [n for n, _, _ in ran] == ["realism", "controls", "key-hold", "style", "form", "infill"]
    assert {n: s.pieces for n, _, s in ran if hasattr(s, "pieces")} == {"controls": 3, "form": 3}
    for name, suite in real.items():
        assert json.loads((tmp_path / suite.json_name).read_text())["suite"] == name
    assert (tmp_path / "controls-check.json").exists()  # as docs/ has it
    ran.clear()
    assert main(["evaluate", "--suite", "realism", "--suite-out", str(tmp_path), "--set", "pieces=3"]) != 0
    assert "no suite asked for has the setting 'pieces=3'" in capsys.readouterr().err and ran == []


def test_evaluate_flags_read_their_defaults_and_bounds():
    from chopinbot.cli import build_parser
    from chopinbot.compose.generate import TEMPERATURE_RANGE
    from chopinbot.evaluation.report import EvalSettings

    p = build_parser("evaluate")
    a = p.parse_args(["evaluate"])
    d = EvalSettings()
    assert (a.pieces, a.steps, a.temperature, a.realism_seconds) == (d.pieces, d.steps, d.temperature,
                                                                     d.realism_seconds)
    with pytest.raises(SystemExit):
        p.parse_args(["evaluate", "--temperature", str(TEMPERATURE_RANGE[1] + 0.5)])
