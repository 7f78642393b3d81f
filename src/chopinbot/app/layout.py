"""ChopinBot's web app (Streamlit): layout only.

Start it with ``chopinbot app`` (or ``make app``).  Every piece of logic lives
in the modules beside this one, which call the same library functions as the
CLI: models (:mod:`~chopinbot.app.registry`), seeds and uploads
(:mod:`~chopinbot.app.seeds`), requests, composing and results
(:mod:`~chopinbot.app.request`), the worker pool (:mod:`~chopinbot.app.pool`),
real Chopin's statistics and the threshold guide (:mod:`~chopinbot.app.reference`),
session logs (:mod:`~chopinbot.app.sessions`).  Every control takes its range
and default from :mod:`chopinbot.app.settings` and the bounds beside
:class:`~chopinbot.compose.generate.GenerateConfig`, so none offers what the
server refuses.  Each visitor's choices and results live in
``st.session_state`` only; nothing is written to disk.
"""

from __future__ import annotations

import os

import numpy as np
import streamlit as st

from chopinbot.app import registry
from chopinbot.app.pool import get_pool, tune_for_serving, warm_up
from chopinbot.app.reference import threshold_guide_png
from chopinbot.app.registry import ModelEntry, list_models
from chopinbot.app.request import ComposeRequest, ComposeResult, RequestRefused, describe_request
from chopinbot.app.seeds import pick_random_seed, primer_seed, seed_infos
from chopinbot.app.sessions import configure_logging, new_session_id, session_log
from chopinbot.app.settings import (
    BPM_RANGE,
    MAX_PRIMER_STATES,
    MAX_REQUEST_SECONDS,
    MAX_REQUEST_STATES,
    MAX_UPLOAD_BYTES,
    SERVE_ENV,
    UPLOAD_LIMIT_MB,
)
from chopinbot.compose.generate import KEY_MIN_P_RANGE, TEMPERATURE_RANGE, THRESHOLD_RANGE, GenerateConfig
from chopinbot.constants import SEED_STATES
from chopinbot.errors import ChopinBotError
from chopinbot.music.keys import ALL_KEYS

REQUEST_DEFAULTS = ComposeRequest()
GENERATE_DEFAULTS = GenerateConfig()

SEED_KEY_OPTION = "the seed's own key"
HELP = {
    "model": "Which trained network composes. Only the models listed here can be chosen.",
    "seed_source": f"The music ChopinBot continues: a {SEED_STATES}-state window of a held-out Chopin piece "
                   "(one it never trained on), or the last bars of your own MIDI file.",
    "seed_index": "Which window of the held-out pieces to start from; the same index always gives the same seed.",
    "new_seed": "Pick another window at random (in the mode of the chosen key, if one is chosen).",
    "primer": f"A standard MIDI file (.mid, at most {MAX_UPLOAD_BYTES / 1024 / 1024:.0f} MB). Its last states "
              "become the seed; drums are ignored.",
    "primer_states": "How many of the primer's last states (chords or rests) ChopinBot listens to.",
    "length_unit": "Say how long the new music should be in seconds, or in states (one state = one chord "
                   "or rest, a fraction of a beat to a few beats).",
    "seconds": f"Seconds of new music (the server composes at most {MAX_REQUEST_SECONDS:g} s per request).",
    "states": f"States of new music (at most {MAX_REQUEST_STATES:,} per request).",
    "decoding": "Sampling draws every key from its probability (varied, sometimes surprising); "
                "a threshold plays every key whose probability reaches it (the original app's way: "
                "repeatable, but it soon goes round in circles: the same few chords again and again).",
    "temperature": "Below 1: safer, more predictable; above 1: wilder.",
    "key_min_p": "A key that is not sounding may start only if its probability is at least this fraction of the "
                 "likeliest such key's: higher = fewer stray notes, 0 = off.",
    "key_local_p": "A key that is not sounding may start only if its probability is at least this fraction of the "
                   "likeliest such key within a few semitones of it: every register keeps its own likeliest "
                   "notes (so the bass goes on under the melody), while near-miss wrong notes are cut. 0 = off.",
    "threshold": "A key sounds when its probability is at least this. Lower = more notes. "
                 "The threshold guide below shows the trade-off; the default is the value that was best "
                 "on held-out pieces.",
    "key": "Transpose the result into this key. A major seed cannot become minor by transposition: "
           "then the relative key is used (and said so).",
    "bpm": "Tempo of the result in beats per minute; empty = the seed's own tempo.",
    "style": "Whose style to compose in. This model learnt several composers' piano music with a style input, "
             "but so far the seed sets the character far more than the style does (docs/corpus.md).",
    "random_seed": "The same random seed with the same settings gives the same piece again.",
    "fresh_seed": "Draw a new random seed each time you press Generate (untick to reproduce a piece).",
}


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def load_entry(path: str, label: str) -> ModelEntry:
    return registry.load_entry(path, label)


def init_session() -> None:
    ss = st.session_state
    if "session_id" not in ss:
        ss.session_id = new_session_id()
        session_log(ss.session_id).info("session started")
    rng = np.random.default_rng()
    ss.setdefault("random_seed", int(rng.integers(0, 1_000_000)))
    ss.setdefault("fresh_seed", True)
    ss.setdefault("result", None)
    ss.setdefault("message", None)


def sidebar_controls(models: dict) -> tuple[ModelEntry, dict]:
    ss = st.session_state
    sb = st.sidebar
    sb.header("Controls")
    label = sb.selectbox("Model", list(models), key="model", help=HELP["model"])
    entry = load_entry(str(models[label]), label)
    if os.environ.get(SERVE_ENV) == "1":
        warm_up(entry)  # once per model, in the background
    sb.caption(entry.description)

    sb.subheader("Seed")
    source = sb.radio("Start from", ["a Chopin test piece", "my MIDI file"], key="seed_source",
                      help=HELP["seed_source"], horizontal=True)
    infos = seed_infos(entry)
    # The visitor's seed window lives in "seed_window" (kept across reruns, even
    # while the widget is hidden); the widget "seed_index" only edits it.
    if "seed_window" not in ss or not 0 <= ss.seed_window < len(infos):
        ss.seed_window = pick_random_seed(entry)
    primer = None
    if source == "a Chopin test piece":
        ss.seed_index = ss.seed_window
        sb.number_input(f"Seed window (0–{len(infos) - 1})", min_value=0, max_value=len(infos) - 1, step=1,
                        key="seed_index", help=HELP["seed_index"], on_change=_copy_seed_index)
        sb.button("New random seed", key="new_seed", help=HELP["new_seed"], on_click=new_random_seed,
                  args=(entry,))
        info = infos[ss.seed_window]
        sb.caption(f"{info.piece}, {info.key}, from state {info.position} ({info.seconds:.1f} s)")
    else:
        upload = sb.file_uploader("MIDI primer", type=["mid", "midi"], key="primer", help=HELP["primer"],
                                  max_upload_size=UPLOAD_LIMIT_MB)
        sb.number_input("States of the primer to use", min_value=1, max_value=MAX_PRIMER_STATES,
                        value=REQUEST_DEFAULTS.primer_states, key="primer_states", help=HELP["primer_states"])
        if upload is not None:
            data = upload.getvalue()
            try:
                seed = primer_seed(data, upload.name, entry, int(ss.primer_states))
                primer = (data, upload.name)
                sb.caption(f"Using {seed.source}.")
            except ChopinBotError as e:
                sb.error(str(e))
                if ss.get("logged_primer") != upload.file_id:  # once per upload, not on every rerun
                    ss.logged_primer = upload.file_id
                    session_log(ss.session_id).info("primer refused: %s", e)

    sb.subheader("Length")
    unit = sb.radio("Measure in", ["seconds", "states"], key="length_unit", horizontal=True,
                    help=HELP["length_unit"])
    if unit == "seconds":
        length = sb.number_input("Seconds of new music", min_value=1.0, max_value=MAX_REQUEST_SECONDS,
                                 value=REQUEST_DEFAULTS.seconds, step=5.0, key="seconds", help=HELP["seconds"])
    else:
        length = sb.number_input("States of new music", min_value=1, max_value=MAX_REQUEST_STATES,
                                 value=GENERATE_DEFAULTS.steps, step=16, key="states", help=HELP["states"])

    sb.subheader("Decoding")
    decoding = sb.radio("How notes are chosen", ["sampling", "threshold"], key="decoding", horizontal=True,
                        help=HELP["decoding"])
    if decoding == "sampling":
        value = sb.slider("Temperature", min_value=TEMPERATURE_RANGE[0], max_value=TEMPERATURE_RANGE[1],
                          value=REQUEST_DEFAULTS.temperature, step=0.05, key="temperature", help=HELP["temperature"])
        sb.slider("Key min-p", min_value=KEY_MIN_P_RANGE[0], max_value=KEY_MIN_P_RANGE[1],
                  value=REQUEST_DEFAULTS.key_min_p, step=0.01, key="key_min_p", help=HELP["key_min_p"])
        sb.slider("Key local p", min_value=KEY_MIN_P_RANGE[0], max_value=KEY_MIN_P_RANGE[1],
                  value=REQUEST_DEFAULTS.key_local_p, step=0.05, key="key_local_p", help=HELP["key_local_p"])
    else:
        value = sb.slider("Threshold", min_value=THRESHOLD_RANGE[0], max_value=THRESHOLD_RANGE[1],
                          value=round(entry.threshold, 2), step=0.01, key="threshold", help=HELP["threshold"])

    sb.subheader("Result")
    key = sb.selectbox("Key", [SEED_KEY_OPTION] + [k.name for k in ALL_KEYS], key="key", help=HELP["key"])
    style = None
    if entry.model.config.style_input:  # only a model with a style input can change style
        styles = entry.model.config.styles
        style = sb.selectbox("Style", styles, index=styles.index(entry.model.config.default_style),
                             key=f"style:{label}", help=HELP["style"])
    bpm = sb.number_input("Tempo (bpm)", min_value=BPM_RANGE[0], max_value=BPM_RANGE[1],
                          value=None, step=5.0, placeholder="the seed's own tempo", key="bpm", help=HELP["bpm"])
    sb.number_input("Random seed", min_value=0, max_value=2**31 - 1, step=1, key="random_seed",
                    help=HELP["random_seed"])
    sb.checkbox("New random seed for each piece", key="fresh_seed", help=HELP["fresh_seed"])

    request = dict(
        model=label,
        seed_index=int(ss.seed_window) if source == "a Chopin test piece" else None,
        primer=primer[0] if primer else None,
        primer_name=primer[1] if primer else None,
        primer_states=int(ss.get("primer_states", REQUEST_DEFAULTS.primer_states)),
        seconds=float(length) if unit == "seconds" else None,
        steps=int(length) if unit == "states" else None,
        threshold=float(value) if decoding == "threshold" else None,
        temperature=float(value) if decoding == "sampling" else REQUEST_DEFAULTS.temperature,
        key_min_p=float(ss.get("key_min_p", REQUEST_DEFAULTS.key_min_p)) if decoding == "sampling"
        else REQUEST_DEFAULTS.key_min_p,
        key_local_p=float(ss.get("key_local_p", REQUEST_DEFAULTS.key_local_p)) if decoding == "sampling"
        else REQUEST_DEFAULTS.key_local_p,
        key=None if key == SEED_KEY_OPTION else key,
        bpm=float(bpm) if bpm is not None else None,
        style=style,
        random_seed=int(ss.random_seed),
    )
    return entry, request


def _copy_seed_index() -> None:
    st.session_state.seed_window = int(st.session_state.seed_index)


def new_random_seed(entry: ModelEntry) -> None:
    key = st.session_state.get("key")
    st.session_state.seed_window = pick_random_seed(entry, key=None if key == SEED_KEY_OPTION else key)


def before_generate() -> None:
    if st.session_state.get("fresh_seed"):
        st.session_state.random_seed = int(np.random.default_rng().integers(0, 1_000_000))


def generate(entry: ModelEntry, fields: dict, wants_primer: bool) -> None:
    ss = st.session_state
    log = session_log(ss.session_id)
    ss.message = None
    if wants_primer and fields["primer"] is None:
        ss.message = ("warning", "Upload a usable MIDI primer first, or start from a Chopin test piece.")
        return
    request = ComposeRequest(**fields)
    pool = get_pool()
    log.info("compose: %s", describe_request(request))
    try:
        with st.spinner("Composing…"):
            result = pool.compose(request, entry, ss.session_id)
    except RequestRefused as e:
        log.info("refused: %s", e)
        ss.message = ("warning", str(e))
        return
    except ChopinBotError as e:
        log.info("error: %s", e)
        ss.message = ("error", str(e))
        return
    except Exception:  # never a traceback on the page
        log.exception("unexpected error")
        ss.message = ("error", f"Something went wrong on the server (it has been logged under session "
                               f"{ss.session_id}). Please try again.")
        return
    t = result.timings
    log.info("done: piece %s, %s, %.0f bpm, %d states in %.2f s (queued %.2f s, generate %.2f s [cpu %.2f s], "
             "audio %.2f s, picture %.2f s [cpu %.2f s])", result.fingerprint, result.key_name, result.bpm,
             len(result.generation.generated), t["total"], t.get("queued", 0.0), t["generate"], t["generate_cpu"],
             t["audio"], t["picture"], t["picture_cpu"])
    ss.result = result


def show_result(result: ComposeResult) -> None:
    gen = result.generation
    new_seconds = gen.generated.total_beats * 60 / gen.bpm
    st.subheader(f"{result.key_name}, {result.bpm:.0f} bpm — {new_seconds:.1f} s of new music")
    if result.wav is not None:
        st.audio(result.wav, format="audio/wav")
    else:
        st.info(f"No audio player: {result.audio_note} The MIDI downloads below work without it.")
    cols = st.columns(4)
    cols[0].download_button("MIDI: seed", result.midi["seed"], result.file_name("seed"), "audio/midi",
                            key="dl_seed", on_click="ignore")
    cols[1].download_button("MIDI: generated", result.midi["generated"], result.file_name("generated"),
                            "audio/midi", key="dl_generated", on_click="ignore")
    cols[2].download_button("MIDI: seed + generated", result.midi["all"], result.file_name("all"), "audio/midi",
                            key="dl_all", type="primary", on_click="ignore")
    if result.wav is not None:
        cols[3].download_button("Audio (WAV)", result.wav, result.file_name("all", "wav"), "audio/wav",
                                key="dl_wav", on_click="ignore")
    st.image(result.png, caption="Piano roll: the seed (grey), then ChopinBot's continuation (blue).")
    st.caption(f"piece {result.fingerprint} · random seed {result.request.random_seed} · model "
               f"{result.model_label} · seed: {result.seed_source} · composed in {result.timings['total']:.2f} s")
    st.markdown(f"**Summary.** {result.summary}")
    if result.guards:
        st.warning("**What the generation guards did:**\n" + "\n".join(f"- {g}" for g in result.guards))
    else:
        st.success("Generation guards: none fired (the piece never fell silent, got stuck or looped).")
    st.markdown(f"**Musical statistics** of this piece (seed included) beside real Chopin: {result.n_real} "
                f"excerpts of about the same length from the held-out pieces.")
    st.dataframe(result.stats_table(), hide_index=True)


def show_guide(entry: ModelEntry) -> None:
    with st.expander("Threshold guide: how the decision threshold trades precision for recall", expanded=False):
        with st.spinner("Scoring the model on the validation pieces (once per model)…"):
            png = threshold_guide_png(entry)
        st.image(png)
        st.markdown(
            f"With **threshold** decoding a key sounds when the model gives it at least that probability. "
            f"On held-out (validation) pieces, a low threshold finds more of the notes Chopin played (recall) "
            f"but adds wrong ones (precision falls); a high one plays only sure notes and may fall silent. "
            f"This model's best F1 was at **{entry.threshold:.2f}**, the slider's default. "
            f"**Sampling** needs no threshold: each key is drawn from its probability.")


def show_help() -> None:
    with st.expander("What the controls do"):
        st.markdown("\n".join(f"- **{name.replace('_', ' ')}**: {text}" for name, text in HELP.items()))


def main() -> None:
    st.set_page_config(page_title="ChopinBot", page_icon="🎹", layout="wide")
    configure_logging()
    if os.environ.get(SERVE_ENV) == "1":
        tune_for_serving()
    init_session()
    st.title("ChopinBot")
    st.caption("A small LSTM continues a few bars of Chopin, or of your own MIDI, in Chopin's style.")
    try:
        models = list_models()
    except ChopinBotError as e:
        st.error(str(e))
        st.stop()
    if not models:
        st.error("No model is available. Train one with `chopinbot train`, or start the app with "
                 "`chopinbot app --model RUN_FOLDER`.")
        st.stop()
    try:
        entry, fields = sidebar_controls(models)
    except ChopinBotError as e:
        st.error(str(e))
        st.stop()
    wants_primer = st.session_state.get("seed_source") == "my MIDI file"
    if st.button("Generate", key="generate", type="primary", on_click=before_generate):
        generate(entry, fields, wants_primer)
    message = st.session_state.get("message")
    if message:
        getattr(st, message[0])(message[1])
    if st.session_state.get("result") is not None:
        show_result(st.session_state.result)
    else:
        st.info("Choose a seed and the settings on the left, then press **Generate**.")
    show_guide(entry)
    show_help()


main()
