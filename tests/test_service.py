"""The web app's engine (the modules of chopinbot.app beside the page), without
Streamlit: model listing, uploads, limits, composing, the worker pool,
statistics and the threshold guide."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from chopinbot.app import pool as app_pool
from chopinbot.app import reference
from chopinbot.app.pool import ComposePool, get_pool, warm_up
from chopinbot.app.reference import reference_length, reference_stats, threshold_curve, threshold_guide_png
from chopinbot.app.registry import SHIPPED_LABEL, list_models, load_entry, resolve_model_label
from chopinbot.app.request import (
    ComposedPiece,
    ComposeRequest,
    ComposeResult,
    RequestRefused,
    compose,
    describe_request,
    figures_lines,
    make_seed,
)
from chopinbot.app.seeds import UploadError, check_upload, primer_seed, safe_upload_name, seed_infos
from chopinbot.app.sessions import new_session_id, session_log
from chopinbot.app.settings import (
    BPM_RANGE,
    DEFAULT_MAX_QUEUE,
    MAX_PRIMER_STATES,
    MAX_REQUEST_SECONDS,
    MAX_REQUEST_STATES,
    MAX_UPLOAD_BYTES,
    MAX_VARIATIONS,
    MODEL_ENV,
    MODELS_DIR_ENV,
    UPLOAD_LIMIT_MB,
)
from chopinbot.cli import build_parser
from chopinbot.cli.app import streamlit_command
from chopinbot.cli.generate import config_from_args
from chopinbot.compose import generate as library
from chopinbot.compose.generate import GenerateConfig
from chopinbot.constants import BUNDLED_MODELS_DIR, SEED_STATES, SHIPPED_MODEL, SHIPPED_MODEL_DIR
from chopinbot.errors import ChopinBotError, ConfigError, ModelFileError
from chopinbot.evaluation.figures import PieceFigures
from chopinbot.model.checkpoint import bundled_models, resolve_checkpoint
from chopinbot.music.midi import read_midi_bytes
from chopinbot.music.states import states_to_notes
from chopinbot.render.audio import audio_available
from conftest import CORPUS, make_midi


@pytest.fixture(scope="module")
def models_dir(tiny_model_dir, tmp_path_factory):
    """runs/ with a run folder, a nested run folder, a bare checkpoint, and things to skip."""
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_model_dir / "best", root / "alpha" / "best")
    shutil.copytree(tiny_model_dir / "best", root / "group" / "beta" / "best")
    shutil.copytree(tiny_model_dir / "best", root / "exported")  # a checkpoint folder itself
    shutil.copytree(tiny_model_dir / "best", root / ".hidden" / "best")
    (root / "empty").mkdir()
    shutil.copytree(tiny_model_dir / "best", root / "broken")  # a checkpoint the loader refuses
    (root / "broken" / "model.safetensors").write_bytes(b"not tensors")
    outside = tmp_path_factory.mktemp("outside")
    shutil.copytree(tiny_model_dir / "best", outside / "evil" / "best")
    (root / "link").symlink_to(outside / "evil", target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def entry(tiny_model_dir):
    return load_entry(tiny_model_dir / "best", "tiny")


@pytest.fixture(scope="module")
def controls_entry(tiny_controls_model_dir):
    return load_entry(tiny_controls_model_dir / "best", "tiny-controls")


@pytest.fixture(scope="module")
def pool():
    """Composing goes through a pool, as in the app (one intra-op thread per worker)."""
    p = ComposePool(workers=1, max_queue=2)
    yield p
    p.shutdown()


def _primer_bytes(tmp_path, **kw) -> bytes:
    notes = [(i * 0.5, i * 0.5 + 0.5, 60 + (i * 7) % 12) for i in range(24)] + [(0, 4, 48), (4, 8, 43)]
    return make_midi(tmp_path / "p.mid", notes, **kw).read_bytes()


# --- models --------------------------------------------------------------------------


def test_list_models_finds_runs_and_skips_the_rest(models_dir, tiny_model_dir, monkeypatch):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    models = list_models(models_dir)
    runs = {k: v for k, v in models.items() if k != SHIPPED_LABEL and not k.endswith("(bundled)")}
    assert set(runs) == {"alpha", "group/beta", "exported"}
    assert models["lstm-repeats (bundled)"] == resolve_checkpoint("lstm-repeats")  # the earlier shipped model
    assert "broken" in list_models(models_dir, check=False)
    assert runs["alpha"] == models_dir / "alpha" / "best"
    assert runs["exported"] == models_dir / "exported"
    # the operator's --model comes first
    models = list_models(models_dir, configured=tiny_model_dir)
    assert next(iter(models)) == f"{tiny_model_dir.name} (--model)"
    assert models[next(iter(models))] == tiny_model_dir / "best"


def test_list_models_from_environment_and_missing_folder(models_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(MODELS_DIR_ENV, str(models_dir))
    monkeypatch.delenv(MODEL_ENV, raising=False)
    assert "alpha" in list_models()
    bundled = {f"{name} (bundled)" for name in bundled_models() if name != SHIPPED_MODEL}
    assert "lstm-repeats (bundled)" in bundled and "piano-styles (bundled)" in bundled
    assert set(list_models(tmp_path / "nope")) == {SHIPPED_LABEL} | bundled
    with pytest.raises(ModelFileError, match="not a ChopinBot checkpoint"):
        list_models(models_dir, configured=tmp_path)


@pytest.mark.parametrize("label", ["../outside", "/etc", "link", ".hidden", "alpha/../link", "empty", "broken", ""])
def test_model_choice_only_from_the_listed_set(models_dir, label):
    models = list_models(models_dir, configured="")
    with pytest.raises(ConfigError, match="unknown model"):
        resolve_model_label(label, models)
    assert resolve_model_label("alpha", models) == models_dir / "alpha" / "best"


def test_load_entry_is_cached_and_carries_settings(entry, tiny_model_dir):
    again = load_entry(tiny_model_dir / "best", "tiny")
    assert again is entry
    assert 0.0 <= entry.threshold <= 1.0 and entry.threshold == pytest.approx(entry.meta["valid_threshold"])
    assert "LSTM 1×16" in entry.description
    assert len(seed_infos(entry)) > 100


def test_description_names_the_backbone():
    """The page's model line once called every model an LSTM, the shipped Transformer too."""
    shipped = load_entry(SHIPPED_MODEL_DIR, SHIPPED_LABEL)
    assert shipped.description.startswith("Transformer 3×128, ")
    assert load_entry(BUNDLED_MODELS_DIR / "piano-controls", "piano-controls").description.startswith("LSTM 2×128, ")


# --- uploads -------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("../../etc/passwd", "passwd"), ("C:\\Users\\x\\song.mid", "song.mid"), ("..", "primer.mid"),
    ("a\x00b<script>.mid", "a_b_script_.mid"), (None, "primer.mid"), ("x" * 200 + ".mid", "x" * 56 + ".mid"),
])
def test_upload_names_are_labels_only(name, expected):
    assert safe_upload_name(name) == expected


def test_upload_checks(tmp_path):
    good = _primer_bytes(tmp_path)
    assert check_upload(good, "p.mid") == good
    with pytest.raises(UploadError, match="empty"):
        check_upload(b"", "e.mid")
    with pytest.raises(UploadError, match="not a MIDI file"):
        check_upload(b"hello, world" * 10, "notes.mid")
    with pytest.raises(UploadError, match="limited to 2 MB"):
        check_upload(b"MThd" + bytes(MAX_UPLOAD_BYTES), "big.mid")


def test_primer_seed_friendly_errors(entry, tmp_path):
    seed = primer_seed(_primer_bytes(tmp_path, sharps=0), "../my song.mid", entry)
    assert "my song.mid" in seed.source and "/" not in seed.source
    drums = make_midi(tmp_path / "d.mid", [(0, 1, 38), (1, 2, 42)], drum=True).read_bytes()
    with pytest.raises(UploadError, match="cannot be used as a primer: only drum notes"):
        primer_seed(drums, "drums.mid", entry)
    truncated = _primer_bytes(tmp_path)[:30]
    with pytest.raises(UploadError, match="cannot be used as a primer"):
        primer_seed(truncated, "cut.mid", entry)


# --- requests and composing ----------------------------------------------------------


def test_request_limits():
    ComposeRequest(seconds=MAX_REQUEST_SECONDS).check_limits()
    with pytest.raises(RequestRefused, match="at most 120 s"):
        ComposeRequest(seconds=300).check_limits()
    with pytest.raises(RequestRefused, match="at most 1,000"):
        ComposeRequest(seconds=None, steps=5000).check_limits()
    for bad in (dict(seconds=-1), dict(seconds=float("nan")), dict(seconds=None, steps=0), dict(bpm=5),
                dict(temperature=0), dict(temperature=3.5), dict(temperature=float("nan")), dict(threshold=1.5),
                dict(seed_index=-1), dict(primer=b"MThd", primer_states=0),
                dict(primer=b"MThd", primer_states=MAX_PRIMER_STATES + 1)):
        with pytest.raises(ConfigError):
            ComposeRequest(**bad).check_limits()


def _parsed(command: str, *argv: str) -> argparse.Namespace:
    return build_parser(command).parse_args([command, *argv])


def test_one_source_for_every_default_and_bound():
    """`chopinbot generate`'s flags, the app's requests and GenerateConfig share their
    defaults; the app's limits lie within the library's bounds and the uploader's
    limit covers the service's."""
    library_defaults = GenerateConfig()
    args = _parsed("generate")
    assert config_from_args(args) == library_defaults
    assert args.seed_len == args.primer_states == _parsed("seeds").seed_len == SEED_STATES
    request = ComposeRequest()
    assert request.primer_states == SEED_STATES
    shared = ("threshold", "temperature", "key", "bpm", "random_seed", "key_top_k", "top_k", "top_p", "min_keys",
              "max_keys", "include_seed", "retry", "max_retries")
    made = request.generate_config()
    assert {f: getattr(made, f) for f in shared} == {f: getattr(library_defaults, f) for f in shared}
    # the app's caps lie within the library's bounds
    assert MAX_REQUEST_STATES <= library.MAX_STEPS and MAX_REQUEST_SECONDS <= library.MAX_SECONDS
    assert library.BPM_RANGE[0] <= BPM_RANGE[0] < BPM_RANGE[1] <= library.BPM_RANGE[1]
    # Streamlit's upload limit (whole MB of 10**6 or 2**20 bytes) lets through every upload the service accepts
    assert UPLOAD_LIMIT_MB * 10**6 >= MAX_UPLOAD_BYTES and (UPLOAD_LIMIT_MB - 1) * 10**6 < MAX_UPLOAD_BYTES
    cmd = streamlit_command(_parsed("app"))
    assert cmd[cmd.index("--server.maxUploadSize") + 1] == str(UPLOAD_LIMIT_MB)


@pytest.mark.parametrize("flag, low, high", [("--temperature", *library.TEMPERATURE_RANGE),
                                             ("--threshold", *library.THRESHOLD_RANGE),
                                             ("--bpm", *library.BPM_RANGE)])
def test_generate_flags_take_the_library_bounds(flag, low, high, capsys):
    for ok in (low, high):
        assert config_from_args(_parsed("generate", flag, str(ok))).validate() is None
    for bad in (low - 0.01, high + 0.01):
        with pytest.raises(SystemExit):
            _parsed("generate", flag, str(bad))
        assert f"must be between {low:g} and {high:g}" in capsys.readouterr().err
        cfg = GenerateConfig(**{flag[2:]: bad})
        with pytest.raises(ConfigError, match=f"between {low:g} and {high:g}"):
            cfg.validate()


def test_compose_follows_every_setting(entry, pool):
    def compose(req, entry, session_id="t"):
        return pool.compose(req, entry, session_id)

    base = dict(model="tiny", seed_index=0, seconds=None, steps=40, random_seed=3, render_audio=False)
    seed = make_seed(ComposeRequest(**base), entry)
    want = "D major" if not seed.key.minor else "D minor"
    a = compose(ComposeRequest(**base, key=want, bpm=90), entry, "s1")
    [p] = a.pieces
    assert a.key_name == want and a.bpm == 90 and len(p.generation.generated) == 40
    assert p.midi["all"][:4] == p.midi["seed"][:4] == p.midi["generated"][:4] == b"MThd"
    assert len(read_midi_bytes(a.seed_midi)) > 0 and p.png[:8] == b"\x89PNG\r\n\x1a\n"
    assert p.wav is None and p.audio_note and a.session_id == "s1"
    assert isinstance(p.figures, PieceFigures) and p.figures.notes > 0 and p.figures.density > 0
    assert p.figures.inside_register is None  # no register asked
    assert {"seed", "generate", "statistics", "picture", "audio", "total", "generate_cpu"} <= set(a.timings)
    table = a.stats_table()
    # the tiny model's own held-out pieces were prepared without a composer: "real music"
    real = f"{a.reference} (mean ± sd)"
    assert a.reference == "real music" and "the model's own data" in a.reference_source
    assert table[0]["statistic"] == "pitch range (semitones)" and "±" in table[0][real]
    assert list(table[0]) == ["statistic", "this piece", real, "outside real ± 1 sd"]
    assert a.n_real >= 5
    assert a.file_name("generated") == f"chopinbot-D-{want.split()[1]}-90bpm-generated.mid"
    # reproducible; a different random seed, key, tempo or length changes the piece
    assert compose(ComposeRequest(**base, key=want, bpm=90), entry).pieces[0].fingerprint == p.fingerprint
    b = compose(ComposeRequest(**{**base, "random_seed": 4}, key=want, bpm=90), entry)
    assert b.pieces[0].fingerprint != p.fingerprint
    other = "F major" if not seed.key.minor else "F minor"
    assert compose(ComposeRequest(**base, key=other, bpm=90), entry).key_name == other
    c = compose(ComposeRequest(**{**base, "seconds": 10.0, "steps": None}, bpm=120), entry)
    new = c.pieces[0].generation.generated
    assert 10.0 <= new.total_beats * 60 / 120 < 10.0 + 8 * 60 / 120  # stops within one (long) state of 10 s
    t = compose(ComposeRequest(**base, threshold=0.3), entry)
    assert t.pieces[0].generation.config.threshold is not None or any("threshold" in g or "sampling" in g
                                                                      for g in t.pieces[0].guards)
    with pytest.raises(ConfigError, match="does not exist"):
        compose(ComposeRequest(**{**base, "seed_index": 10**6}), entry)
    with pytest.raises(ConfigError, match="names model"):
        compose(ComposeRequest(**{**base, "model": "other"}), entry)


def test_compose_random_seed_window_follows_the_key_mode(entry):
    req = ComposeRequest(model="tiny", seed_index=None, seconds=None, steps=8, key="A minor",
                                 random_seed=11, render_audio=False)
    res = compose(req, entry)
    assert res.key_name == "A minor"  # a minor window was chosen, so no relative-key fallback
    assert not any("relative" in g for g in res.pieces[0].guards)


def test_request_limits_count_every_variation():
    """A request's cost is its length times its variations: four 30-s variations fill the cap."""
    ComposeRequest(seconds=30.0, variations=MAX_VARIATIONS).check_limits()
    ComposeRequest(seconds=None, steps=250, variations=4).check_limits()
    with pytest.raises(RequestRefused, match=r"4 variations of 31 s \(124 s in all\) is longer .*at most 120 s.*"
                                             r"fewer or shorter variations.*--variations 4"):
        ComposeRequest(seconds=31.0, variations=4).check_limits()
    with pytest.raises(RequestRefused, match=r"2 variations of 600 states \(1,200 in all\).*at most 1,000"):
        ComposeRequest(seconds=None, steps=600, variations=2).check_limits()
    for bad in (0, MAX_VARIATIONS + 1, 2.5, None):
        with pytest.raises(ConfigError, match="variations must be"):
            ComposeRequest(variations=bad).check_limits()


def test_request_controls_are_checked_by_the_library_bounds():
    req = ComposeRequest(density=6.5, register=(48, 84), loudness="f", hold_key=False, confine_register=False)
    req.check_limits()
    cfg = req.generate_config()
    assert (cfg.density, cfg.register, cfg.loudness, cfg.hold_key, cfg.confine_register) == \
        (6.5, (48, 84), "f", False, False)
    assert req.steered and not ComposeRequest().steered and not ComposeRequest(hold_key=False).steered
    for bad, message in ((dict(density=0.1), "density must be"), (dict(density=float("nan")), "density must be"),
                         (dict(register=(60, 64)), "at least 7 semitones"),
                         (dict(register=(84, 48)), "low then high"), (dict(register=(10, 60)), "within"),
                         (dict(register=(48,)), "two MIDI pitches"), (dict(register=("C3", "C6")), "two MIDI"),
                         (dict(loudness="loud"), "loudness must be one of pp, p, mf, f, ff")):
        with pytest.raises(ConfigError, match=message):
            ComposeRequest(**bad).check_limits()


def test_a_model_without_controls_refuses_steering_with_a_sentence(entry):
    assert not entry.model.config.controls
    for steer in (dict(density=5.0), dict(register=(48, 84)), dict(loudness="pp")):
        with pytest.raises(ConfigError, match="steer a model with controls .* this model has none"):
            compose(ComposeRequest(model="tiny", seed_index=0, seconds=None, steps=8, render_audio=False, **steer),
                    entry)
    # holding the key is the default and asks nothing of such a model
    compose(ComposeRequest(model="tiny", seed_index=0, seconds=None, steps=8, render_audio=False, hold_key=False),
            entry)


def test_the_page_says_when_a_chord_was_struck_more_often_than_chopin_ever_does():
    fig = PieceFigures(10.0, 60, 6.0, 60, 67, 80.0, 1.0, 1, beyond_chopin_run=(1, 19, 11))
    lines = figures_lines(fig, ComposeRequest())
    assert lines[4] == "one chord struck 20 times in a row (Chopin: at most 12)" and len(lines) == 5
    assert len(figures_lines(dataclasses.replace(fig, beyond_chopin_run=None), ComposeRequest())) == 4
    # and when a phrase went round more times than any of his: a passage of 20 states heard 4 times
    phrase = figures_lines(dataclasses.replace(fig, beyond_chopin_run=None, beyond_chopin_phrase=(20, 3.0)),
                           ComposeRequest())
    assert phrase[4] == "a passage of 20 states heard 4.0 times in a row (Chopin: at most 2.6)"


def test_the_page_advises_the_repeat_span_when_a_long_piece_mostly_played_its_primer_back():
    fig = PieceFigures(60.0, 200, 3.3, 40, 80, 60.0, 1.0, 3, replayed=0.95)
    advice = ("mostly played back from the primer: “Repeats run at most” 96 states lets the model compose more of "
              "its own")
    assert figures_lines(fig, ComposeRequest(), 250)[-1] == advice
    for request, states, f in [(ComposeRequest(), 90, fig),  # shorter than the span: it would change nothing
                               (ComposeRequest(repeat_span=96), 250, fig),  # asked already
                               (ComposeRequest(repeat_boost=1.0), 250, fig),  # no boost: the model's own copying
                               (ComposeRequest(threshold=0.5), 250, fig),
                               (ComposeRequest(), 250, dataclasses.replace(fig, replayed=0.5))]:
        assert advice not in figures_lines(f, request, states)


def test_variations_are_different_pieces_each_measured(controls_entry, pool):
    base = dict(model="tiny-controls", seed_index=2, seconds=None, steps=48, random_seed=5, render_audio=False)
    res = pool.compose(ComposeRequest(**base, variations=3, register=(55, 79), density=8.0, loudness="f"),
                       controls_entry, "v")
    assert len(res.pieces) == 3 and len({p.fingerprint for p in res.pieces}) == 3
    assert len({p.midi["seed"] for p in res.pieces}) == 1 and res.seed_midi == res.pieces[0].midi["seed"]
    for p in res.pieces:
        assert len(p.generation.generated) == 48 and p.png[:4] == b"\x89PNG"
        f = p.figures
        assert isinstance(f, PieceFigures) and f.notes > 0 and f.density > 0 and f.inside_register is not None
        # every note struck in the new music lies in the requested register (one held over from the seed may not)
        notes = states_to_notes(p.generation.generated)
        struck = notes[notes[:, 0] > 0]
        assert len(struck) and ((struck[:, 2] >= 55) & (struck[:, 2] <= 79)).all()
        lines = figures_lines(f, res.request)
        assert lines[0].startswith("density ") and "(asked 8)" in lines[0]
        assert "(asked G3–G5)" in lines[1] and "of the notes inside" in lines[1]
        assert "(asked f)" in lines[2] and lines[3].startswith("key held: ")
        assert 0 <= f.replayed <= 1 and lines[-1] == f.replay_text and lines[-1].startswith("composed ")
    table = res.stats_table()
    assert list(table[0]) == ["statistic", "variation 1", "variation 2", "variation 3", f"{res.reference} (mean ± sd)",
                              "outside real ± 1 sd"]
    assert res.file_name("generated", variation=1).endswith("-generated-2.mid")
    assert res.file_name("seed").endswith("bpm-seed.mid")
    # the same request gives the same three pieces; one variation is a piece of its own
    again = pool.compose(ComposeRequest(**base, variations=3, register=(55, 79), density=8.0, loudness="f"),
                         controls_entry, "v")
    assert [p.fingerprint for p in again.pieces] == [p.fingerprint for p in res.pieces]
    free = pool.compose(ComposeRequest(**base), controls_entry, "v")
    assert len(free.pieces) == 1 and free.pieces[0].figures.inside_register is None
    assert "asked" not in " ".join(figures_lines(free.pieces[0].figures, free.request))


def test_form_pieces_one_per_variation(entry, pool):
    req = ComposeRequest(model="tiny", seed_index=4, seconds=30.0, form="ABA", variations=2, random_seed=2,
                         render_audio=False)
    res = pool.compose(req, entry, "f")
    assert len(res.pieces) == 2 and res.pieces[0].fingerprint != res.pieces[1].fingerprint
    for p in res.pieces:
        assert [s.label for s in p.generation.sections] == ["A", "B", "A'"]
        assert "Form ABA: A 0.0-" in p.summary and p.figures.notes > 0
    assert "30 s in form ABA" in describe_request(req)
    with pytest.raises(ConfigError, match="form must be one of ABA, AABA"):
        ComposeRequest(form="ABC").check_limits()
    with pytest.raises(ConfigError, match="too short"):
        compose(ComposeRequest(model="tiny", seed_index=4, seconds=3.0, form="AABA", render_audio=False), entry)


def test_infill_of_an_uploaded_piece(controls_entry, pool):
    data = (CORPUS / "chpn-p20.mid").read_bytes()
    base = dict(model="tiny-controls", primer=data, primer_name="../p20.mid", random_seed=3, render_audio=False)
    res = pool.compose(ComposeRequest(**base, infill=(2, 3), infill_unit="bars", infill_candidates=3,
                                      loudness="pp"), controls_entry, "i")
    [p] = res.pieces
    got = p.generation
    assert res.is_infill and len(got.candidate_nll) == 3 and got.config.loudness == "pp"
    a, b = got.span
    assert len(p.new_states) == b - a > 0
    assert got.states[:a].keys.tolist() == got.original[:a].keys.tolist()  # the piece before the span is kept
    assert got.states[b:].keys.tolist() == got.original[got.original_span[1]:].keys.tolist()  # and after it
    assert set(p.midi) == {"all", "excerpt"} and p.midi["all"][:4] == p.midi["excerpt"][:4] == b"MThd"
    excerpt = read_midi_bytes(p.midi["excerpt"])
    assert 0 < len(excerpt) < len(read_midi_bytes(p.midi["all"]))
    assert p.figures.notes > 0 and "(asked pp)" in figures_lines(p.figures, res.request)[2]
    assert list(res.stats_table()[0])[1] == "the new span" and res.seed_midi == b""
    assert p.summary.startswith("ChopinBot (tiny") and ": infilled " in p.summary
    assert "p20.mid (bar 2 to bar 3)" in p.summary
    assert "infill of primer p20.mid" in describe_request(res.request)
    # what an infill cannot be asked, and a span over the per-request cap
    for bad, message in ((dict(primer=None), "needs your own MIDI file"), (dict(variations=2), "variations do not"),
                         (dict(key="C major"), "key and tempo"), (dict(bpm=90.0), "key and tempo"),
                         (dict(form="ABA"), "does not apply to an infill"), (dict(infill_candidates=0), "1..64"),
                         (dict(infill_unit="beats"), "seconds or in bars"), (dict(infill=(1.0,)), "two numbers")):
        with pytest.raises(ConfigError, match=message):
            ComposeRequest(**{**base, "infill": (2.0, 6.0), **bad}).check_limits()
    with pytest.raises(RequestRefused, match=r"64 candidates of it .*at most 1,000.*shorter span or fewer"):
        compose(ComposeRequest(**base, infill=(2.0, 40.0), infill_candidates=64), controls_entry)
    with pytest.raises(ConfigError, match="past the piece's end"):
        compose(ComposeRequest(**base, infill=(900.0, 910.0)), controls_entry)


def test_compose_from_a_primer_writes_nothing(entry, tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    data = _primer_bytes(tmp_path)
    req = ComposeRequest(model="tiny", primer=data, primer_name="../../x/evil.mid", seconds=8.0,
                                 random_seed=1)
    res = compose(req, entry)
    assert res.seed_source.startswith("primer evil.mid")
    ok, _ = audio_available()
    [piece] = res.pieces
    if ok:
        assert piece.wav[:4] == b"RIFF" and piece.audio_note is None
    else:
        assert piece.wav is None and "FluidSynth" in piece.audio_note
    assert list(work.iterdir()) == []


def test_missing_audio_is_a_note_not_an_error(entry, monkeypatch, tmp_path):
    monkeypatch.setenv("CHOPINBOT_SOUNDFONT", str(tmp_path / "none.sf2"))
    res = compose(ComposeRequest(model="tiny", seed_index=1, seconds=None, steps=16,
                                                 random_seed=0), entry)
    [piece] = res.pieces
    assert piece.wav is None and "soundfont" in piece.audio_note and "apt-get" in piece.audio_note


def test_reference_stats_and_threshold_guide(entry):
    assert [reference_length(n) for n in (1, 40, 257, 300, 1000)] == [16, 32, 256, 320, 1024]
    rows = reference_stats(entry.settings, 64)
    assert len(rows) > 20 and reference_stats(entry.settings, 64) is rows
    assert 2.0 < sum(r["pitch_class_entropy"] for r in rows) / len(rows) < 3.6
    whole = reference_stats(entry.settings, 10**7)  # longer than any piece: whole segments
    assert 5 <= len(whole) < 20
    curve = threshold_curve(entry)
    assert set(curve) == {"threshold", "precision", "recall", "f1"} and len(curve["f1"]) == 100
    assert all(0.0 <= v <= 1.0 for k in ("precision", "recall", "f1") for v in curve[k])
    assert max(curve["f1"]) > 0.3
    png = threshold_guide_png(entry)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and threshold_guide_png(entry) is png


def test_warm_up_fills_the_caches_once(entry):
    thread = warm_up(entry, max_states=64, wait=True)
    assert thread is not None and not thread.is_alive()
    assert warm_up(entry) is None  # once per model
    for n in (16, 32, 48, 64):
        assert (entry.settings, n) in reference._reference_memo._values
    assert (entry.key, entry.label) in reference._guide_memo._values


# --- the pool ------------------------------------------------------------------------


class _Gate:
    """A fake compose that blocks until released, recording concurrency."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = self.peak = self.calls = 0

    def __call__(self, request, entry, session_id=""):
        with self.lock:
            self.running += 1
            self.calls += 1
            self.peak = max(self.peak, self.running)
        self.release.wait(10)
        with self.lock:
            self.running -= 1
        piece = ComposedPiece(None, {"all": session_id.encode()}, None, None, b"", {}, None)
        return ComposeResult(request, "fake", [piece], [], 0, {"total": 0.0}, session_id)


def test_pool_bounds_workers_queue_and_sessions(monkeypatch):
    gate = _Gate()
    monkeypatch.setattr(app_pool, "compose", gate)
    pool = ComposePool(workers=2, max_queue=4)
    req = ComposeRequest(seconds=5)
    try:
        futs = [pool.submit(req, None, f"s{i}") for i in range(4)]
        with pytest.raises(RequestRefused, match="still being composed"):
            pool.submit(req, None, "s0")
        with pytest.raises(RequestRefused, match="busy"):
            pool.submit(req, None, "s9")
        with pytest.raises(RequestRefused, match="at most 120 s"):
            pool.submit(ComposeRequest(seconds=1000), None, "s8")
        time.sleep(0.2)
        st = pool.status()
        assert st["running"] == 2 and st["waiting"] == 2 and st["refused"] == 3
        gate.release.set()
        results = [f.result(10) for f in futs]
        assert [r.session_id for r in results] == ["s0", "s1", "s2", "s3"]
        assert all(r.pieces[0].midi["all"] == r.session_id.encode() for r in results)  # each gets its own
        assert gate.peak == 2 and all("queued" in r.timings for r in results)
        _wait_until(lambda: pool.status()["completed"] == 4)
        pool.compose(req, None, "s0")  # the session may ask again once its piece is done
    finally:
        gate.release.set()
        pool.shutdown()


def test_pool_passes_errors_and_times_out(monkeypatch):
    def boom(request, entry, session_id=""):
        raise ConfigError("bad seed")

    monkeypatch.setattr(app_pool, "compose", boom)
    pool = ComposePool(workers=1, max_queue=2)
    try:
        with pytest.raises(ConfigError, match="bad seed"):
            pool.compose(ComposeRequest(), None, "a")
        gate = _Gate()
        monkeypatch.setattr(app_pool, "compose", gate)
        with pytest.raises(RequestRefused, match="took more than"):
            pool.compose(ComposeRequest(), None, "b", timeout=0.2)
        gate.release.set()
    finally:
        pool.shutdown()


def test_background_work_waits_until_no_piece_is_waiting(monkeypatch):
    """A score's engraving (pool.submit_background) runs only when no visitor's piece waits: the
    pieces queued behind a running one are composed first, whatever the order they came in."""
    gate = _Gate()
    monkeypatch.setattr(app_pool, "compose", gate)
    pool = ComposePool(workers=1, max_queue=4)
    order: list[str] = []
    try:
        first = pool.submit(ComposeRequest(seconds=5), None, "a")
        _wait_until(lambda: gate.running == 1)  # the worker is busy with "a"
        engraved = pool.submit_background(lambda x: order.append(x) or x.upper(), "score of a")
        later = pool.submit(ComposeRequest(seconds=5), None, "b")
        gate.release.set()
        assert engraved.result(10) == "SCORE OF A"
        assert first.result(10).session_id == "a" and later.done()  # "b" was composed before the score
        assert order == ["score of a"] and gate.calls == 2
        failing = pool.submit_background(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(10)
    finally:
        gate.release.set()
        pool.shutdown()


def test_get_pool_is_shared_and_sized_from_the_environment(monkeypatch):
    monkeypatch.setattr(app_pool, "_pool", None)
    monkeypatch.setenv("CHOPINBOT_APP_WORKERS", "3")
    monkeypatch.setenv("CHOPINBOT_APP_MAX_QUEUE", "oops")
    monkeypatch.setenv("CHOPINBOT_APP_PROCESSES", "0")  # threads here; processes by default (tested below)
    pool = get_pool()
    try:
        assert get_pool() is pool and pool.workers == 3 and pool.max_queue == DEFAULT_MAX_QUEUE
        assert not pool.processes
    finally:
        pool.shutdown()


class _OneByOne:
    """A fake compose that finishes one request each time :meth:`next` is called."""

    def __init__(self) -> None:
        self.sem = threading.Semaphore(0)

    def next(self) -> None:
        self.sem.release()

    def __call__(self, request, entry, session_id=""):
        self.sem.acquire(timeout=10)
        return ComposeResult(request, "fake", [], [], 0, {"total": 0.0}, session_id)


def test_queue_position_counts_down_and_a_full_queue_says_where_it_would_stand(monkeypatch):
    steps = _OneByOne()
    monkeypatch.setattr(app_pool, "compose", steps)
    pool = ComposePool(workers=1, max_queue=4)
    req = ComposeRequest(seconds=5)
    seen: list[int] = []
    try:
        futs = [pool.submit(req, None, f"s{i}") for i in range(3)]
        _wait_until(lambda: pool.status()["running"] == 1)
        assert [pool.position(f) for f in futs] == [0, 1, 2]  # s0 composing, s1 next, s2 after it
        waiter = threading.Thread(target=lambda: pool.compose(req, None, "s3",
                                                              on_position=lambda n, _s: seen.append(n)))
        waiter.start()
        _wait_until(lambda: seen == [3])
        assert pool.wait_estimate(3) > pool.wait_estimate(1) > 0
        with pytest.raises(RequestRefused, match="would be number 4 in the queue"):
            pool.submit(req, None, "s4")  # 4 queued or running: the cap
        for place in (2, 1, 0):  # one piece done at a time: the waiting visitor moves up one place
            steps.next()
            _wait_until(lambda place=place: seen[-1] == place)
        steps.next()
        waiter.join(10)
        assert seen == [3, 2, 1, 0]  # told each place, then that its piece is being composed
        assert [pool.position(f) for f in futs] == [0, 0, 0] and not waiter.is_alive()
    finally:
        for _ in range(4):
            steps.next()
        pool.shutdown()
    assert "number 2 in the queue" in app_pool.queue_message(2, 3.0)
    assert "next in the queue" in app_pool.queue_message(1, 0.2)


def test_worker_processes_compose_the_same_music_as_a_thread(entry):
    """The server's pool composes in worker processes; a piece is the same as composed in the server."""
    req = ComposeRequest(model="tiny", seconds=4.0, seed_index=3, random_seed=11, render_audio=False)
    here = compose(req, entry, "t")
    pool = ComposePool(workers=1, max_queue=2, processes=True)
    try:
        there = pool.compose(req, entry, "p")
        assert there.pieces[0].fingerprint == here.pieces[0].fingerprint
        assert there.pieces[0].png == here.pieces[0].png and "queued" in there.timings
        with pytest.raises(ConfigError, match="does not exist"):  # the worker's own error, as it is
            pool.compose(ComposeRequest(model="tiny", seconds=4.0, seed_index=10**6), entry, "p")
        # a worker process that dies (killed, out of memory) fails one request with a sentence; another starts
        [pid] = pool.worker_pids()
        os.kill(pid, signal.SIGKILL)
        _wait_until(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
                    .rsplit(")", 1)[1].split()[:1], timeout=10)
        with pytest.raises(ChopinBotError, match="stopped unexpectedly"):
            pool.compose(req, entry, "p")
        assert pool.compose(req, entry, "p").pieces[0].fingerprint == here.pieces[0].fingerprint
        assert pool.worker_pids() != [pid]
    finally:
        pool.shutdown()


def test_session_log_lines_carry_the_session_id(caplog):
    with caplog.at_level(logging.INFO, logger="chopinbot.app"):
        session_log("abc123").info("hello %s", "there")
    assert caplog.records[-1].getMessage() == "[session abc123] hello there"
    assert len(new_session_id()) == 12 and new_session_id() != new_session_id()


def test_describe_request_hides_upload_content():
    text = describe_request(ComposeRequest(primer=b"MThd secret", primer_name="../a.mid"))
    assert "a.mid (11 bytes)" in text and "secret" not in text and "1 variation" in text
    assert "controls" not in text
    text = describe_request(ComposeRequest(variations=3, density=4, register=(48, 84), loudness="p", hold_key=False))
    assert "3 variations" in text and "controls: density 4/s, register 48-84, loudness p, key not held" in text


def _wait_until(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.02)


def test_load_tool_serves_concurrent_sessions_each_its_own_piece(tiny_model_dir, capsys):
    """`python -m chopinbot_tools.load`: N requests at once through the pool, each served its own piece."""
    from chopinbot_tools.load import main, percentile, run_load

    summary = run_load(3, seconds=3.0, model=str(tiny_model_dir / "best"), workers=1, max_queue=2, audio=False,
                       processes=False)
    assert (summary["served"], summary["refused"], summary["failures"]) == (2, 1, 0)  # the queue holds 2
    assert summary["distinct_pieces"] == 2 and "would be number" in summary["refusals"][0]
    assert summary["p50_s"] <= summary["p95_s"] <= summary["max_s"] and summary["cpu_per_request_s"] > 0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 3.0 and percentile([5.0], 0.95) == 5.0
    with pytest.raises(SystemExit):
        main(["--sessions", "0"])
    assert "--sessions must be at least 1" in capsys.readouterr().err
