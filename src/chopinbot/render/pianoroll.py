"""Piano-roll pictures of a notes array: time across, pitch up, one bar per note.

Notes are the ``(N, 4)`` arrays of :func:`chopinbot.music.states.states_to_notes`
(start beat, end beat, MIDI pitch, velocity).  All bars of a roll are one
:class:`~matplotlib.collections.PolyCollection` (a few thousand notes draw
in milliseconds; one patch per note takes seconds), coloured per note: grey
for the seed the model was given, blue for what it generated, darker for
louder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

# chopinbot.render.plots selects the Agg backend before pyplot loads
from chopinbot.render.plots import plt, save_figure

SEED_CMAP = "Greys"
GENERATED_CMAP = "Blues"
_BAR_HEIGHT = 0.8  # in semitones: a small gap keeps neighbouring keys apart
_BLACK_KEYS = (1, 3, 6, 8, 10)


def velocity_colours(cmap_name: str, velocity: np.ndarray) -> np.ndarray:
    # Velocity 0..127 maps to the upper 65 % of the colour map, so even a
    # pianissimo note stays clearly visible against the white background.
    level = 0.35 + 0.65 * np.clip(velocity, 0, 127) / 127.0
    return plt.get_cmap(cmap_name)(level)


_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def _note_name(pitch: int) -> str:
    return f"{_NAMES[pitch % 12]}{pitch // 12 - 1}"  # MIDI 60 = C4 (middle C)


def pianoroll_figure(
    notes: np.ndarray,
    bpm: float | None = None,
    seed_end_beat: float | None = None,
    title: str | None = None,
    ax=None,
) -> Figure:
    """Draw a piano roll and return its Figure.

    Time is in seconds at a steady ``bpm`` when given, else in beats.  Notes
    starting before ``seed_end_beat`` are the seed (grey), with a dashed line
    at the boundary; the rest are generated (blue).  The y axis is labelled at
    each C and spans the used pitches ± 2.  With ``ax`` the roll is drawn
    into that axes (its figure is returned); otherwise a new figure is made.
    """
    notes = np.asarray(notes, np.float64).reshape(-1, 4)
    if ax is None:
        fig, ax = plt.subplots(figsize=(12, 4.5))
    else:
        fig = ax.figure
    scale = 60.0 / bpm if bpm else 1.0
    x0, x1 = notes[:, 0] * scale, notes[:, 1] * scale
    pitch = notes[:, 2]
    is_seed = notes[:, 0] < seed_end_beat if seed_end_beat is not None else np.zeros(len(notes), bool)

    if len(notes):
        lo, hi = int(pitch.min()) - 2, int(pitch.max()) + 2
    else:
        lo, hi = 60 - 12, 60 + 12  # an empty roll shows two octaves round middle C
    # Shade the black-key rows, as on a piano-roll editor, to make pitches readable.
    for p in range(lo, hi + 1):
        if p % 12 in _BLACK_KEYS:
            ax.axhspan(p - 0.5, p + 0.5, color="#f0f0f0", zorder=0, linewidth=0)

    handles = []
    if len(notes):
        y0, y1 = pitch - _BAR_HEIGHT / 2, pitch + _BAR_HEIGHT / 2
        verts = np.stack([x0, y0, x1, y0, x1, y1, x0, y1], axis=1).reshape(-1, 4, 2)  # corners of each bar
        colours = np.where(
            is_seed[:, None], velocity_colours(SEED_CMAP, notes[:, 3]), velocity_colours(GENERATED_CMAP, notes[:, 3])
        )
        ax.add_collection(PolyCollection(verts, facecolors=colours, edgecolors="none", zorder=2))
        end = float(x1.max())
        ax.set_xlim(min(0.0, float(x0.min())), end if end > 0 else 1.0)
    else:
        ax.text(0.5, 0.5, "no notes", transform=ax.transAxes, ha="center", va="center", color="0.4", fontsize=14)
        ax.set_xlim(0, 2 * seed_end_beat * scale if seed_end_beat else 1.0)  # keeps the seed line in view

    if seed_end_beat is not None:
        ax.axvline(seed_end_beat * scale, color="#c0392b", linestyle="--", linewidth=1.2, zorder=3)
        handles += [
            Patch(color=plt.get_cmap(SEED_CMAP)(0.7), label="seed"),
            Patch(color=plt.get_cmap(GENERATED_CMAP)(0.7), label="generated"),
            Line2D([], [], color="#c0392b", linestyle="--", label="end of seed"),
        ]
    else:
        handles.append(Patch(color=plt.get_cmap(GENERATED_CMAP)(0.7), label="notes"))
    # Outside the axes, so the legend never hides notes.
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8,
              title="darker = louder", title_fontsize=8)

    ax.set_ylim(lo - 0.5, hi + 0.5)
    # Each C is labelled; a range narrower than an octave may hold none, and
    # then its lowest pitch is named instead.
    ticks = [p for p in range(lo, hi + 1) if p % 12 == 0] or [lo + 2]
    ax.set_yticks(ticks, [_note_name(p) for p in ticks])
    ax.grid(axis="y", color="0.8", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_xlabel("time (s)" if bpm else "time (beats)")
    ax.set_ylabel("pitch")
    if title:
        ax.set_title(title)
    return fig


def plot_pianoroll(notes: np.ndarray, path: str | os.PathLike, **kwargs) -> Path:
    """Draw :func:`pianoroll_figure` (keyword arguments go to it) and save it as a PNG atomically."""
    return save_figure(pianoroll_figure(notes, **kwargs), path)


def plot_pianoroll_pair(
    generated: np.ndarray,
    real: np.ndarray,
    path: str | os.PathLike,
    bpm: float | None = None,
    labels: Sequence[str] = ("generated", "real Chopin (test piece)"),
    seed_end_beat: float | None = None,
) -> Path:
    """Two rolls stacked, generated above real, on one time scale, saved as a PNG.

    The shared x axis spans the longer of the two, so a second means the same
    width in both; each keeps its own pitch range.  ``seed_end_beat`` marks
    the seed in the generated roll.
    """
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    pianoroll_figure(generated, bpm=bpm, seed_end_beat=seed_end_beat, title=labels[0], ax=top)
    pianoroll_figure(real, bpm=bpm, title=labels[1], ax=bottom)
    ends = [float(np.asarray(n, np.float64).reshape(-1, 4)[:, 1].max()) for n in (generated, real) if len(n)]
    scale = 60.0 / bpm if bpm else 1.0
    top.set_xlim(0, max(ends) * scale if ends and max(ends) > 0 else 1.0)
    top.set_xlabel("")
    fig.tight_layout()
    return save_figure(fig, path)
