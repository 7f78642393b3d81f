"""The web app, headless: Streamlit's AppTest drives every control of
src/chopinbot/app/layout.py and checks that the result follows it.

The app runs on the tiny test model (``$CHOPINBOT_MODEL``) with a models
folder holding a second run (``$CHOPINBOT_MODELS_DIR``).  Audio is switched
off (a missing soundfont) except in the test of the audio player, which keeps
each generation short; the audio path itself is tested in test_service.py
and in the browser test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from chopinbot.app import pool as app_pool  # noqa: E402
from chopinbot.app.registry import list_models, load_entry  # noqa: E402
from chopinbot.app.request import ComposeRequest, RequestRefused  # noqa: E402
from chopinbot.app.seeds import seed_infos  # noqa: E402
from chopinbot.app.settings import (  # noqa: E402
    BPM_RANGE,
    DEFAULT_REGISTER,
    MAX_PRIMER_STATES,
    MAX_REQUEST_SECONDS,
    MAX_REQUEST_STATES,
    MAX_UPLOAD_BYTES,
    MAX_VARIATIONS,
    MODEL_ENV,
    MODELS_DIR_ENV,
    SERVE_ENV,
    UPLOAD_LIMIT_MB,
)
from chopinbot.compose.generate import (  # noqa: E402
    DENSITY_RANGE,
    MAX_SECONDS,
    MAX_STEPS,
    TEMPERATURE_RANGE,
    THRESHOLD_RANGE,
    GenerateConfig,
)
from chopinbot.model.checkpoint import save_model  # noqa: E402
from chopinbot.model.formats import load_model  # noqa: E402
from chopinbot.model.network import ChopinLSTM  # noqa: E402
from chopinbot.music.states import states_to_notes  # noqa: E402
from chopinbot.render.audio import audio_available  # noqa: E402
from chopinbot.training.finetune import copy_weights, fine_tune_config  # noqa: E402
from conftest import CORPUS, make_midi  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "src" / "chopinbot" / "app" / "layout.py")
TIMEOUT = 120


@pytest.fixture(scope="module")
def app_env(tiny_model_dir, tiny_controls_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("app_models")
    shutil.copytree(tiny_model_dir / "best", root / "second-run" / "best")
    shutil.copytree(tiny_controls_model_dir / "best", root / "controls" / "best")  # a model with controls
    # a model with a style input: the tiny model given two styles (their weights start at 0)
    tiny = load_model(tiny_model_dir / "best")
    styled = ChopinLSTM(fine_tune_config(tiny.config, ["chopin", "mozart"], "chopin"))
    copy_weights(styled, tiny)
    save_model(root / "styled" / "best", styled, {k: v for k, v in tiny.meta.items() if k != "model"})
    return {MODEL_ENV: str(tiny_model_dir), MODELS_DIR_ENV: str(root)}


@pytest.fixture()
def at(app_env, monkeypatch, tmp_path):
    for k, v in app_env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("CHOPINBOT_SOUNDFONT", str(tmp_path / "no-soundfont.sf2"))  # audio off: fast
    monkeypatch.delenv(SERVE_ENV, raising=False)
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    _no_trouble(app)
    return app


def _no_trouble(app):
    assert not app.exception, [e.value for e in app.exception]


def _generate(app):
    app.button(key="generate").click().run()
    _no_trouble(app)
    return app.session_state["result"] if "result" in app.session_state else None


def _fixed_seed(app, seed=7):
    app.checkbox(key="fresh_seed").uncheck()
    app.number_input(key="random_seed").set_value(seed)


def _seed_is_minor(app) -> bool:
    infos = seed_infos(load_entry(*_model(app)))
    return "minor" in infos[app.session_state["seed_window"]].key


def _model(app):
    label = app.selectbox(key="model").value
    return str(list_models()[label]), label


def test_page_shows_controls_guide_and_help(at, tiny_model_dir):
    labels = {w.label for w in at.sidebar if hasattr(w, "label")}
    assert {"Model", "Start from", "Measure in", "Seconds of new music", "Variations", "How notes are chosen",
            "Temperature", "Key", "Tempo (bpm)", "Random seed", "New random seed for each piece",
            "Density (notes per second)", "Keep to a register", "Loudness", "Stay in the key"} <= labels
    assert at.selectbox(key="model").options[0] == f"{tiny_model_dir.name} (--model)"
    assert "second-run" in at.selectbox(key="model").options
    assert len(at.selectbox(key="key").options) == 25  # the seed's own key + 24 keys
    assert any("Threshold guide" in e.label for e in at.expander)
    assert any("What the controls do" in e.label for e in at.expander)
    assert len(at.image) >= 1  # the guide
    assert "session_id" in at.session_state and at.session_state["result"] is None


def test_generate_shows_roll_downloads_stats_guards_and_audio_note(at):
    res = _generate(at)
    assert res is not None and res.model_label.endswith("(--model)")
    assert [d.label for d in at.get("download_button")] == ["MIDI: seed", "MIDI: generated",
                                                           "MIDI: seed + generated", "Score: MusicXML",
                                                           "Score: PDF"]
    assert any("No audio player" in i.value and "soundfont" in i.value for i in at.info)
    assert len(at.image) >= 2  # piano roll + guide
    assert len(at.dataframe) == 1 and "statistic" in at.dataframe[0].value.columns
    [piece] = res.pieces
    assert any(f"piece {piece.fingerprint} · random seed " in c.value for c in at.caption)
    assert any(m.value.startswith("**Measured** (the new music):\n- density ") and "key held: " in m.value
               for m in at.markdown)
    guards = [w.value for w in at.warning] + [s.value for s in at.success]
    assert any("guards" in g for g in guards)
    assert res.request.seconds == 30.0 and piece.new_seconds >= 30.0


def test_audio_player_when_fluidsynth_is_present(at, monkeypatch):
    if not audio_available()[0] and not _audio_with_default_soundfont(monkeypatch):
        pytest.skip("FluidSynth or a GM soundfont is missing: " + audio_available()[1])
    monkeypatch.delenv("CHOPINBOT_SOUNDFONT")
    at.number_input(key="seconds").set_value(5.0)
    res = _generate(at)
    assert res.pieces[0].wav[:4] == b"RIFF"
    assert len(at.get("audio")) == 1
    assert "Audio (WAV)" in [d.label for d in at.get("download_button")]


def _audio_with_default_soundfont(monkeypatch) -> bool:
    with monkeypatch.context() as m:
        m.delenv("CHOPINBOT_SOUNDFONT")
        return audio_available()[0]


def test_key_and_tempo_controls_change_the_result(at):
    _fixed_seed(at)
    mode = "minor" if _seed_is_minor(at) else "major"
    at.selectbox(key="key").set_value(f"E {mode}")
    at.number_input(key="bpm").set_value(90.0)
    at.number_input(key="seconds").set_value(8.0)
    first = _generate(at)
    assert first.key_name == f"E {mode}" and first.bpm == 90.0
    assert any(f"E {mode}, 90 bpm" in s.value for s in at.subheader)
    at.selectbox(key="key").set_value(f"Bb {mode}")
    at.number_input(key="bpm").set_value(140.0)
    second = _generate(at)
    assert second.key_name == f"Bb {mode}" and second.bpm == 140.0
    assert second.pieces[0].fingerprint != first.pieces[0].fingerprint
    # the other mode cannot be reached by transposing: the relative key, said so by a guard
    other = "major" if mode == "minor" else "minor"
    third = _generate_with(at, key=f"C {other}")
    assert third.key_name == ("A minor" if other == "major" else "Eb major")
    assert any("relative" in w.value for w in at.warning)


def _generate_with(at, **widgets):
    for key, value in widgets.items():
        at.selectbox(key=key).set_value(value)
    return _generate(at)


def test_length_in_states_and_seconds(at):
    at.radio(key="length_unit").set_value("states").run()
    at.number_input(key="states").set_value(40)
    res = _generate(at)
    assert len(res.pieces[0].generation.generated) == 40 and res.request.seconds is None
    at.radio(key="length_unit").set_value("seconds").run()
    at.number_input(key="seconds").set_value(12.0)
    res = _generate(at)
    assert res.request.seconds == 12.0 and res.pieces[0].new_seconds >= 12.0


def test_decoding_threshold_and_temperature(at):
    at.radio(key="decoding").set_value("threshold").run()
    entry = load_entry(*_model(at))
    assert at.slider(key="threshold").value == pytest.approx(round(entry.threshold, 2))
    at.slider(key="threshold").set_value(0.2)
    at.number_input(key="seconds").set_value(6.0)
    res = _generate(at)
    assert res.request.threshold == 0.2 and res.request.temperature == 1.0
    at.radio(key="decoding").set_value("sampling").run()
    at.slider(key="temperature").set_value(0.5)
    at.slider(key="repeat_boost").set_value(32.0)  # the top of the range, twice the default
    at.slider(key="repeat_passes").set_value(1)
    at.slider(key="repeat_span").set_value(96)
    res = _generate(at)
    assert res.request.threshold is None and res.request.temperature == 0.5
    cfg = res.request.generate_config()
    assert cfg.repeat_boost == 32.0 and cfg.repeat_passes == 1 and cfg.repeat_span == 96


def test_random_seed_reproduces_and_fresh_seed_varies(at):
    at.number_input(key="seconds").set_value(6.0)
    _fixed_seed(at, 123)
    a, b = _generate(at), _generate(at)
    assert a.request.random_seed == b.request.random_seed == 123 and a.pieces[0].fingerprint == b.pieces[0].fingerprint
    at.number_input(key="random_seed").set_value(124)
    assert _generate(at).pieces[0].fingerprint != a.pieces[0].fingerprint
    at.checkbox(key="fresh_seed").check()
    fresh = _generate(at).request.random_seed
    assert fresh != 124 and at.number_input(key="random_seed").value == fresh  # shown, to reproduce it


def test_seed_window_controls_and_the_seed_is_kept(at):
    n = len(seed_infos(load_entry(*_model(at))))
    at.number_input(key="seed_index").set_value(3).run()
    info = seed_infos(load_entry(*_model(at)))[3]
    assert at.session_state["seed_window"] == 3
    assert any(f"{info.piece}, {info.key}, from state {info.position}" in c.value for c in at.sidebar.caption)
    at.number_input(key="seconds").set_value(4.0)
    res = _generate(at)
    assert res.request.seed_index == 3 and f"@ state {info.position}" in res.seed_source
    at.run()  # a rerun keeps the visitor's seed
    assert at.session_state["seed_window"] == 3
    windows = set()
    for _ in range(4):
        at.button(key="new_seed").click().run()
        windows.add(at.session_state["seed_window"])
    assert windows - {3} and all(0 <= w < n for w in windows)
    assert at.number_input(key="seed_index").value == at.session_state["seed_window"]
    at.selectbox(key="key").set_value("A minor").run()  # a new random window follows the key's mode
    for _ in range(3):
        at.button(key="new_seed").click().run()
        assert _seed_is_minor(at)


def test_model_choice(at):
    at.selectbox(key="model").set_value("second-run").run()
    at.number_input(key="seconds").set_value(4.0)
    res = _generate(at)
    assert res.model_label == "second-run"
    assert any("model second-run" in c.value for c in at.caption)


def test_style_choice_for_a_model_with_a_style_input(at):
    assert not [w for w in at.selectbox if str(w.key).startswith("style:")]  # one style: no control
    at.selectbox(key="model").set_value("styled").run()
    style = at.selectbox(key="style:styled")
    assert style.options == ["chopin", "mozart"] and style.value == "chopin"
    style.set_value("mozart").run()
    at.number_input(key="seconds").set_value(4.0)
    res = _generate(at)
    assert res.model_label == "styled" and res.request.style == "mozart"


def test_steering_is_disabled_with_the_reason_for_a_model_without_controls(at):
    assert not load_entry(*_model(at)).model.config.controls
    widgets = [at.number_input(key="density"), at.checkbox(key="steer_register"), at.selectbox(key="loudness"),
               at.checkbox(key="hold_key")]
    assert all(w.disabled for w in widgets) and all(w.help for w in widgets)
    assert any("This model has no controls" in c.value and "--controls" in c.value for c in at.sidebar.caption)
    res = _generate(at)  # nothing is asked of the model
    assert res is not None and not res.request.steered and res.request.hold_key


def test_every_steering_control_reaches_the_piece(at):
    at.selectbox(key="model").set_value("controls").run()
    assert not any("This model has no controls" in c.value for c in at.sidebar.caption)
    density = at.number_input(key="density")
    assert not density.disabled and density.value is None and (density.min, density.max) == DENSITY_RANGE
    assert at.selectbox(key="loudness").options[1:] == ["pp (velocity 35)", "p (velocity 44)", "mf (velocity 51)",
                                                        "f (velocity 62)", "ff (velocity 74)"]
    _fixed_seed(at)
    at.number_input(key="seconds").set_value(8.0)
    free = _generate(at)
    assert not free.request.steered and free.request.register is None
    assert not any("(asked" in m.value for m in at.markdown)

    at.number_input(key="density").set_value(12.0)
    at.checkbox(key="steer_register").check().run()
    register = at.select_slider(key="register")
    assert register.value == DEFAULT_REGISTER and all(w.help for w in (register, at.checkbox(key="confine_register")))
    register.set_range(55, 79)
    at.selectbox(key="loudness").set_value("ff")
    at.checkbox(key="hold_key").uncheck()
    res = _generate(at)
    req = res.request
    assert (req.density, req.register, req.loudness, req.hold_key, req.confine_register) == \
        (12.0, (55, 79), "ff", False, True)
    cfg = res.pieces[0].generation.config
    assert (cfg.density, cfg.register, cfg.loudness, cfg.hold_key) == (12.0, (55, 79), "ff", False)
    notes = states_to_notes(res.pieces[0].generation.generated)
    struck = notes[notes[:, 0] > 0]  # a note held over from the seed may lie outside
    assert ((struck[:, 2] >= 55) & (struck[:, 2] <= 79)).all()
    measured = next(m.value for m in at.markdown if m.value.startswith("**Measured**"))
    assert "(asked 12)" in measured and "(asked G3–G5)" in measured and "(asked ff)" in measured
    assert res.pieces[0].fingerprint != free.pieces[0].fingerprint

    at.checkbox(key="confine_register").uncheck()
    at.select_slider(key="register").set_range(60, 62).run()  # narrower than a register may be
    assert any("at least 7 semitones" in w.value for w in at.sidebar.warning)
    kept = _generate(at)  # refused: the page keeps the last piece and says why
    assert kept.pieces[0].fingerprint == res.pieces[0].fingerprint
    assert any("register must span at least 7 semitones" in e.value for e in at.error)


def test_variations_side_by_side(at):
    variations = at.number_input(key="variations")
    assert (variations.min, variations.max, variations.value) == (1, MAX_VARIATIONS, 1) and variations.help
    at.number_input(key="seconds").set_value(6.0)
    variations.set_value(3)
    res = _generate(at)
    assert len(res.pieces) == 3 and len({p.fingerprint for p in res.pieces}) == 3
    assert any("3 variations of" in s.value for s in at.subheader)
    assert [m.value for m in at.markdown if m.value.startswith("#### ")] == [f"#### Variation {i}" for i in (1, 2, 3)]
    assert len([m for m in at.markdown if m.value.startswith("**Measured**")]) == 3
    assert len(at.columns) >= 3
    labels = [d.label for d in at.get("download_button")]
    assert labels.count("MIDI: seed") == 1 and labels.count("MIDI: seed + generated") == 3
    assert list(at.dataframe[0].value.columns)[1:4] == ["variation 1", "variation 2", "variation 3"]
    # a longer piece allows fewer variations: the choice follows the per-request cap
    at.number_input(key="seconds").set_value(50.0).run()
    assert at.number_input(key="variations").max == 2 and at.number_input(key="variations").value == 2
    assert any("At most 2 variations of this length" in c.value for c in at.sidebar.caption)


def test_form(at):
    form = at.selectbox(key="form")
    assert form.options == ["free (a continuation)", "ABA", "AABA"] and form.help
    form.set_value("AABA")
    at.number_input(key="seconds").set_value(90.0)  # four sections of 8 beats or more, even at a slow seed's tempo
    _fixed_seed(at)
    res = _generate(at)
    assert res is not None and res.request.form == "AABA"
    assert [s.label for s in res.pieces[0].generation.sections] == ["A", "A'", "B", "A''"]
    assert any("Form AABA: A 0.0-" in m.value for m in at.markdown)


def test_infill_of_an_uploaded_piece(at):
    at.radio(key="seed_source").set_value("my MIDI file or score").run()
    at.checkbox(key="infill_on").check().run()
    at.file_uploader(key="primer").upload("p20.mid", (CORPUS / "chpn-p20.mid").read_bytes(), "audio/midi").run()
    _no_trouble(at)
    assert any("The piece ends at" in c.value and "bar " in c.value for c in at.sidebar.caption)
    # what an infill keeps is not offered
    assert all(w.disabled for w in (at.number_input(key="seconds"), at.number_input(key="variations"),
                                    at.selectbox(key="form"), at.selectbox(key="key"), at.number_input(key="bpm"),
                                    at.number_input(key="primer_states")))
    assert any("An infill keeps the span's length" in c.value for c in at.sidebar.caption)
    at.radio(key="infill_unit").set_value("bars").run()
    at.number_input(key="infill_start_b").set_value(2)
    at.number_input(key="infill_end_b").set_value(3)
    at.number_input(key="infill_candidates").set_value(3)
    res = _generate(at)
    assert res.is_infill and res.request.infill == (2.0, 3.0) and res.request.infill_unit == "bars"
    assert len(res.pieces[0].generation.candidate_nll) == 3
    assert any("composed anew" in h.value for h in at.subheader)
    assert [d.label for d in at.get("download_button")] == ["MIDI: the whole piece, span replaced",
                                                           "MIDI: the excerpt played", "Score: MusicXML",
                                                           "Score: PDF"]
    assert any(m.value.startswith("**Summary.** ChopinBot (tiny") and " infilled " in m.value for m in at.markdown)
    at.number_input(key="infill_end_b").set_value(200)  # past the piece's end: a sentence, not a traceback
    _generate(at)
    assert any("past the piece's end" in e.value or "nothing after the span" in e.value for e in at.error)


def test_good_primer(at, tmp_path):
    notes = [(i * 0.5, i * 0.5 + 0.5, 64 + (i * 5) % 12) for i in range(32)]
    data = make_midi(tmp_path / "mine.mid", notes, sharps=0).read_bytes()
    at.radio(key="seed_source").set_value("my MIDI file or score").run()
    at.file_uploader(key="primer").upload("../../etc/mine.mid", data, "audio/midi").run()
    _no_trouble(at)
    assert not at.sidebar.error
    assert any("Using primer mine.mid" in c.value and "last 16 states" in c.value for c in at.sidebar.caption)
    at.number_input(key="primer_states").set_value(8)
    at.number_input(key="seconds").set_value(4.0)
    res = _generate(at)
    assert res.seed_source.startswith("primer mine.mid") and res.request.primer == data
    assert "last 8 states" in res.seed_source and res.pieces[0].generation.seed_len == 8


@pytest.mark.parametrize("name, data, message", [
    ("notes.mid", b"These are not the notes you are looking for." * 3, "is not a MIDI file"),
    ("huge.mid", b"MThd" + bytes(MAX_UPLOAD_BYTES + 10), "primers are limited to 2 MB"),
    ("drums.mid", None, "only drum notes"),
    ("broken.mid", b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\xff", "cannot be used as a primer"),
])
def test_bad_upload_shows_a_message_and_the_app_stays_usable(at, tmp_path, name, data, message):
    if data is None:
        data = make_midi(tmp_path / name, [(0, 1, 38), (1, 2, 42)], drum=True).read_bytes()
    at.radio(key="seed_source").set_value("my MIDI file or score").run()
    at.file_uploader(key="primer").upload(name, data, "audio/midi").run()
    _no_trouble(at)
    assert any(message in e.value for e in at.sidebar.error), [e.value for e in at.sidebar.error]
    assert _generate(at) is None
    assert any("Upload a usable MIDI file or score first" in w.value for w in at.warning)
    at.radio(key="seed_source").set_value("a held-out piece").run()
    at.number_input(key="seconds").set_value(4.0)
    assert _generate(at) is not None  # still usable


def test_a_score_primer_and_the_models_own_held_out_pieces(at, tiny_dataset_dir):
    """A MusicXML upload primes like a MIDI file (its key kept); the tiny model's own dataset is here,
    so its held-out pieces are offered as seeds, and the piece names the model."""
    score = (Path(__file__).parent / "fixtures" / "scores" / "little.musicxml").read_bytes()
    at.radio(key="seed_source").set_value("my MIDI file or score").run()
    at.file_uploader(key="primer").upload("little.musicxml", score, "application/xml").run()
    _no_trouble(at)
    assert not at.sidebar.error
    assert any("Using primer little.musicxml (D minor" in c.value for c in at.sidebar.caption)
    at.number_input(key="seconds").set_value(4.0)
    res = _generate(at)
    assert res.seed_source.startswith("primer little.musicxml (D minor") and res.key_name == "D minor"
    assert res.pieces[0].summary.startswith("ChopinBot (tiny")
    at.radio(key="seed_source").set_value("a held-out piece").run()
    label = at.selectbox(key="model").value
    choice = at.radio(key=f"seeds_from:{label}")
    assert choice.value == "the bundled Chopin test pieces"  # a model without styles: Chopin's first
    own = [o for o in choice.options if "the model's own data" in o]
    assert own == [f"{tiny_dataset_dir.name}'s held-out pieces (the model's own data)"]
    choice.set_value(own[0]).run()
    _no_trouble(at)
    res = _generate(at)
    assert res.request.own_seeds and res.seed_source.startswith(f"{tiny_dataset_dir.name}/")


def test_controls_offer_what_the_service_accepts(at, tmp_path):
    """Every control's range and default come from the service's limits and GenerateConfig:
    the page never offers what the server refuses, except a length, which goes up to the library's
    own bound so that the server's smaller cap refuses it with its message (pointing to the CLI)."""
    defaults, library = ComposeRequest(), GenerateConfig()
    seconds = at.number_input(key="seconds")
    assert (seconds.min, seconds.max, seconds.value) == (1.0, MAX_SECONDS, defaults.seconds)
    temperature = at.slider(key="temperature")
    assert (temperature.min, temperature.max) == TEMPERATURE_RANGE
    assert temperature.value == defaults.temperature == library.temperature
    assert at.slider(key="repeat_boost").value == defaults.repeat_boost == library.repeat_boost
    assert at.slider(key="repeat_passes").value == defaults.repeat_passes == library.repeat_passes
    assert at.slider(key="repeat_span").value == defaults.repeat_span == library.repeat_span
    bpm = at.number_input(key="bpm")
    assert (bpm.min, bpm.max) == BPM_RANGE
    at.radio(key="length_unit").set_value("states").run()
    states = at.number_input(key="states")
    assert (states.min, states.max, states.value) == (1, MAX_STEPS, library.steps)
    at.radio(key="decoding").set_value("threshold").run()
    assert (at.slider(key="threshold").min, at.slider(key="threshold").max) == THRESHOLD_RANGE
    at.radio(key="seed_source").set_value("my MIDI file or score").run()
    primer_states = at.number_input(key="primer_states")
    assert (primer_states.min, primer_states.max, primer_states.value) == (1, MAX_PRIMER_STATES,
                                                                            defaults.primer_states)
    assert at.get("file_uploader")[0].proto.max_upload_size_mb == UPLOAD_LIMIT_MB
    # the service accepts each control's extremes
    for extreme in (dict(seconds=MAX_REQUEST_SECONDS), dict(seconds=None, steps=MAX_REQUEST_STATES),
                    dict(temperature=TEMPERATURE_RANGE[0]), dict(temperature=TEMPERATURE_RANGE[1]),
                    dict(threshold=THRESHOLD_RANGE[0]), dict(threshold=THRESHOLD_RANGE[1]), dict(bpm=BPM_RANGE[0]),
                    dict(bpm=BPM_RANGE[1]), dict(primer=b"MThd", primer_states=MAX_PRIMER_STATES)):
        ComposeRequest(**extreme).check_limits()


def test_a_length_over_the_cap_is_refused_with_the_message(at):
    """A length past the server's cap is refused by the service with its message (the control lets
    it through to the library: Streamlit would reset a value past a control's maximum to the default)."""
    at.number_input(key="seconds").set_value(MAX_REQUEST_SECONDS + 180)
    assert _generate(at) is None
    assert any(f"at most {MAX_REQUEST_SECONDS:g} s" in w.value and "chopinbot generate" in w.value
               for w in at.warning), [w.value for w in at.warning]


def test_a_refused_request_is_a_warning(at, monkeypatch):
    def refuse(request, entry, session_id=""):
        raise RequestRefused("The server is busy (32 pieces are being composed or waiting).")

    monkeypatch.setattr(app_pool, "compose", refuse)
    assert _generate(at) is None
    assert any("The server is busy" in w.value for w in at.warning)


def test_library_error_is_a_message_not_a_traceback(at, monkeypatch):
    def broken(request, entry, session_id=""):
        raise RuntimeError("internal detail /secret/path")

    monkeypatch.setattr(app_pool, "compose", broken)
    assert _generate(at) is None
    errors = [e.value for e in at.error]
    assert any("Something went wrong on the server" in e for e in errors)
    assert not any("secret" in e for e in errors)


def test_the_hammered_chord_box_reaches_the_composer(at):
    """Every control reaches the request: `--chopin-runs` is a box on the page (on, as in the library)."""
    box = at.checkbox(key="chopin_runs")
    assert box.value is True and box.help and box.label.startswith("Stop a hammered chord")
    box.uncheck()
    res = _generate(at)
    assert res is not None and res.request.chopin_runs is False
