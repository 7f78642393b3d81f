"""The page's pictures and audio, made safely from several worker threads at once.

Audio is rendered by FluidSynth in a private temporary folder that is removed
at once (:func:`~chopinbot.render.audio.render_wav_bytes`); when it is missing
the visitor gets a note instead of a player.  The sheet music (:func:`score_files`) is engraved
after the audio, when the page shows it, and kept per piece.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass
class ScoreFiles:
    """A piece's sheet music as the page shows it: the first page as verovio's SVG (the browser draws it:
    a PNG of it cost 0.7 s of the server's CPU a piece, and 20 visitors at once queued behind that), the
    MusicXML, and the PDF made only when someone downloads it (:meth:`pdf`, 0.4 s)."""

    first_page_svg: str
    musicxml: bytes
    svg_pages: list[str]
    pages: int
    _pdf: bytes | None = None

    def pdf(self) -> bytes:
        if self._pdf is None:
            from chopinbot.notation.engrave import pdf_bytes

            self._pdf = pdf_bytes(self.svg_pages)
        return self._pdf


SCORE_CACHE_SIZE = 16  # pieces whose engraved score is kept (a rerun of the page does not engrave again)
_score_cache: OrderedDict[str, ScoreFiles | str] = OrderedDict()
_score_lock = threading.Lock()


def engrave(piece) -> ScoreFiles | str:
    """The engraved score of a composed piece (a :class:`GenerationResult` or an infill), or a note for
    the visitor when it cannot be engraved (a module function: a worker process runs it)."""
    try:
        from chopinbot.notation.engrave import svg_pages

        text = piece.musicxml()
        pages = svg_pages(text)
        return ScoreFiles(pages[0], text.encode("utf-8"), pages, len(pages))
    except (ChopinBotError, ValueError, RuntimeError) as e:
        log.warning("score engraving failed: %s", e)
        return f"The score could not be engraved ({e}); the MIDI downloads still work."


def score_files(piece, fingerprint: str, run: Callable | None = None) -> ScoreFiles | str:
    """:func:`engrave` of a piece, kept for the last :data:`SCORE_CACHE_SIZE` pieces by their fingerprint
    (a rerun of the page does not engrave again).  ``run(engrave, piece)``: where it runs (the server's
    pool, after every waiting piece is composed); None: here."""
    with _score_lock:
        if fingerprint in _score_cache:
            _score_cache.move_to_end(fingerprint)
            return _score_cache[fingerprint]
    files = run(engrave, piece) if run is not None else engrave(piece)
    with _score_lock:
        _score_cache[fingerprint] = files
        while len(_score_cache) > SCORE_CACHE_SIZE:
            _score_cache.popitem(last=False)
    return files
