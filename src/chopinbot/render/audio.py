"""Offline audio: MIDI -> WAV with FluidSynth and a General MIDI soundfont,
WAV -> mp3/ogg/opus with ffmpeg.

Both are external programs (Debian packages ``fluidsynth``,
``fluid-soundfont-gm`` and ``ffmpeg``; no PyPI package ships a GM soundfont),
run without a shell, with list arguments and a timeout.  Every output is
written atomically.

FluidSynth keeps rendering until the reverb has died away, which leaves about
2.5 s of near-silence after the last note.  :func:`render_wav` trims that tail
to 0.25 s after the last audible sample (above -60 dBFS), never cutting before
the MIDI's last note-off, so the release of the final chord is kept.  It
then scales the loudest sample to -1 dBFS (``normalize``).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from chopinbot.errors import ChopinBotError, ConfigError
from chopinbot.io_utils import atomic_write
from chopinbot.music.midi import read_midi

SOUNDFONT_ENV = "CHOPINBOT_SOUNDFONT"
# Searched in order after the environment variable (Debian/Ubuntu locations).
SOUNDFONT_CANDIDATES: list[str] = [
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/*.sf2",
]
INSTALL_HINT = (
    "On Debian/Ubuntu install them with: "
    "sudo apt-get install --no-install-recommends fluidsynth fluid-soundfont-gm "
    f"(or point {SOUNDFONT_ENV} at any General MIDI .sf2 file)."
)
# FluidSynth's gain acts before its conversion to 16 bits, where loud chords
# clip: at 1.0 the densest bundled pieces (op10/12, op53) peak at 73 % of full
# scale, so 0.8 keeps headroom for denser generated chords.  The final level is
# set afterwards by normalisation, not by the gain.
DEFAULT_GAIN = 0.8
# Rendering runs 45-89x faster than real time on a 2-core machine; allow the
# piece's own length again on top of a fixed 30 s for loading the 148 MB soundfont.
_TIMEOUT_BASE_S = 30.0
_SILENCE_LEVEL = 33  # int16 amplitude of -60 dBFS
_TAIL_PAD_S = 0.25
_PEAK_TARGET = 29204  # int16 amplitude of -1 dBFS
_MAX_BOOST = 31.6  # +30 dB: a near-silent render stays quiet instead of becoming loud noise
_ENCODERS: dict[str, list[str]] = {
    ".mp3": ["-f", "mp3", "-codec:a", "libmp3lame", "-q:a", "4"],
    ".ogg": ["-f", "ogg", "-codec:a", "libvorbis", "-q:a", "5"],
    ".opus": ["-f", "opus", "-codec:a", "libopus", "-b:a", "96k"],
}


class AudioUnavailable(ChopinBotError):
    """FluidSynth, a soundfont or ffmpeg is missing; the message says how to install it."""


def find_soundfont() -> Path | None:
    """The General MIDI soundfont to use, or None.

    ``$CHOPINBOT_SOUNDFONT`` wins when set; if it names no file the result is
    None (a mistyped path should be reported, not silently replaced).  Then
    the paths of :data:`SOUNDFONT_CANDIDATES`, which may be glob patterns.
    """
    env = os.environ.get(SOUNDFONT_ENV)
    if env:
        return Path(env) if Path(env).is_file() else None
    for pattern in SOUNDFONT_CANDIDATES:
        for hit in sorted(glob.glob(pattern)):
            if Path(hit).is_file():  # follows symlinks: a dangling one is skipped
                return Path(hit)
    return None


def _not_a_soundfont(path: Path) -> str | None:
    """Why ``path`` is not a SoundFont 2 file, or None if it is one.

    FluidSynth given a bad soundfont prints an error yet exits 0 with a
    silent WAV, so the RIFF "sfbk" header is checked before rendering.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as e:
        return f"cannot read the soundfont {path} ({e.strerror})"
    if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        return f"{path} is not a SoundFont 2 (.sf2) file"
    return None


def audio_available() -> tuple[bool, str]:
    """Whether MIDI can be rendered here, and a message saying what was found or is missing."""
    exe = shutil.which("fluidsynth")
    sf = find_soundfont()
    problem = _not_a_soundfont(sf) if sf else None
    if exe and sf and not problem:
        return True, f"FluidSynth {exe} with soundfont {sf}"
    missing = []
    if not exe:
        missing.append("the FluidSynth program (package 'fluidsynth')")
    if problem:
        missing.append(f"a valid General MIDI soundfont ({problem})")
    elif not sf:
        env = os.environ.get(SOUNDFONT_ENV)
        if env:
            missing.append(f"the soundfont {SOUNDFONT_ENV}={env} (no such file)")
        else:
            missing.append("a General MIDI soundfont (package 'fluid-soundfont-gm')")
    return False, "Audio rendering needs " + " and ".join(missing) + ". " + INSTALL_HINT


def _tools(soundfont: str | os.PathLike | None) -> tuple[str, Path]:
    """The FluidSynth executable and a checked soundfont, or AudioUnavailable."""
    if soundfont is None:
        ok, message = audio_available()
        if not ok:
            raise AudioUnavailable(message)
        return shutil.which("fluidsynth"), find_soundfont()
    sf = Path(soundfont)
    problem = "soundfont not found: " + str(sf) if not sf.is_file() else _not_a_soundfont(sf)
    if problem:
        raise AudioUnavailable(f"{problem}. {INSTALL_HINT}")
    exe = shutil.which("fluidsynth")
    if not exe:
        raise AudioUnavailable(f"Audio rendering needs the FluidSynth program (package 'fluidsynth'). {INSTALL_HINT}")
    return exe, sf


def _run(cmd: list[str], timeout: float, what: str) -> None:
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ChopinBotError(f"{what} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip()[-600:]
        raise ChopinBotError(f"{what} failed (exit code {proc.returncode}): {tail or 'no message'}")


def _wav_frames(path: str | os.PathLike) -> tuple[int, int, int]:
    """(channels, sample rate, frames) of a 16-bit WAV file, or ChopinBotError."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise ChopinBotError(f"expected 16-bit samples, got {8 * w.getsampwidth()}-bit")
            return w.getnchannels(), w.getframerate(), w.getnframes()
    except (wave.Error, EOFError) as e:
        raise ChopinBotError(f"not a valid WAV file: {path} ({e})") from None


def _scan(path: str, keep_from: int) -> tuple[int, int, int]:
    """(frames to keep, all frames, peak amplitude) of a WAV file, read one second at a time.

    Frames to keep: up to the last audible frame at or after ``keep_from``
    plus a short pad (see the module docstring).
    """
    channels, rate, frames = _wav_frames(path)
    peak, last_loud, pos = 0, 0, 0
    with wave.open(path, "rb") as w:
        while pos < frames:
            samples = np.frombuffer(w.readframes(rate), "<i2").reshape(-1, channels)
            block = np.abs(samples.astype(np.int32)).max(axis=1)  # loudest channel per frame
            if block.size == 0:
                break
            peak = max(peak, int(block.max()))
            loud = np.flatnonzero(block > _SILENCE_LEVEL)
            if loud.size:
                last_loud = pos + int(loud[-1]) + 1
            pos += block.size
    keep = max(min(keep_from, pos), last_loud) + int(_TAIL_PAD_S * rate)
    return min(pos, keep), pos, peak


def _copy_wav(src: str, dst: str, n_frames: int, scale: float) -> None:
    """Copy the first ``n_frames`` of a WAV file, times ``scale``, one second at a time."""
    with wave.open(src, "rb") as r, wave.open(dst, "wb") as w:
        w.setnchannels(r.getnchannels())
        w.setsampwidth(r.getsampwidth())
        w.setframerate(r.getframerate())
        left = n_frames
        while left > 0:
            x = np.frombuffer(r.readframes(min(left, r.getframerate())), "<i2")
            if x.size == 0:
                break
            if scale != 1.0:
                x = np.clip(np.round(x * scale), -32768, 32767).astype("<i2")
            w.writeframes(x.tobytes())
            left -= x.size // r.getnchannels()


def render_wav(
    midi_path: str | os.PathLike,
    wav_path: str | os.PathLike,
    sample_rate: int = 44100,
    soundfont: str | os.PathLike | None = None,
    gain: float = DEFAULT_GAIN,
    trim: bool = True,
    normalize: bool = True,
) -> Path:
    """Render a MIDI file to a 16-bit stereo WAV file with FluidSynth.

    ``soundfont`` defaults to :func:`find_soundfont`.  With ``trim`` the
    reverb tail is cut 0.25 s after the last audible sample (see the module
    docstring).  With ``normalize`` the loudest sample is scaled to -1 dBFS,
    amplifying by at most 30 dB: the corpus's velocities range from a soft
    prelude (mean 34, peak -24 dBFS at the default gain) to loud etudes, and
    a listener should not have to reach for the volume between pieces.

    Raises :class:`AudioUnavailable` when FluidSynth or the soundfont is
    missing, :class:`~chopinbot.errors.MidiError` for an unusable MIDI file
    and :class:`~chopinbot.errors.ChopinBotError` (with FluidSynth's last
    words) when rendering fails.
    """
    if not 8000 <= int(sample_rate) <= 192000:
        raise ConfigError(f"sample rate must be 8000..192000 Hz, not {sample_rate}")
    if not 0.0 < gain <= 10.0:
        raise ConfigError(f"gain must be in (0, 10], not {gain}")
    exe, sf = _tools(soundfont)
    midi_path = Path(midi_path).resolve()
    notes = read_midi(midi_path)  # validates the file before FluidSynth sees it
    midi_seconds = float(notes.seconds_at(np.array([notes.end.max()]))[0])
    wav_path = Path(wav_path)
    wav_path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        # FluidSynth renders into a private folder beside the target (same file
        # system, no size limit of a RAM-backed /tmp); the kept frames are
        # then copied into atomic_write's temp file.
        with tempfile.TemporaryDirectory(prefix=".render-", dir=wav_path.parent) as work:
            raw = os.path.join(work, "raw.wav")
            # Dynamic sample loading reads only the samples the piece plays (the
            # piano's) from the 148 MB General MIDI soundfont: the same audio, byte
            # for byte, in 0.42 instead of 0.63 s for a 30-second piece here.  A
            # 1,024-frame period instead of 64 cuts the per-period overhead (0.42 ->
            # 0.32 s); note timing stays sample-exact (the output differs from the
            # default's by < -60 dB rms, from the effects' block boundaries).
            cmd = [exe, "-ni", "-q", "-g", f"{gain:g}", "-r", str(int(sample_rate)),
                   "-o", "synth.dynamic-sample-loading=1", "-z", "1024", "-T", "wav", "-O", "s16", "-F", raw,
                   str(sf.resolve()), str(midi_path)]
            _run(cmd, _TIMEOUT_BASE_S + midi_seconds, "FluidSynth")
            keep, total, peak = _scan(raw, int(midi_seconds * sample_rate))
            scale = min(_PEAK_TARGET / peak, _MAX_BOOST) if normalize and peak > 0 else 1.0
            _copy_wav(raw, tmp, keep if trim else total, scale)

    return atomic_write(wav_path, write)


def render_wav_bytes(midi_bytes: bytes, sample_rate: int = 44100, **kwargs) -> bytes:
    """Render MIDI data in memory to WAV data (for the web app); leaves no files behind.

    Keyword arguments go to :func:`render_wav`.
    """
    with tempfile.TemporaryDirectory(prefix="chopinbot-audio-") as work:
        midi = Path(work) / "in.mid"
        midi.write_bytes(midi_bytes)
        return render_wav(midi, Path(work) / "out.wav", sample_rate=sample_rate, **kwargs).read_bytes()


def encode_audio(wav_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Compress a WAV file with ffmpeg; the format follows ``out_path``'s suffix
    (``.mp3``, ``.ogg`` = Vorbis, ``.opus``)."""
    out_path = Path(out_path)
    args = _ENCODERS.get(out_path.suffix.lower())
    if args is None:
        raise ConfigError(f"unsupported audio format {out_path.suffix!r}; use one of {', '.join(_ENCODERS)}")
    exe = shutil.which("ffmpeg")
    if not exe:
        raise AudioUnavailable(
            "Encoding mp3/ogg/opus needs ffmpeg. On Debian/Ubuntu: sudo apt-get install --no-install-recommends ffmpeg"
        )
    wav_path = Path(wav_path).resolve()
    _, rate, frames = _wav_frames(wav_path)
    timeout = _TIMEOUT_BASE_S + frames / rate

    def write(tmp: str) -> None:
        # -f names the container: the temp file's ".tmp" suffix says nothing.
        cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(wav_path), *args, tmp]
        _run(cmd, timeout, "ffmpeg")

    return atomic_write(out_path, write)
