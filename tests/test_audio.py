"""Audio rendering with FluidSynth (skipped where it is not installed) and the
messages a user gets when it is not."""

from __future__ import annotations

import shutil
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest

from chopinbot.constants import BUNDLED_CORPUS_DIR
from chopinbot.errors import ChopinBotError, ConfigError, MidiError
from chopinbot.music.midi import read_midi, write_score
from chopinbot.music.states import notes_to_states, states_to_score
from chopinbot.render import audio
from chopinbot.render.audio import AudioUnavailable, audio_available, encode_audio, render_wav, render_wav_bytes

needs_fluidsynth = pytest.mark.skipif(not audio_available()[0], reason=audio_available()[1])
BPM = 120.0
EXCERPT_BEATS = 6.0  # 3 s at 120 bpm: long enough to hear, quick to render


@pytest.fixture(scope="module")
def excerpt_midi(tmp_path_factory) -> tuple[Path, float]:
    """The first bars of prelude 7, written as MIDI at a steady tempo; (path, seconds)."""
    states = notes_to_states(read_midi(BUNDLED_CORPUS_DIR / "chpn-p7.mid"))[0]
    n = int(np.searchsorted(np.cumsum(states.beats), EXCERPT_BEATS)) + 1
    path = write_score(states_to_score(states[:n], bpm=BPM), tmp_path_factory.mktemp("audio") / "p7.mid")
    notes = read_midi(path)
    return path, float(notes.seconds_at(np.array([notes.end.max()]))[0])


@pytest.fixture(scope="module")
def rendered(excerpt_midi) -> Path:
    midi, _ = excerpt_midi
    return render_wav(midi, midi.with_suffix(".wav"), sample_rate=22050)


def _samples(path: Path) -> tuple:
    """(wave params, int16 samples) of a WAV file."""
    with wave.open(str(path), "rb") as w:
        return w.getparams(), np.frombuffer(w.readframes(w.getnframes()), "<i2")


@needs_fluidsynth
def test_render_wav_is_valid_and_matches_the_midi(excerpt_midi, rendered):
    _, midi_seconds = excerpt_midi
    params, x = _samples(rendered)
    assert params.framerate == 22050 and params.sampwidth == 2 and params.nchannels == 2
    seconds = params.nframes / params.framerate
    # the tail after the last note-off is trimmed to the audible release + 0.25 s
    assert midi_seconds <= seconds <= midi_seconds + 1.5
    # prelude 7 is soft (mean velocity 34); normalisation brings its peak to -1 dBFS
    assert 29000 <= np.abs(x.astype(np.int32)).max() <= 29300
    # no temp files or render folders left beside the output
    assert sorted(p.name for p in rendered.parent.iterdir()) == ["p7.mid", "p7.wav"]


@needs_fluidsynth
def test_render_wav_bytes_leaves_nothing_behind_and_trim_shortens(excerpt_midi, rendered, tmp_path, monkeypatch):
    midi, midi_seconds = excerpt_midi
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where TemporaryDirectory goes
    data = render_wav_bytes(midi.read_bytes(), sample_rate=22050, trim=False)
    assert list(tmp_path.iterdir()) == []
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    untrimmed = tmp_path / "u.wav"
    untrimmed.write_bytes(data)
    untrimmed_frames = _samples(untrimmed)[0].nframes
    # FluidSynth runs on for the reverb (about 2.5 s); trimming removes most of it
    assert untrimmed_frames > _samples(rendered)[0].nframes + 22050


@needs_fluidsynth
def test_bad_midi_is_a_midi_error(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"not midi at all")
    with pytest.raises(MidiError):
        render_wav(bad, tmp_path / "out.wav")
    assert not (tmp_path / "out.wav").exists()


def test_missing_soundfont_names_the_packages(tmp_path, monkeypatch):
    monkeypatch.delenv(audio.SOUNDFONT_ENV, raising=False)
    monkeypatch.setattr(audio, "SOUNDFONT_CANDIDATES", [str(tmp_path / "none" / "*.sf2")])
    assert audio.find_soundfont() is None
    ok, message = audio_available()
    assert not ok and "fluid-soundfont-gm" in message and "apt-get install" in message
    midi = tmp_path / "x.mid"
    midi.write_bytes(b"MThd")
    with pytest.raises(AudioUnavailable, match="fluid-soundfont-gm"):
        render_wav(midi, tmp_path / "x.wav")
    assert issubclass(AudioUnavailable, ChopinBotError)


def test_missing_fluidsynth_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no programs at all
    ok, message = audio_available()
    assert not ok and "'fluidsynth'" in message


def test_soundfont_env_var_wins_and_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv(audio.SOUNDFONT_ENV, str(tmp_path / "typo.sf2"))
    assert audio.find_soundfont() is None
    assert "typo.sf2" in audio_available()[1]
    fake = tmp_path / "fake.sf2"
    fake.write_bytes(b"RIFF\0\0\0\0WAVE" + bytes(100))  # a WAV renamed, not a soundfont
    monkeypatch.setenv(audio.SOUNDFONT_ENV, str(fake))
    assert audio.find_soundfont() == fake
    ok, message = audio_available()
    assert not ok and "not a SoundFont" in message
    with pytest.raises(AudioUnavailable, match="not a SoundFont"):
        render_wav(tmp_path / "x.mid", tmp_path / "x.wav", soundfont=fake)


@needs_fluidsynth
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_encode_ogg(rendered, tmp_path):
    out = encode_audio(rendered, tmp_path / "p7.ogg")
    data = out.read_bytes()
    assert data[:4] == b"OggS" and len(data) > 2000
    assert [p.name for p in tmp_path.iterdir()] == ["p7.ogg"]


def test_encode_rejects_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match="mp3"):
        encode_audio(tmp_path / "x.wav", tmp_path / "x.flac")


def test_encode_without_ffmpeg_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AudioUnavailable, match="apt-get install .*ffmpeg"):
        encode_audio(tmp_path / "x.wav", tmp_path / "x.ogg")
