"""A composed piece's files: MIDI, WAV and PNG, from its MIDI bytes and its piano-roll figure;
and its score: MusicXML, PDF and SVG pages (:mod:`chopinbot.notation`).

Every kind of result (:class:`~chopinbot.compose.generate.GenerationResult`, the forms built on it,
:class:`~chopinbot.compose.infill.InfillResult`) says what its MIDI and its picture are;
:class:`PieceOutputs` writes and renders them the one way: atomically, the audio through
FluidSynth (:mod:`chopinbot.render.audio`), matplotlib loaded only when a picture is asked for.
The score is read from the result's states, key, tempo and metre
(:func:`chopinbot.notation.piece.piece_spec`); verovio and cairosvg load only when one is asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

from chopinbot.io_utils import atomic_write_bytes
from chopinbot.render.audio import render_wav, render_wav_bytes

MAKER = "ChopinBot"


def maker_label(model: str | None = None, style: str | None = None) -> str:
    """Who made a piece, as titles and summaries say it: "ChopinBot (piano-controls, style schubert)"."""
    about = ", ".join(part for part in (model, f"style {style}" if style else None) if part)
    return f"{MAKER} ({about})" if about else MAKER


class PieceOutputs:
    """Mixin: the files of a piece whose class defines ``midi_bytes()`` and ``figure()``.

    ``label`` names what made the piece in its picture's title and its summary: "ChopinBot" unless
    the caller, who knows the model and the style, sets it (:func:`maker_label`)."""

    label: str = MAKER

    @property
    def summary_lead(self) -> str:
        """What a summary starts with: the label, when the caller set one."""
        return "" if self.label == MAKER else f"{self.label}: "

    def midi_bytes(self) -> bytes:  # pragma: no cover -- each result defines it
        raise NotImplementedError

    def figure(self, title: str | None = None):  # pragma: no cover -- each result defines it
        raise NotImplementedError

    def save_midi(self, path: str | os.PathLike) -> Path:
        return atomic_write_bytes(path, self.midi_bytes())

    def save_wav(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        mid = path.with_name(f".{path.stem}.render.mid")
        atomic_write_bytes(mid, self.midi_bytes())
        try:
            return render_wav(mid, path)
        finally:
            mid.unlink(missing_ok=True)

    def wav_bytes(self) -> bytes:
        return render_wav_bytes(self.midi_bytes())

    def save_png(self, path: str | os.PathLike) -> Path:
        from chopinbot.render.plots import save_figure  # here: matplotlib loads only for a picture

        return save_figure(self.figure(), path)

    def png_bytes(self) -> bytes:
        from chopinbot.render.plots import figure_png_bytes  # here: matplotlib loads only for a picture

        return figure_png_bytes(self.figure())

    # ---- the score (chopinbot.notation) -------------------------------------------------------

    def musicxml(self, time_signature: tuple[int, int] | None = None) -> str:
        """The piece as MusicXML (``time_signature``: the one to write, e.g. (3, 4); None: the piece's)."""
        from chopinbot.notation.piece import piece_spec  # here: the notation code loads only for a score
        from chopinbot.notation.score import build_score

        return build_score(piece_spec(self, time_signature))[0]

    def score_pages(self, time_signature: tuple[int, int] | None = None, max_pages: int | None = None) -> list[str]:
        """The engraved pages as SVG text."""
        from chopinbot.notation.engrave import svg_pages

        return svg_pages(self.musicxml(time_signature), max_pages)

    def save_score(self, path: str | os.PathLike, time_signature: tuple[int, int] | None = None) -> Path:
        """Write the score by the suffix of ``path``: ``.musicxml``/``.xml`` (MusicXML), ``.pdf``
        (engraved, a page per page) or ``.svg`` (the first page; the others beside it as ``-2.svg``...)."""
        from chopinbot.notation.engrave import write_score_file

        return write_score_file(self.musicxml(time_signature), path)[0]
