"""Engraving: MusicXML -> SVG pages (verovio), and those pages -> a PDF or a PNG (cairosvg).

verovio 6.4.1 (already the score reader of :mod:`chopinbot.music.scores`) lays out and engraves;
it writes SVG only.  cairosvg 2.9.1 (pure Python over Cairo) draws each page into one PDF
(a cairo PDF surface with a page per SVG) or the first page into a PNG.  Our own MusicXML is
engraved in this process: verovio crashes its process only on broken input (see
:mod:`chopinbot.music.verovio_worker`), and what :mod:`chopinbot.notation.musicxml` writes is
checked by the tests; a file from elsewhere goes through :func:`chopinbot.music.scores.read_score`.

verovio draws the tempo mark's note with a glyph of its music font (Leipzig) inside SVG text,
which neither Cairo nor a browser without that font can show (an empty box; its option
``smuflTextFont`` did not change that): :func:`svg_pages` writes those glyphs as the Unicode
note ♩ / ♪ in DejaVu Serif instead, which every page then shows.
"""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path

import verovio

from chopinbot.errors import ChopinBotError, ConfigError
from chopinbot.io_utils import atomic_write_bytes, atomic_write_text

PAGE_OPTIONS = {
    "pageWidth": 2100,  # A4 at verovio's tenths of a millimetre
    "pageHeight": 2970,
    "scale": 40,
    "adjustPageHeight": False,
    "footer": "none",
    "header": "auto",
    "breaks": "auto",
    "mnumInterval": 1,
}
# SMuFL metronome glyphs -> Unicode: quarter, eighth, half note (stem up), augmentation dot
SMUFL_TEXT = {"\ueca5": "\u2669", "\ueca7": "\u266a", "\ueca3": "\U0001d15e", "\uecb7": ".",  # metNote*
              "\ue1d5": "\u2669", "\ue1d7": "\u266a", "\ue1d3": "\U0001d15e", "\ue1e7": "."}  # note*
_MUSIC_FONT_TEXT = re.compile(r'<tspan font-family="Leipzig" font-size="(\d+)px">([^<]*)</tspan>')
RESOURCES = str(Path(verovio.__file__).resolve().parent / "data")  # verovio's fonts, as installed
_lock = threading.Lock()  # one verovio toolkit per call, but its resource loading is not thread-safe


class EngraveError(ChopinBotError):
    """verovio could not read or lay out a score."""


def svg_pages(musicxml: str, max_pages: int | None = None, options: dict | None = None) -> list[str]:
    """The score's pages as SVG text (at most ``max_pages``)."""
    with _lock:
        verovio.enableLog(verovio.LOG_ERROR)
        # toolkit() finds its fonts only in the main thread (measured: every other thread's load fails with
        # "font resources are not available"); the app engraves in its script threads, so the path is given
        tk = verovio.toolkit(False)
        if not tk.setResourcePath(RESOURCES):
            raise EngraveError(f"verovio's fonts are missing from {RESOURCES}")
        tk.setOptions({**PAGE_OPTIONS, **(options or {})})
        tk.setInputFrom("musicxml")
        if not tk.loadData(musicxml):
            raise EngraveError("verovio cannot read this MusicXML")
        n = tk.getPageCount()
        if n < 1:
            raise EngraveError("verovio laid out no page")
        return [_plain_text_glyphs(tk.renderToSVG(i)) for i in range(1, min(n, max_pages or n) + 1)]


def _plain_text_glyphs(svg: str) -> str:
    def sub(m: re.Match) -> str:
        text = " " + "".join(SMUFL_TEXT.get(ch, "") for ch in m.group(2))
        size = int(int(m.group(1)) * 0.6)
        return f'<tspan font-family="DejaVu Serif" font-size="{size}px">{text}</tspan>'

    return _MUSIC_FONT_TEXT.sub(sub, svg)


_DEF = re.compile(r'<g id="([^"]+)">\s*(<path [^>]*/>)\s*</g>')
_USE = re.compile(r'<use xlink:href="#([^"]+)"( transform="[^"]*")?\s*/>')


def _inline_glyphs(svg: str) -> str:
    """Each ``<use>`` of a music glyph replaced by the glyph's path: cairosvg parses a ``<use>``'s target
    anew every time (1,000 uses on a page cost it ~60 % of the page's time), a path once."""
    glyphs = dict(_DEF.findall(svg[: svg.find("</defs>") + 1]))
    if not glyphs:
        return svg

    def sub(m: re.Match) -> str:
        path = glyphs.get(m.group(1))
        return f"<g{m.group(2) or ''}>{path}</g>" if path else m.group(0)

    return _USE.sub(sub, svg)


def _cairo():
    """cairosvg and cairocffi, or :class:`EngraveError` when the Cairo library is missing."""
    try:
        import cairocffi
        import cairosvg
        import cairosvg.parser
        import cairosvg.surface
    except (ImportError, OSError) as e:
        raise EngraveError(f"PDF and PNG pages need cairosvg and the Cairo library (apt-get install libcairo2): "
                           f"{e}") from None
    return cairocffi, cairosvg


def pdf_bytes(pages: list[str]) -> bytes:
    """One PDF, a page per SVG."""
    cairocffi, cairosvg = _cairo()
    Tree, PDFSurface = cairosvg.parser.Tree, cairosvg.surface.PDFSurface

    out = io.BytesIO()
    surface = None
    for svg in pages:
        tree = Tree(bytestring=_inline_glyphs(svg).encode("utf-8"))
        page = PDFSurface(tree, None, 96)  # draws the page onto its own cairo surface
        if surface is None:
            surface = cairocffi.PDFSurface(out, page.width, page.height)
            context = cairocffi.Context(surface)
        else:
            surface.set_size(page.width, page.height)
        context.set_source_surface(page.cairo, 0, 0)
        context.paint()
        surface.show_page()
        page.finish()
    surface.finish()
    return out.getvalue()


def png_bytes(svg: str, width: int = 1200) -> bytes:
    """A page as a PNG ``width`` pixels wide, on white."""
    _, cairosvg = _cairo()

    return cairosvg.svg2png(bytestring=_inline_glyphs(svg).encode("utf-8"), output_width=width,
                            background_color="white")


SCORE_SUFFIXES = (".musicxml", ".xml", ".pdf", ".svg", ".png")


def write_score_file(musicxml: str, path) -> list[Path]:
    """Write ``musicxml`` as ``path`` says by its suffix (see :data:`SCORE_SUFFIXES`): the MusicXML itself,
    an engraved PDF, the SVG pages (the first at ``path``, then ``<stem>-2.svg``, ...) or the first page as
    a PNG.  Every file is written atomically; returns the files written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SCORE_SUFFIXES:
        raise ConfigError(f"a score file ends in one of {', '.join(SCORE_SUFFIXES)}, not {path.name}")
    if suffix in (".musicxml", ".xml"):
        return [atomic_write_text(path, musicxml)]
    pages = svg_pages(musicxml, max_pages=1 if suffix == ".png" else None)
    if suffix == ".pdf":
        return [atomic_write_bytes(path, pdf_bytes(pages))]
    if suffix == ".png":
        return [atomic_write_bytes(path, png_bytes(pages[0]))]
    return [atomic_write_text(path if i == 0 else path.with_name(f"{path.stem}-{i + 1}.svg"), svg)
            for i, svg in enumerate(pages)]
