"""The page's pictures and audio, made safely from several worker threads at once.

Audio is rendered by FluidSynth in a private temporary folder that is removed
at once (:func:`~chopinbot.render.audio.render_wav_bytes`); when it is missing
the visitor gets a note instead of a player.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from matplotlib.figure import Figure

from chopinbot.compose.generate import GenerationResult
from chopinbot.errors import ChopinBotError
from chopinbot.render.audio import AudioUnavailable, audio_available, render_wav_bytes
from chopinbot.render.plots import figure_png_bytes

log = logging.getLogger(__name__)

# Audio: 16-bit stereo WAV at 22.05 kHz.  Measured on the 2-core machine, a
# 32 s piece costs FluidSynth 0.57 s of CPU at 22.05 kHz against 0.92 s at
# 44.1 kHz (0.3 s of either is loading the soundfont), and the file is half
# the size (2.9 MB instead of 5.8 MB); the bandwidth above 11 kHz it gives up
# matters little for a piano preview.  `chopinbot generate --wav` renders 44.1 kHz.
AUDIO_SAMPLE_RATE = 22050

PLOT_LOCK = threading.Lock()  # pyplot is not thread-safe: every figure of the app is drawn under it


def piano_roll_png(generation: GenerationResult) -> bytes:
    """The piece's piano roll as PNG bytes."""
    with PLOT_LOCK:
        return generation.png_bytes()


def figure_png(make_figure: Callable[[], Figure]) -> bytes:
    """PNG bytes of the figure ``make_figure()`` draws (drawn, saved and closed under :data:`PLOT_LOCK`)."""
    with PLOT_LOCK:
        return figure_png_bytes(make_figure(), dpi=100)


def render_audio(midi: bytes) -> tuple[bytes | None, str | None]:
    """(WAV bytes, None), or (None, a note for the visitor) when audio is unavailable or fails."""
    ok, message = audio_available()
    if not ok:
        return None, message
    try:
        return render_wav_bytes(midi, sample_rate=AUDIO_SAMPLE_RATE), None
    except AudioUnavailable as e:
        return None, str(e)
    except ChopinBotError as e:
        log.warning("audio rendering failed: %s", e)
        return None, f"The audio could not be rendered ({e}); the MIDI downloads still work."
