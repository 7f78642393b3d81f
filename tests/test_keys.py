"""Keys: detection on the real Preludes, naming, parsing and shifts."""

from __future__ import annotations

import pytest

from chopinbot.errors import ConfigError
from chopinbot.music.keys import Key, detect_key, parse_key, pitch_class_histogram
from conftest import PRELUDE_KEYS


def test_all_24_prelude_keys(dataset):
    found = {}
    for f in dataset.manifest["files"]:
        if f["name"].startswith("chpn-p"):
            found[int(f["name"][6:-4])] = f["segments"][0]
    assert len(found) == 24
    for i, truth in enumerate(PRELUDE_KEYS, start=1):
        expected = parse_key(truth)
        seg = found[i]
        assert (seg["tonic"], seg["minor"]) == (expected.tonic, expected.minor), f"prelude {i}: {seg['key']} != {truth}"


def test_relative_minor_is_not_read_as_major(tmp_path):
    # An A minor cadence (A, E, G#, A) under a C major (no sharps) signature.
    import numpy as np

    from chopinbot.music.midi import read_midi
    from chopinbot.music.states import notes_to_states
    from conftest import make_midi

    notes = [(0, 2, 57), (0, 2, 60), (0, 2, 64), (2, 3, 52), (2, 3, 56), (2, 3, 59), (3, 5, 57), (3, 5, 64), (3, 5, 69)]
    s = notes_to_states(read_midi(make_midi(tmp_path / "a.mid", notes, sharps=0)))[0]
    hist = pitch_class_histogram(s.keys, s.beats)
    assert detect_key(hist, 0) == Key(9, True)
    assert detect_key(hist, None) == Key(9, True)
    assert np.isclose(hist.sum(), (s.keys.sum(axis=1) * s.beats).sum())


@pytest.mark.parametrize(
    "text, tonic, minor",
    [("C", 0, False), ("a", 9, True), ("A minor", 9, True), ("F#m", 6, True), ("f# minor", 6, True),
     ("Eb", 3, False), ("eb", 3, True), ("Bbm", 10, True), ("Db major", 1, False), ("c#", 1, True)],
)
def test_parse_key(text, tonic, minor):
    assert parse_key(text) == Key(tonic, minor)


@pytest.mark.parametrize("bad", ["H", "C##", "", "major", "X minor"])
def test_parse_key_rejects(bad):
    with pytest.raises(ConfigError, match="unknown key"):
        parse_key(bad)


def test_shift_home_is_smallest():
    assert Key(7, False).shift_home == 5  # G -> C: up 5
    assert Key(6, False).shift_home == -6  # F# -> C: down 6 (never +6)
    assert Key(6, True).shift_home == 3  # f# -> a: up 3
    assert Key(2, False).shift_home == -2
    assert all(-6 <= k.shift_home <= 5 for k in [Key(t, m) for t in range(12) for m in (0, 1)])
