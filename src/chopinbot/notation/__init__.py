"""Sheet music: composed (or any prepared) states as a score a pianist can read.

``build_score`` (:mod:`chopinbot.notation.score`) writes MusicXML from states; ``engrave``
(:mod:`chopinbot.notation.engrave`) turns it into SVG pages, a PDF and a PNG of the first page.
See docs/sheet-music.md for the choices, the library measurements and the figures.
"""
