"""What a composed piece's score says besides its notes: title, composer line, the seed it
continued, the marks (where the seed ends, the sections of a form, an infilled span).

Every kind of result is read by what it has (``states``, ``key``, ``bpm``, and where present
``metre``, ``seed_len``, ``sections``, ``span``), so the compose package needs no notation code.
"""

from __future__ import annotations

from chopinbot.constants import GRID_PER_BEAT
from chopinbot.notation.score import COMPOSER, ScoreSpec, states_bpm

CHOPIN_SEED_CREDIT = "Seed: Bernd Krueger, piano-midi.de (CC BY-SA 3.0 DE)"


def piece_spec(piece, time_signature: tuple[int, int] | None = None) -> ScoreSpec:
    """The :class:`ScoreSpec` of a :class:`~chopinbot.compose.generate.GenerationResult`, a form,
    or an :class:`~chopinbot.compose.infill.InfillResult`."""
    states = piece.states
    key = piece.key
    config = getattr(piece, "config", None)
    style = (getattr(config, "style", None) or "Chopin").replace("_", " ").title()
    source = str(getattr(piece, "source", ""))
    marks: list[tuple[float, str]] = []
    span = getattr(piece, "span", None)
    if span is not None:  # an infill: the source's own piece, with a span composed anew
        a, b = piece.span_beats
        marks += [(a, "ChopinBot's infill begins"), (b, "infill ends")]
        title = "ChopinBot infill"
        subtitle = f"{source}: beats {a:.0f} to {b:.0f} composed anew"
        bpm = states_bpm(states)
    else:
        seed_len = int(getattr(piece, "seed_len", 0))
        if seed_len:
            marks += [(0.0, "seed"), (_beats(states, seed_len), "ChopinBot")]
        for section in getattr(piece, "sections", []) or []:
            marks.append((float(section.start_beat), f"{section.label} ({section.key.name})"))
        form = getattr(piece, "form", None) if getattr(piece, "sections", None) else None
        title = f"ChopinBot in {key.name}" + (f": {form}" if form else "")
        subtitle = f"continuing {source}" if source else ""
        bpm = float(piece.bpm)
    return ScoreSpec(states=states, key=key, bpm=bpm, metre=getattr(piece, "metre", None),
                     time_signature=time_signature, title=title, composer=f"{COMPOSER}, in the style of {style}",
                     subtitle=subtitle, marks=sorted(marks),
                     rights=CHOPIN_SEED_CREDIT if ".mid" in source and "primer" not in source else "")


def _beats(states, n: int) -> float:
    return float(states.grid_units()[:n].sum()) / GRID_PER_BEAT if n else 0.0

