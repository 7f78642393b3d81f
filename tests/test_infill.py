"""Infill (`chopinbot generate --primer FILE --infill START END`): a span composed anew, chosen
by the model's likelihood of what follows it; the rest of the piece untouched."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chopinbot.cli import main
from chopinbot.compose.generate import LOOP_BROKEN, GenerateConfig
from chopinbot.compose.infill import (
    MAX_SPAN_BEATS,
    bar_start_tick,
    continuation_nll,
    fit_to_length,
    infill,
    infill_piece,
    parse_span,
    read_source,
)
from chopinbot.constants import BUNDLED_CORPUS_DIR
from chopinbot.errors import ConfigError
from chopinbot.model.formats import load_model
from chopinbot.music.midi import read_midi_bytes
from chopinbot.music.states import States, notes_to_states, states_to_notes, transpose_states

pytestmark = pytest.mark.usefixtures("one_thread")

PRELUDE = BUNDLED_CORPUS_DIR / "chpn-p20.mid"  # 13 bars of 4/4, 71 states, every bar line a state boundary
CFG = GenerateConfig(random_seed=3)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir / "best")


@pytest.fixture(scope="module")
def result(model):
    return infill(model, PRELUDE, 5, 8, "bars", CFG, candidates=6)


def _same(a: States, b: States) -> bool:
    return all(np.array_equal(x, y) for x, y in ((a.keys, b.keys), (a.onsets, b.onsets), (a.beats, b.beats),
                                                 (a.seconds, b.seconds), (a.velocity, b.velocity)))


def test_the_piece_outside_the_span_is_unchanged(result):
    src = read_source(PRELUDE).states
    (a, b), (na, nb) = result.original_span, result.span
    assert na == a
    assert _same(result.states[:a], src[:a])
    assert _same(result.states[nb:], src[b:])
    # as notes: those over before the span, and those struck after it, are the source's
    start, end = result.span_beats
    old, new = states_to_notes(src), result.notes
    assert np.array_equal(old[old[:, 1] <= start], new[new[:, 1] <= start])
    assert np.array_equal(old[old[:, 0] > end], new[new[:, 0] > end])
    assert not _same(result.new_span, src[a:b])  # and the span itself is new


def test_the_span_keeps_its_length_in_beats_and_seconds_so_the_rest_stays_in_place(result):
    src = read_source(PRELUDE)
    a, b = result.original_span
    tpq = src.ticks_per_quarter
    # bars 5-7 (END exclusive): from bar 5's line to bar 8's, 12 beats of 4/4
    assert src.boundary_ticks[a] == bar_start_tick(5, src.time_signatures, tpq) == 4 * 4 * tpq
    assert src.boundary_ticks[b] == bar_start_tick(8, src.time_signatures, tpq) == 7 * 4 * tpq
    start, end = result.span_beats
    assert (start, end) == (16.0, 28.0)
    assert result.new_span.total_beats == pytest.approx(12.0, abs=1e-6)
    assert result.new_span.total_seconds == pytest.approx(src.states[a:b].total_seconds, rel=1e-5)
    assert result.states.total_beats == pytest.approx(src.states.total_beats, abs=1e-6)


def test_the_kept_span_is_the_candidate_with_the_lowest_continuation_nll(result):
    assert len(result.candidate_nll) == 6 == len(result.candidates)
    assert result.chosen == int(np.argmin(result.candidate_nll))
    assert result.nll == result.candidate_nll.min() < np.sort(result.candidate_nll)[1]  # the candidates differ
    kept, _ = transpose_states(result.candidates[result.chosen], result.key.home.shift_to(result.key))
    assert np.array_equal(kept.keys, result.new_span.keys)
    assert np.isfinite(result.original_nll)
    assert result.lookahead == min(64, len(result.original) - result.original_span[1])
    assert "the best of 6 candidates" in result.summary()


def test_continuation_nll_is_the_models_nll_of_what_follows(model):
    """The shared-history batch gives what one forward over the whole sequence gives, per span."""
    piece = read_source(PRELUDE).states
    before, after = piece[:20], piece[30:50]
    spans = [piece[20:30], piece[40:47], piece[5:6]]
    got = continuation_nll(model, before, spans, after, start_beat=0.0)
    lay = model.config.layout
    for span, value in zip(spans, got):
        q = States.concat([before, span, after])
        x = torch.from_numpy(lay.sequence_rows(q.keys, q.onsets, q.beats, 0.0, q.velocity))[None]
        k = torch.from_numpy(q.keys[1:].astype(np.float32))[None]
        o = torch.from_numpy(q.onsets[1:].astype(np.float32))[None]
        with torch.no_grad():
            out, _ = model(x[:, :-1], None, (k, o))
        nll = F.binary_cross_entropy_with_logits(out.key_logits, k, reduction="none").sum(-1)[0]
        assert value == pytest.approx(float(nll[-len(after):].mean()), rel=1e-4)
    assert len(set(np.round(got, 6))) == 3  # the span changes the score


def test_fit_to_length_cuts_or_holds_the_last_state():
    s = States(np.ones((3, 88), bool), np.zeros((3, 88), bool), np.array([1.0, 2.0, 1.0], np.float32),
               np.ones(3, np.float32), np.zeros(3, np.uint8))
    cut = fit_to_length(s, 48 * 2 + 12, 48)
    assert len(cut) == 2 and cut.beats.tolist() == [1.0, 1.25]
    held = fit_to_length(s, 48 * 6, 48)
    assert len(held) == 3 and held.total_beats == 6.0


def test_bars_follow_the_time_signatures():
    assert bar_start_tick(1, [], 480) == 0
    assert bar_start_tick(3, [], 480) == 2 * 4 * 480  # no signature: 4/4
    sigs = [(0, 4, 4), (2 * 4 * 480, 3, 4), (2 * 4 * 480 + 2 * 3 * 480, 6, 8)]
    assert bar_start_tick(3, sigs, 480) == 8 * 480
    assert bar_start_tick(4, sigs, 480) == 8 * 480 + 3 * 480
    assert bar_start_tick(6, sigs, 480) == 8 * 480 + 6 * 480 + 3 * 480  # 6/8 = 3 quarters


def test_seconds_move_to_the_nearest_state_boundary(model):
    src = read_source(PRELUDE)
    r = infill(model, PRELUDE, 20.3, 31.0, "seconds", CFG, candidates=2)
    a, b = r.original_span
    for edge, want in ((a, 20.3), (b, 31.0)):
        assert abs(src.boundary_seconds[edge] - want) == np.abs(src.boundary_seconds - want).min()
    assert r.states.total_seconds == pytest.approx(src.states.total_seconds, rel=1e-5)
    assert r.span_seconds == pytest.approx((src.boundary_seconds[a], src.boundary_seconds[b]), abs=1e-4)


def test_seconds_count_from_the_files_start_not_its_first_note(model):
    late = BUNDLED_CORPUS_DIR / "chpn-p7.mid"  # its first note comes two beats into the file
    src = read_source(late)
    assert src.boundary_seconds[0] > 0.5
    r = infill(model, late, 12.0, 20.0, "seconds", CFG, candidates=2)
    a, b = r.original_span
    assert r.span_seconds == pytest.approx((src.boundary_seconds[a], src.boundary_seconds[b]), abs=1e-4)
    assert abs(r.span_seconds[0] - 12.0) < 1.5 and f"{r.span_seconds[0]:.1f}-" in r.summary()


@pytest.mark.parametrize("start, end, unit, message", [
    (8, 5, "bars", "END must come after START"),
    (5, 5, "bars", "END must come after START"),
    (40, 44, "bars", "past the piece's end"),
    (200.0, 210.0, "seconds", "past the piece's end"),
    (10, 14, "bars", "continuation, not an infill"),
    (60.0, 400.0, "seconds", "continuation, not an infill"),
    (1, 3, "bars", "start after the piece's first notes"),
    (0, 3, "bars", "bar 1 or later"),
    (-1.0, 3.0, "seconds", "0 s or later"),
    (5.5, 7, "bars", "whole bar numbers"),
    (20.0, 20.1, "seconds", "holds no state"),
    (5, 7, "beats", "unit must be"),
])
def test_clear_errors_for_a_span_that_is_not_inside_the_piece(model, start, end, unit, message):
    with pytest.raises(ConfigError, match=message):
        infill(model, PRELUDE, start, end, unit, CFG, candidates=2)


def test_clear_errors_for_settings(model, tiny_model_dir):
    with pytest.raises(ConfigError, match="at most 64 beats"):
        long = States.concat([read_source(PRELUDE).states] * 3)
        infill_piece(model, long, read_source(PRELUDE).key_at(1, 2), 2, 150, CFG)
    assert MAX_SPAN_BEATS == 64
    with pytest.raises(ConfigError, match="candidates must be 1..64"):
        infill(model, PRELUDE, 5, 8, "bars", CFG, candidates=0)
    with pytest.raises(ConfigError, match="key and tempo"):
        infill(model, PRELUDE, 5, 8, "bars", GenerateConfig(key="D major"))
    with pytest.raises(ConfigError, match="model with controls"):
        infill(model, PRELUDE, 5, 8, "bars", CFG, candidates=2, steer=True)
    with pytest.raises(ConfigError, match="both be seconds or both bars"):
        parse_span("5b", "12.5")
    with pytest.raises(ConfigError, match="give seconds"):
        parse_span("five", "6")
    assert parse_span("5b", "9b") == (5.0, 9.0, "bars")
    assert parse_span("12.5", "20") == (12.5, 20.0, "seconds")


def test_a_model_with_controls_infills_steered_or_not(tiny_controls_model_dir):
    m = load_model(tiny_controls_model_dir / "best")
    plain = infill(m, PRELUDE, 5, 8, "bars", CFG, candidates=3)
    steered = infill(m, PRELUDE, 5, 8, "bars", CFG, candidates=3, steer=True)
    assert steered.steered and not plain.steered
    assert plain.original_nll == pytest.approx(steered.original_nll)  # scored with the controls absent either way
    assert not np.array_equal(plain.new_span.keys, steered.new_span.keys)


def test_cli_writes_the_whole_piece_with_the_span_replaced(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "infilled.mid"
    args = ["generate", "--model", str(tiny_model_dir), "--primer", str(PRELUDE), "--infill", "5b", "8b",
            "--infill-candidates", "3", "--random-seed", "3", "--out", str(out), "--png"]
    assert main(args) == 0
    assert out.is_file() and out.with_suffix(".png").is_file()
    assert "the best of 3 candidates" in capsys.readouterr().out
    back, _, _ = notes_to_states(read_midi_bytes(out.read_bytes()))
    src = read_source(PRELUDE).states
    a = infill(load_model(tiny_model_dir / "best"), PRELUDE, 5, 8, "bars", CFG, candidates=3).original_span[0]
    assert np.array_equal(back.keys[:a], src.keys[:a]) and np.array_equal(back.beats[:a], src.beats[:a])
    np.testing.assert_allclose(back.seconds[:a], src.seconds[:a], rtol=1e-3)  # the source's own timing
    assert main(args) == 2 and "exists" in capsys.readouterr().err  # no overwrite without --force


@pytest.mark.parametrize("extra, message", [
    ([], "needs --primer"),
    (["--primer", str(PRELUDE), "--batch", "2"], "one piece"),
    (["--primer", str(PRELUDE), "--seconds", "10"], "the span's own"),
    (["--primer", str(PRELUDE), "--key", "D"], "keeps the piece's key"),
])
def test_cli_infill_errors(tiny_model_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "x.mid"
    assert main(["generate", "--model", str(tiny_model_dir), "--infill", "5b", "8b", "--out", str(out)] + extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_loop_broken_in_the_span_is_said_at_its_time_in_the_file():
    """The span is composed as a continuation from 0 s; the guard gives each loop broken at its time in the
    file the user named (lstm-repeats at threshold 0.95 goes round two states, broken twice in 10-16 s)."""
    res = infill(load_model("lstm-repeats"), BUNDLED_CORPUS_DIR / "chp_op18.mid", 10, 16,
                 cfg=GenerateConfig(threshold=0.95, steps=None), candidates=2)
    said = [g for g in res.guards if g.startswith(LOOP_BROKEN)]
    assert len(said) == 1 and said[0].startswith(f"{LOOP_BROKEN} 2 times")
    times = [float(t) for t in re.findall(r"at (\d+\.\d) s,", said[0])]
    a, b = res.span_seconds
    assert len(times) == 2 and all(a < t < b for t in times), (times, (a, b))
