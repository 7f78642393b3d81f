"""Generation with a tiny trained model: control, keys, primers, guards."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from chopinbot.app.request import ComposeRequest
from chopinbot.cli import main
from chopinbot.compose.generate import GenerateConfig, GenerationError, check_guards, generate
from chopinbot.compose.seeds import list_seeds, seed_from_primer, seed_from_test, source_tempo
from chopinbot.errors import ConfigError, MidiError
from chopinbot.evaluation.realism import CALIBRATION_DIR
from chopinbot.model.formats import load_model
from chopinbot.music.keys import Key
from chopinbot.music.states import States
from conftest import make_midi


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir)


def _seed_notes(res):
    n = res.notes
    return n[n[:, 0] < res.seed_end_beat - 1e-9]


def test_reproducible_byte_for_byte(model):
    seed = seed_from_test(0)
    a = generate(model, seed, GenerateConfig(steps=40, random_seed=7)).midi_bytes()
    b = generate(model, seed, GenerateConfig(steps=40, random_seed=7)).midi_bytes()
    c = generate(model, seed, GenerateConfig(steps=40, random_seed=8)).midi_bytes()
    assert a == b and a != c


def test_cli_same_flags_same_file(tiny_model_dir, tmp_path):
    args = ["generate", "--model", str(tiny_model_dir), "--steps", "30", "--random-seed", "3"]
    assert main(args + ["--out", str(tmp_path / "a.mid")]) == 0
    assert main(args + ["--out", str(tmp_path / "b.mid")]) == 0
    assert (tmp_path / "a.mid").read_bytes() == (tmp_path / "b.mid").read_bytes()
    assert main(args + ["--out", str(tmp_path / "a.mid")]) == 2  # exists: needs --force


def test_length_tempo_and_key_control(model):
    infos = list_seeds()
    minor_seed = next(i for i in infos if "minor" in i.key)
    seed = seed_from_test(minor_seed.index)
    res = generate(model, seed, GenerateConfig(steps=50, random_seed=1))
    assert len(res.generated) == 50 and res.key == seed.key
    timed = generate(model, seed, GenerateConfig(seconds=10, bpm=90, random_seed=1))
    secs = timed.generated.beats.astype(np.float64).cumsum() * 60 / 90
    assert secs[-1] >= 10 - 1e-6 and (len(secs) == 1 or secs[-2] < 10)
    assert timed.bpm == 90 and timed.score().tempos[0].qpm == pytest.approx(90, abs=0.01)
    # E minor: the seed part comes out transposed by the smallest shift from the seed's key
    moved = generate(model, seed, GenerateConfig(steps=10, key="E minor", random_seed=1))
    assert moved.key == Key(4, True)
    shift = seed.key.shift_to(Key(4, True))
    base, out = _seed_notes(res), _seed_notes(moved)
    assert len(base) == len(out)
    d = out[:, 2] - base[:, 2]
    assert np.all((d == shift) | (d == shift + 12) | (d == shift - 12))


def test_mode_mismatch_uses_relative_key_and_says_so(model):
    seed = seed_from_test(next(i.index for i in list_seeds() if "minor" in i.key))
    res = generate(model, seed, GenerateConfig(steps=5, key="C major", random_seed=1))
    assert res.key == Key(9, True) and any("relative" in g for g in res.guards)


def test_transposition_never_wraps(model, tmp_path):
    # a primer in B major reaching C8: to reach, e.g., C# major (+2) the top notes fold down an octave
    notes = [(i * 0.5, i * 0.5 + 0.5, p) for i, p in enumerate([71, 75, 78, 83, 107, 108, 106, 71])]
    seed = seed_from_primer(make_midi(tmp_path / "b.mid", notes, sharps=5), 8)
    res = generate(model, seed, GenerateConfig(steps=20, key="Db major", random_seed=2))
    n = res.notes
    assert n[:, 2].max() <= 108 and n[:, 2].min() >= 21
    top = _seed_notes(res)
    assert 109 - 12 <= top[:, 2].max() <= 108  # 108 + 2 would wrap; it moved down an octave instead


def _fsharp_minor_notes():
    # F# minor: i - iv - V(with E#) - i, with a melody
    chords = [[54, 57, 61], [59, 62, 66], [61, 65, 68], [54, 57, 61]]
    notes = []
    for i, ch in enumerate(chords):
        notes += [(i * 2, i * 2 + 2, p) for p in ch]
        notes += [(i * 2 + j * 0.5, i * 2 + j * 0.5 + 0.5, 69 + [0, 4, 2, -1][j]) for j in range(4)]
    return notes


@pytest.mark.parametrize("sharps", [3, None])
def test_primer_in_f_sharp_minor_continues_in_its_key(model, tmp_path, sharps):
    path = make_midi(tmp_path / "fsm.mid", _fsharp_minor_notes(), sharps=sharps, qpm=80)
    seed = seed_from_primer(path, 16)
    assert seed.key == Key(6, True) and seed.bpm == pytest.approx(80, rel=0.01)
    res = generate(model, seed, GenerateConfig(steps=20, random_seed=4))
    assert res.key == Key(6, True)
    # the primer comes back at its own pitches
    primer_pitches = sorted({p for _, _, p in _fsharp_minor_notes()})
    assert sorted(set(_seed_notes(res)[:, 2].astype(int))) == primer_pitches


def test_a_primer_that_ends_slowing_down_is_continued_at_its_own_tempo():
    # the primer: the Wanderer Fantasy's Adagio ends in a ritardando (its last two beats at 10-52 bpm);
    # read as its last 16 states it had given 34 bpm, and the continuation crawled
    primer = CALIBRATION_DIR / "Schubert" / "schub_d760_2.mid"
    seed = seed_from_primer(primer, 16)
    tail = seed.states
    assert 60 * tail.total_beats / tail.total_seconds < 40  # what the last 16 states alone say
    assert seed.bpm == pytest.approx(61, abs=2)  # the piece's last four bars
    assert seed_from_primer(primer, 16, context_states=0).bpm == seed.bpm  # the source's tempo, not the context's


def test_source_tempo_reads_the_last_beats_and_a_held_chord_does_not_drag_it():
    beats = np.array([0.5] * 40 + [4.0], np.float32)  # 20 beats at 120 bpm, then a chord held 4 beats for 6 s
    secs = np.array([0.25] * 40 + [6.0], np.float32)
    states = States(np.zeros((41, 88), bool), np.zeros((41, 88), bool), beats, secs, np.zeros(41, np.uint8))
    assert source_tempo(states) == pytest.approx(120)  # beats over seconds would say 80 over the last 16 beats
    assert source_tempo(states[:6]) == pytest.approx(120)  # shorter than 16 beats: all of it
    slower = secs.copy()
    slower[:20] = 0.5  # the first 10 beats at 60 bpm: all but 2 of them before the last 16 beats
    assert source_tempo(States(states.keys, states.onsets, beats, slower, states.velocity)) == pytest.approx(120)
    # read over the whole piece (24 beats), 14 of them are at 60 bpm or slower
    assert source_tempo(States(states.keys, states.onsets, beats, slower, states.velocity), 30) == pytest.approx(60)


def _format0(path):
    """A hand-written format-0 file: one track, two channels, running status."""
    ev = b""
    for pitch, ch in ((60, 0), (64, 1), (67, 0)):
        ev += b"\x00" + bytes([0x90 | ch, pitch, 80])
    ev += b"\x83\x60" + bytes([0x80, 60, 0]) + b"\x00" + bytes([0x81, 64, 0]) + b"\x00" + bytes([0x80, 67, 0])
    ev += b"\x00\xff\x2f\x00"
    data = b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(ev)) + ev
    path.write_bytes(data)
    return path


def test_format0_primer(model, tmp_path):
    seed = seed_from_primer(_format0(tmp_path / "f0.mid"), 16)
    assert seed.key == Key(0, False)
    assert seed.states.keys[0].sum() == 3 and seed.states.total_beats == pytest.approx(1.0)
    res = generate(model, seed, GenerateConfig(steps=8, random_seed=1))
    assert len(res.generated) == 8


@pytest.mark.parametrize("kind, msg", [("text", "not a MIDI file"), ("empty", "no notes"), ("drums", "drum")])
def test_bad_primers_clear_error_and_no_file(tiny_model_dir, tmp_path, capsys, kind, msg):
    p = tmp_path / "p.mid"
    if kind == "text":
        p.write_text("hello")
    elif kind == "empty":
        make_midi(p, [])
    else:
        make_midi(p, [(0, 1, 36)], drum=True)
    with pytest.raises(MidiError, match=msg):
        seed_from_primer(p)
    out = tmp_path / "o.mid"
    assert main(["generate", "--model", str(tiny_model_dir), "--primer", str(p), "--out", str(out)]) == 1
    assert msg in capsys.readouterr().err and not out.exists()


def _states(keys_rows, onsets_rows, beats=0.5):
    k = np.zeros((len(keys_rows), 88), bool)
    o = np.zeros_like(k)
    for i, (ks, os_) in enumerate(zip(keys_rows, onsets_rows)):
        k[i, ks] = True
        o[i, os_] = True
    n = len(keys_rows)
    return States(k, o, np.full(n, beats, np.float32), np.full(n, beats, np.float32), np.full(n, 70, np.uint8))


def test_guards_detect_silence_stuck_and_loops():
    assert check_guards(_states([[]] * 10, [[]] * 10))[0].startswith("silence")
    stuck = _states([[39]] * 40, [[39]] + [[]] * 39)
    assert any(p.startswith("stuck") for p in check_guards(stuck))
    loop = _states([[39], [43]] * 30, [[39], [43]] * 30)
    assert any(p.startswith("looping") for p in check_guards(loop))
    fine = _states([[39 + (i * 5) % 12] for i in range(60)], [[39 + (i * 5) % 12] for i in range(60)])
    assert check_guards(fine) == []


def test_every_state_changes_something_and_silence_cannot_persist(model):
    """No key reaches a threshold of 1: the original's decoding fell silent.
    A state boundary is a change, so after one silent state the likeliest key starts."""
    seed = seed_from_test(0)
    res = generate(model, seed, GenerateConfig(steps=30, threshold=1.0, min_keys=0, include_seed=False, retry=False))
    s = res.states
    assert s.onsets.any(1).sum() >= 14 and not any(p.startswith("silence") for p in res.guards)
    assert not ((s.keys[1:] == s.keys[:-1]).all(1) & ~s.onsets[1:].any(1)).any()
    sampled = generate(model, seed, GenerateConfig(steps=200, random_seed=2, min_keys=0))
    g = sampled.states[sampled.seed_len - 1 :]
    assert not ((g.keys[1:] == g.keys[:-1]).all(1) & ~g.onsets[1:].any(1)).any()
    assert generate(model, seed, GenerateConfig(steps=100, random_seed=2, min_keys=1)).generated.keys.any(1).all()
    with pytest.raises(GenerationError, match="silence"):
        generate(model, seed, GenerateConfig(steps=1, threshold=1.0, min_keys=0, retry=False, include_seed=False))


def test_the_shipped_model_rests_about_as_often_as_the_corpus_by_default():
    """min_keys 0 by default: the joint decoder rests with the model's own odds (the 48 pieces' training
    states rest in 4.2 %); ``min_keys=1`` forbids it."""
    shipped = load_model(None)
    def rests(**kw) -> float:
        return float(np.mean(np.concatenate([~generate(shipped, seed_from_test(i), GenerateConfig(
            steps=200, random_seed=i, **kw)).generated.keys.any(1) for i in range(4)])))
    assert 0.002 < rests() < 0.10
    assert rests(min_keys=1) == 0.0


def test_guard_retries_are_recorded(model, monkeypatch):
    import chopinbot.compose.generate as gen

    verdicts = iter([["stuck: 30 states in a row with nothing struck"], []])
    monkeypatch.setattr(gen, "check_guards", lambda new, loops=True: next(verdicts))
    # (Chopin's runs off: they stop a figure in the retried piece, a guard line of its own)
    res = generate(model, seed_from_test(0), GenerateConfig(steps=30, threshold=0.5, random_seed=1, chopin_runs=False))
    assert res.guards == ["stuck: 30 states in a row with nothing struck -> retried with threshold lowered to 0.40"]
    assert res.config.threshold == pytest.approx(0.4)


def test_batch_and_outputs(model, tmp_path):
    results = generate(model, seed_from_test(1), GenerateConfig(steps=20, random_seed=5), batch=3)
    assert len(results) == 3 and len({r.midi_bytes() for r in results}) == 3
    r = results[0]
    assert r.notes.shape[1] == 4 and r.summary().startswith("20 new states")
    png = r.save_png(tmp_path / "x.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert r.midi_bytes("seed") != r.midi_bytes("generated")


def test_key_min_p(capsys):
    """A silent key may start only if its probability is at least min-p of the likeliest silent key's."""
    from chopinbot.compose.sampling import Sampler

    model = load_model("lstm-repeats")  # keys drawn independently (a joint model's draw needs its stepper)
    with pytest.raises(ConfigError, match="min-p"):
        GenerateConfig(key_min_p=1.5).validate()
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--key-min-p", "-0.1"])
    assert exit_.value.code == 2 and "key-min-p" in capsys.readouterr().err
    s = Sampler(model, GenerateConfig(key_top_k=0, key_local_p=0.0, key_min_p=1.0, min_keys=0),
                np.random.default_rng(0))
    kp = np.full((500, 88), 0.3)
    kp[:, 40] = 0.9  # the likeliest silent key
    prev = np.zeros((500, 88), bool)
    prev[:, 60] = True  # a sounding key is never filtered
    keys, _ = s._draw(kp, None, prev)
    assert not keys[:, np.r_[0:40, 41:60, 61:88]].any() and keys[:, 40].any() and keys[:, 60].any()
    assert ComposeRequest(key_min_p=0.05).generate_config().key_min_p == 0.05  # the app's control
    with pytest.raises(ConfigError, match="min-p"):
        ComposeRequest(key_min_p=2.0).check_limits()
    a = generate(model, seed_from_test(0), GenerateConfig(steps=40, random_seed=0, key_min_p=0.5))
    b = generate(model, seed_from_test(0), GenerateConfig(steps=40, random_seed=0))
    assert len(a.generated) == len(b.generated) == 40


def test_a_long_primer_warms_the_model_before_its_seed_window():
    """Up to 512 states before the seed window are read first: they change what follows, and are not output."""
    from chopinbot.constants import BUNDLED_CORPUS_DIR, WARM_STATES

    primer = BUNDLED_CORPUS_DIR / "chpn_op66.mid"  # 1,400+ states: the context is full
    seed = seed_from_primer(primer, 16)
    bare = seed_from_primer(primer, 16, context_states=0)
    assert len(seed.context) == WARM_STATES and len(seed.history) == WARM_STATES + 16 and bare.context is not None
    assert len(bare.history) == 16
    assert seed.history_start_beat == pytest.approx(seed.start_beat - float(seed.context.beats.sum()), abs=1e-3)
    model = load_model()  # the shipped model
    cfg = GenerateConfig(steps=48, random_seed=3)
    warm, cold = generate(model, seed, cfg), generate(model, bare, cfg)
    assert warm.seed_len == cold.seed_len == 16  # the context is read, never written out
    np.testing.assert_array_equal(warm.states.keys[:16], cold.states.keys[:16])
    assert not np.array_equal(warm.generated.keys, cold.generated.keys)


def test_the_original_design_is_bundled_by_name_and_composes():
    """The original design's configuration (2x512 LSTM on 16-state windows, RMSprop, the 20-node duration
    head, no note head), trained by our code, stays available as ``--model original``."""
    model = load_model("original")
    c, t = model.config, model.meta["train"]
    assert (c.layers, c.hidden, c.duration_head, c.note_head, c.onset_head) == (2, 512, "seed", False, False)
    assert (t["window"], t["optimizer"]) == (16, "rmsprop")
    res = generate(model, seed_from_test(0), GenerateConfig(steps=24, random_seed=0))
    assert len(res.generated) == 24 and res.generated.onsets.any()


def test_cli_advises_the_repeat_span_when_a_minute_mostly_played_its_primer_back(tmp_path, capsys):
    """Test seed 300 reads 512 states of the Funeral March first; its minute (random seed 1) plays the march
    back whole, and the summary says which flag leaves the rest to the model; with that flag it composes a
    quarter of the minute itself and says nothing more."""
    advice = "mostly played back from the primer: --repeat-span 96"
    args = ["generate", "--seed-index", "300", "--seconds", "60", "--random-seed", "1", "--no-include-seed"]
    assert main([*args, "--out", str(tmp_path / "a.mid")]) == 0
    out = capsys.readouterr().out
    assert "replayed 100%" in out and advice in out
    assert main([*args, "--repeat-span", "96", "--out", str(tmp_path / "b.mid")]) == 0
    out = capsys.readouterr().out
    assert "composed 25%" in out and advice not in out
