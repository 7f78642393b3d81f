"""Piano-roll pictures: one bar per note, seed and generated told apart, empty input."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from chopinbot.constants import BUNDLED_CORPUS_DIR
from chopinbot.music.midi import read_midi
from chopinbot.music.states import notes_to_states, states_to_notes
from chopinbot.render.pianoroll import pianoroll_figure, plot_pianoroll, plot_pianoroll_pair


@pytest.fixture(scope="module")
def real_notes() -> np.ndarray:
    """The first 32 beats of prelude 20 (chords over four octaves)."""
    notes = states_to_notes(notes_to_states(read_midi(BUNDLED_CORPUS_DIR / "chpn-p20.mid"))[0])
    return notes[notes[:, 0] < 32]


def _bars(fig) -> PolyCollection:
    (bars,) = [c for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]
    return bars


def test_one_bar_per_note_at_the_right_place(real_notes):
    fig = pianoroll_figure(real_notes, bpm=60)
    bars = _bars(fig)
    assert len(bars.get_paths()) == len(real_notes)
    # bpm 60: one beat is one second, so the first bar spans its note's beats
    corners = bars.get_paths()[0].vertices
    assert corners[:, 0].min() == pytest.approx(real_notes[0, 0])
    assert corners[:, 0].max() == pytest.approx(real_notes[0, 1])
    assert (corners[:, 1].min() + corners[:, 1].max()) / 2 == pytest.approx(real_notes[0, 2])
    plt.close(fig)


def test_seed_and_generated_colours_differ(real_notes):
    fig = pianoroll_figure(real_notes, seed_end_beat=8.0)
    colours = _bars(fig).get_facecolors()
    seed = real_notes[:, 0] < 8.0
    assert seed.any() and (~seed).any()
    # seed bars are grey (r = g = b), generated bars are blue
    assert np.allclose(colours[seed, 0], colours[seed, 2])
    assert (colours[~seed, 2] > colours[~seed, 0] + 0.1).all()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["seed", "generated", "end of seed"]
    assert any(np.allclose(line.get_xdata(), 8.0) for line in ax.lines)  # the boundary line
    plt.close(fig)


def test_louder_notes_are_darker():
    notes = np.array([[0, 1, 60, 20], [0, 1, 64, 120]], float)
    fig = pianoroll_figure(notes)
    soft, loud = _bars(fig).get_facecolors()[:, :3].sum(axis=1)
    assert loud < soft
    plt.close(fig)


def test_narrow_range_without_a_c_names_its_lowest_pitch():
    fig = pianoroll_figure(np.array([[0, 1, 64, 80], [1, 2, 69, 80]], float))  # E4 and A4
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["E4"]
    plt.close(fig)


def test_pitch_axis_labels_c_octaves_and_zooms(real_notes):
    fig = pianoroll_figure(real_notes)
    ax = fig.axes[0]
    lo, hi = real_notes[:, 2].min(), real_notes[:, 2].max()
    assert ax.get_ylim() == pytest.approx((lo - 2.5, hi + 2.5))
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels and all(label.startswith("C") for label in labels)
    assert "C4" in labels  # middle C = MIDI 60
    assert ax.get_xlabel() == "time (beats)"
    plt.close(fig)


def test_png_files(real_notes, tmp_path):
    one = plot_pianoroll(real_notes, tmp_path / "roll.png", bpm=90, seed_end_beat=8, title="prelude 20")
    pair = plot_pianoroll_pair(real_notes, real_notes[real_notes[:, 0] < 16], tmp_path / "pair.png", bpm=90)
    for path in (one, pair):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pair.png", "roll.png"]  # no temp files


def test_pair_shares_the_time_scale(real_notes, tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr("chopinbot.render.pianoroll.save_figure", lambda fig, path: figures.append(fig) or path)
    plot_pianoroll_pair(real_notes, real_notes[real_notes[:, 0] < 16], tmp_path / "pair.png", bpm=120)
    top, bottom = figures[0].axes
    assert top.get_xlim() == bottom.get_xlim() == pytest.approx((0, real_notes[:, 1].max() / 2))
    plt.close(figures[0])


def test_empty_notes(tmp_path):
    fig = pianoroll_figure(np.zeros((0, 4)), seed_end_beat=4.0)
    assert any(t.get_text() == "no notes" for t in fig.axes[0].texts)
    plt.close(fig)
    path = plot_pianoroll(np.zeros((0, 4)), tmp_path / "empty.png")
    assert path.stat().st_size > 1000
    plot_pianoroll_pair(np.zeros((0, 4)), np.zeros((0, 4)), tmp_path / "pair.png")
